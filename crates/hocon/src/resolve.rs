//! Substitution: turns the parsed tree (which may still hold `${...}`) into final values.
//!
//! Resolution is lazy and memoised in place. Walking the tree, a value with substitutions is
//! taken out and a `Resolving` marker left in its slot; each `${path}` is looked up in the tree
//! (resolving what it finds on the way), then the result goes back into the slot. A lookup that
//! lands on a marker is a self-reference (`path: ${path}":/more"`) and is answered from the value
//! that assignment overrode, which the resolver keeps on a stack of frames. When that is absent
//! too, the lookup falls back to the environment variable of the same name, as pyhocon does, and
//! only then is it an error (or, for `${?path}`, the assignment is dropped).

use crate::error::Error;
use crate::node::{Concat, Node, Piece, combine, merge};
use crate::value::{Kind, Object, Origin, Value};

/// Past this many nested resolutions the input is refused rather than risking the stack.
const MAX_DEPTH: usize = 256;

/// A way to read environment variables (the process environment, or a fixed map in tests).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

#[derive(Clone, Debug, PartialEq)]
enum Seg {
    Key(String),
    Index(usize),
}

enum PrevState {
    Unresolved(Option<Node>),
    InProgress,
    Done(Option<Value>),
}

struct Frame {
    /// The key path being resolved (`None` inside list elements, which no path can name).
    path: Option<Vec<String>>,
    prev: PrevState,
}

pub(crate) struct Resolver<'e> {
    root: Node,
    stack: Vec<Frame>,
    env: EnvLookup<'e>,
    depth: usize,
}

impl<'e> Resolver<'e> {
    pub(crate) fn new(root: Node, env: EnvLookup<'e>) -> Self {
        Resolver {
            root,
            stack: Vec::new(),
            env,
            depth: 0,
        }
    }

    /// Resolves everything and returns the final tree.
    pub(crate) fn run(mut self, origin: &Origin) -> Result<Value, Error> {
        Ok(self
            .finalize_at(&[])?
            .unwrap_or_else(|| Value::empty_object(origin.clone())))
    }

    fn slot_mut(&mut self, path: &[Seg]) -> Option<&mut Node> {
        let mut cur = &mut self.root;
        for seg in path {
            cur = match (cur, seg) {
                (Node::Obj(map, _), Seg::Key(k)) => map.get_mut(k)?,
                (Node::List(items, _), Seg::Index(i)) => items.get_mut(*i)?,
                _ => return None,
            };
        }
        Some(cur)
    }

