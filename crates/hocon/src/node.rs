//! The unresolved tree the parser builds: values that still hold substitutions, and the merge
//! rules for duplicate keys that apply before substitutions are resolved.

use indexmap::IndexMap;

use crate::error::Error;
use crate::value::{Kind, Origin, Value};

pub(crate) type NodeMap = IndexMap<String, Node>;

/// A value before substitution.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    /// Final: a scalar, or anything already resolved.
    Done(Value),
    Obj(NodeMap, Origin),
    List(Vec<Node>, Origin),
    /// A value built from pieces of which at least one is a substitution.
    Concat(Concat),
    /// Placeholder while this node's own concatenation is being resolved; a lookup that lands
    /// here is a self-reference and is answered from the value it overrode (see `resolve.rs`).
    Resolving,
    /// An optional substitution that found nothing and had no earlier value: the key is gone.
    Removed,
}

#[derive(Clone, Debug)]
pub(crate) struct Concat {
    pub parts: Vec<Part>,
    /// The value this assignment overrode: what a self-reference (`path: ${path}":/x"`) sees, and
    /// what an object result merges onto.
    pub prev: Option<Box<Node>>,
    pub origin: Origin,
}

#[derive(Clone, Debug)]
pub(crate) struct Part {
    /// Spaces and tabs written before this piece; kept only between string pieces.
    pub ws_before: String,
    pub piece: Piece,
}

#[derive(Clone, Debug)]
pub(crate) enum Piece {
    /// A scalar and the text it contributes to a string concatenation.
    Scalar(Value, String),
    /// An object or list literal (may contain unresolved children).
    Node(Node),
    Subst(Subst),
}

#[derive(Clone, Debug)]
pub(crate) struct Subst {
    pub keys: Vec<String>,
    /// The text between `${` (or `${?`) and `}`: the environment variable name used as fallback.
    pub raw: String,
    pub optional: bool,
    pub origin: Origin,
}

impl Node {
    pub(crate) fn origin(&self) -> Option<&Origin> {
        match self {
            Node::Done(v) => Some(&v.origin),
            Node::Obj(_, o) | Node::List(_, o) => Some(o),
            Node::Concat(c) => Some(&c.origin),
            Node::Resolving | Node::Removed => None,
        }
    }

    /// An object node from a resolved object value, so it can take part in node merges.
    pub(crate) fn from_value(v: Value) -> Node {
        match v.kind {
            Kind::Object(o) => Node::Obj(
                o.into_iter()
                    .map(|(k, v)| (k, Node::from_value(v)))
                    .collect(),
                v.origin,
            ),
            kind => Node::Done(Value::new(kind, v.origin)),
        }
    }
}

/// Assigns `value` at `keys` inside `map`, following pyhocon's rules for repeated keys: objects
/// merge, a value with substitutions remembers what it overrode, anything else replaces.
pub(crate) fn put(map: &mut NodeMap, keys: &[String], value: Node) {
    let Some((first, rest)) = keys.split_first() else {
        return;
    };
    if rest.is_empty() {
        match map.get_mut(first) {
            // replacing in place keeps the key's first position, as an OrderedDict does
            Some(slot) => {
                let existing = std::mem::replace(slot, Node::Removed);
                *slot = merge(existing, value);
            }
            None => {
                map.insert(first.clone(), value);
            }
        }
        return;
    }
    // `a.b.c = v` is `a { b { c = v } }`: merge an object holding the rest of the path.
    let origin = value.origin().cloned().unwrap_or_default();
    let mut inner = NodeMap::new();
    put(&mut inner, rest, value);
    put(map, std::slice::from_ref(first), Node::Obj(inner, origin));
}

/// The value of a key written twice: `existing` then `new`.
pub(crate) fn merge(existing: Node, new: Node) -> Node {
    match (existing, new) {
        (Node::Obj(mut base, origin), Node::Obj(over, _)) => {
            for (k, v) in over {
                put(&mut base, std::slice::from_ref(&k), v);
            }
            Node::Obj(base, origin)
        }
        (existing, Node::Concat(mut c)) => {
            c.prev = Some(Box::new(match c.prev.take() {
                // a concat that already carries an earlier value (from a merge) keeps the chain
                Some(p) => merge(existing, *p),
                None => existing,
            }));
            Node::Concat(c)
        }
        (existing @ Node::Concat(_), Node::Obj(over, origin)) => Node::Concat(Concat {
            parts: vec![Part {
                ws_before: String::new(),
                piece: Piece::Node(Node::Obj(over, origin.clone())),
            }],
            prev: Some(Box::new(existing)),
            origin,
        }),
        (_, new) => new,
    }
}

/// Combines the pieces of a value that has no substitution (or whose substitutions are already
/// resolved) into one node: scalars join into a string (one scalar keeps its type), objects
/// merge, lists append. Mixing kinds is an error, as in pyhocon.
pub(crate) fn combine(
    pieces: Vec<(String, Piece)>,
    origin: &Origin,
) -> Result<Option<Node>, Error> {
    #[derive(PartialEq, Clone, Copy)]
    enum K {
        Scalar,
        Obj,
        List,
    }
    let kind_of = |p: &Piece| match p {
        Piece::Scalar(..) => Some(K::Scalar),
        Piece::Node(Node::Obj(..)) => Some(K::Obj),
        Piece::Node(Node::List(..)) => Some(K::List),
        Piece::Node(Node::Done(v)) => Some(match v.kind {
            Kind::Object(_) => K::Obj,
            Kind::List(_) => K::List,
            _ => K::Scalar,
        }),
        _ => None,
    };
    let Some(first) = pieces.first() else {
        return Ok(None);
    };
    let Some(k0) = kind_of(&first.1) else {
        return Err(Error::at(origin.clone(), "internal: unresolved piece"));
    };
    for (_, p) in &pieces[1..] {
        let k = kind_of(p);
        if k != Some(k0) {
            let name = |k: Option<K>| match k {
                Some(K::Scalar) => "a string",
                Some(K::Obj) => "an object",
                Some(K::List) => "a list",
                None => "an unresolved value",
            };
            return Err(Error::at(
                origin.clone(),
                format!(
                    "cannot concatenate {} with {} in one value",
                    name(Some(k0)),
                    name(k)
                ),
            ));
        }
    }
    match k0 {
        K::Scalar => {
            if pieces.len() == 1 {
                let Some((_, Piece::Scalar(v, _) | Piece::Node(Node::Done(v)))) =
                    pieces.into_iter().next()
                else {
                    return Err(Error::at(origin.clone(), "internal: bad scalar"));
                };
                return Ok(Some(Node::Done(v)));
            }
            let mut s = String::new();
            for (i, (ws, p)) in pieces.into_iter().enumerate() {
                if i > 0 {
                    s.push_str(&ws);
                }
                match p {
                    Piece::Scalar(_, text) => s.push_str(&text),
                    Piece::Node(Node::Done(v)) => s.push_str(&v.scalar_text().unwrap_or_default()),
                    _ => {}
                }
            }
            Ok(Some(Node::Done(Value::string(s, origin.clone()))))
        }
        K::Obj => {
            let mut acc: Option<Node> = None;
            for (_, p) in pieces {
                let n = match p {
                    Piece::Node(Node::Done(v)) => Node::from_value(v),
                    Piece::Node(n) => n,
                    _ => continue,
                };
                acc = Some(match acc {
                    None => n,
                    Some(a) => merge(a, n),
                });
            }
            Ok(acc)
        }
        K::List => {
            let mut items = Vec::new();
            for (_, p) in pieces {
                match p {
                    Piece::Node(Node::List(l, _)) => items.extend(l),
                    Piece::Node(Node::Done(v)) => {
                        if let Kind::List(l) = v.kind {
                            items.extend(l.into_iter().map(Node::Done));
                        }
                    }
                    _ => {}
                }
            }
            Ok(Some(Node::List(items, origin.clone())))
        }
    }
}