    fn enter(&mut self, origin: Option<&Origin>) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(Error::at(
                origin.cloned().unwrap_or_default(),
                format!("substitutions nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    /// Resolves the node at `path` in place and returns a copy of its final value (`None` when
    /// an optional substitution removed it).
    fn finalize_at(&mut self, path: &[Seg]) -> Result<Option<Value>, Error> {
        let Some(node) = self.slot_mut(path) else {
            return Ok(None);
        };
        let origin = node.origin().cloned();
        match node {
            Node::Done(v) => return Ok(Some(v.clone())),
            Node::Removed => return Ok(None),
            Node::Resolving => {
                return Err(Error::at(
                    origin.unwrap_or_default(),
                    format!(
                        "substitution cycle: the value of {} depends on itself",
                        describe_path(path)
                    ),
                ));
            }
            _ => {}
        }
        self.enter(origin.as_ref())?;
        let result = self.finalize_node_at(path);
        self.depth -= 1;
        result
    }

    fn finalize_node_at(&mut self, path: &[Seg]) -> Result<Option<Value>, Error> {
        let Some(node) = self.slot_mut(path) else {
            return Ok(None);
        };
        match node {
            Node::Concat(_) => {
                let Node::Concat(c) = std::mem::replace(node, Node::Resolving) else {
                    return Ok(None);
                };
                let resolved = self.resolve_concat(path, c);
                let Some(slot) = self.slot_mut(path) else {
                    return Ok(None);
                };
                match resolved? {
                    Some(n) => {
                        *slot = n;
                        // The result may be an object whose own children still need work.
                        self.finalize_at(path)
                    }
                    None => {
                        *slot = Node::Removed;
                        Ok(None)
                    }
                }
            }
            Node::Obj(map, _) => {
                let keys: Vec<String> = map.keys().cloned().collect();
                for k in keys {
                    let mut child = path.to_vec();
                    child.push(Seg::Key(k));
                    self.finalize_at(&child)?;
                }
                let Some(slot) = self.slot_mut(path) else {
                    return Ok(None);
                };
                let Node::Obj(map, origin) = std::mem::replace(slot, Node::Removed) else {
                    return Ok(None);
                };
                let mut obj = Object::new();
                for (k, child) in map {
                    if let Node::Done(v) = child {
                        obj.insert(k, v);
                    }
                }
                let v = Value::new(Kind::Object(obj), origin);
                *slot = Node::Done(v.clone());
                Ok(Some(v))
            }
            Node::List(items, _) => {
                for i in 0..items.len() {
                    let mut child = path.to_vec();
                    child.push(Seg::Index(i));
                    self.finalize_at(&child)?;
                }
                let Some(slot) = self.slot_mut(path) else {
                    return Ok(None);
                };
                let Node::List(items, origin) = std::mem::replace(slot, Node::Removed) else {
                    return Ok(None);
                };
                let list: Vec<Value> = items
                    .into_iter()
                    .filter_map(|n| match n {
                        Node::Done(v) => Some(v),
                        _ => None,
                    })
                    .collect();
                let v = Value::new(Kind::List(list), origin);
                *slot = Node::Done(v.clone());
                Ok(Some(v))
            }
            Node::Done(v) => Ok(Some(v.clone())),
            Node::Removed | Node::Resolving => Ok(None),
        }
    }

    /// Resolves a node that is not in the tree (the earlier value a self-reference sees).
    fn finalize_detached(&mut self, path: &[Seg], node: Node) -> Result<Option<Value>, Error> {
        self.enter(node.origin())?;
        let result = match node {
            Node::Done(v) => Ok(Some(v)),
            Node::Removed | Node::Resolving => Ok(None),
            Node::Concat(c) => match self.resolve_concat(path, c)? {
                Some(n) => self.finalize_detached(path, n),
                None => Ok(None),
            },
            Node::Obj(map, origin) => {
                let mut obj = Object::new();
                for (k, child) in map {
                    let mut p = path.to_vec();
                    p.push(Seg::Key(k.clone()));
                    if let Some(v) = self.finalize_detached(&p, child)? {
                        obj.insert(k, v);
                    }
                }
                Ok(Some(Value::new(Kind::Object(obj), origin)))
            }
            Node::List(items, origin) => {
                let mut list = Vec::new();
                for (i, child) in items.into_iter().enumerate() {
                    let mut p = path.to_vec();
                    p.push(Seg::Index(i));
                    if let Some(v) = self.finalize_detached(&p, child)? {
                        list.push(v);
                    }
                }
                Ok(Some(Value::new(Kind::List(list), origin)))
            }
        };
        self.depth -= 1;
        result
    }

    /// The value the assignment of frame `idx` overrode, resolved (once).
    fn frame_prev(&mut self, idx: usize) -> Result<Option<Value>, Error> {
        let state = std::mem::replace(&mut self.stack[idx].prev, PrevState::InProgress);
        let value = match state {
            PrevState::Done(v) => v,
            PrevState::InProgress => None,
            PrevState::Unresolved(None) => None,
            PrevState::Unresolved(Some(node)) => {
                let path: Vec<Seg> = self.stack[idx]
                    .path
                    .iter()
                    .flatten()
                    .cloned()
                    .map(Seg::Key)
                    .collect();
                self.finalize_detached(&path, node)?
            }
        };
        self.stack[idx].prev = PrevState::Done(value.clone());
        Ok(value)
    }

    fn resolve_concat(&mut self, path: &[Seg], mut c: Concat) -> Result<Option<Node>, Error> {
        let key_path: Option<Vec<String>> = path
            .iter()
            .map(|s| match s {
                Seg::Key(k) => Some(k.clone()),
                Seg::Index(_) => None,
            })
            .collect();
        self.stack.push(Frame {
            path: key_path,
            prev: PrevState::Unresolved(c.prev.take().map(|b| *b)),
        });
        let idx = self.stack.len() - 1;
        let result = self.resolve_parts(c, idx);
        self.stack.truncate(idx);
        result
    }

    fn resolve_parts(&mut self, c: Concat, frame: usize) -> Result<Option<Node>, Error> {
        let mut pieces = Vec::with_capacity(c.parts.len());
        for part in c.parts {
            match part.piece {
                Piece::Subst(s) => match self.lookup(&s.keys, &s.raw, &s.origin)? {
                    Some(v) => pieces.push((part.ws_before, Piece::Node(Node::Done(v)))),
                    None if s.optional => {}
                    None => {
                        return Err(Error::at(
                            s.origin.clone(),
                            format!(
                                "cannot resolve ${{{}}}: no such setting (or it depends on itself), and no environment variable {} is set",
                                s.raw, s.raw
                            ),
                        ));
                    }
                },
                piece => pieces.push((part.ws_before, piece)),
            }
        }
        let result = combine(pieces, &c.origin)?;
        let is_object = |n: &Node| {
            matches!(n, Node::Obj(..))
                || matches!(
                    n,
                    Node::Done(Value {
                        kind: Kind::Object(_),
                        ..
                    })
                )
        };
        match result {
            // `${?X}` found nothing: the assignment never happened, the earlier value stands.
            None => Ok(self.frame_prev(frame)?.map(Node::Done)),
            // An object merges onto an earlier object, as a plain duplicate key would.
            Some(n) if is_object(&n) => match self.frame_prev(frame)? {
                Some(
                    prev @ Value {
                        kind: Kind::Object(_),
                        ..
                    },
                ) => {
                    let n = match n {
                        Node::Done(v) => Node::from_value(v),
                        n => n,
                    };
                    Ok(Some(merge(Node::from_value(prev), n)))
                }
                _ => Ok(Some(n)),
            },
            Some(n) => Ok(Some(n)),
        }
    }

    /// The value of `${keys}`: from the tree, from an overridden value for self-references, or
    /// from the environment.
    fn lookup(
        &mut self,
        keys: &[String],
        raw: &str,
        origin: &Origin,
    ) -> Result<Option<Value>, Error> {
        self.enter(Some(origin))?;
        let found = self.lookup_tree(keys);
        self.depth -= 1;
        if let Some(v) = found? {
            return Ok(Some(v));
        }
        Ok((self.env)(raw)
            .map(|s| Value::string(s, Origin::described(format!("environment variable {raw}")))))
    }

    fn lookup_tree(&mut self, keys: &[String]) -> Result<Option<Value>, Error> {
        for i in 1..=keys.len() {
            let prefix = &keys[..i];
            let rest = &keys[i..];
            if let Some(idx) = self
                .stack
                .iter()
                .rposition(|f| f.path.as_deref() == Some(prefix))
            {
                let prev = self.frame_prev(idx)?;
                return Ok(prev.and_then(|v| v.get_keys(rest).cloned()));
            }
            let segs: Vec<Seg> = prefix.iter().cloned().map(Seg::Key).collect();
            let done_inside = match self.slot_mut(&segs) {
                None | Some(Node::Removed) | Some(Node::Resolving) => return Ok(None),
                Some(Node::Done(v)) => return Ok(v.get_keys(rest).cloned()),
                Some(Node::Obj(..)) => rest.is_empty(),
                Some(Node::List(..)) | Some(Node::Concat(_)) => true,
            };
            if done_inside {
                let v = self.finalize_at(&segs)?;
                return Ok(v.and_then(|v| v.get_keys(rest).cloned()));
            }
        }
        Ok(None)
    }
}

fn describe_path(path: &[Seg]) -> String {
    if path.is_empty() {
        return "the root".to_string();
    }
    let keys: Vec<String> = path
        .iter()
        .map(|s| match s {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => format!("[{i}]"),
        })
        .collect();
    crate::path::render_path(&keys)
}
