//! The resolved configuration tree.

use std::fmt;
use std::sync::Arc;

use indexmap::IndexMap;

/// Keys of an object, in the order they were first written (pyhocon keeps an `OrderedDict`).
pub type Object = IndexMap<String, Value>;

/// Where a value was written: a file position, or a description of another source such as an
/// environment variable. Carried by every value so that typed getters can point at the culprit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    /// A file path, or a description such as `environment variable CLEARML_API_HOST`.
    pub source: Arc<str>,
    /// 1-based line; 0 when the source has no lines.
    pub line: u32,
    /// 1-based column (in characters); 0 when the source has no lines.
    pub col: u32,
}

impl Origin {
    /// An origin without a position, e.g. `environment variable X`.
    pub fn described(source: impl Into<Arc<str>>) -> Self {
        Origin {
            source: source.into(),
            line: 0,
            col: 0,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.source)
        } else {
            write!(f, "{}:{}:{}", self.source, self.line, self.col)
        }
    }
}

/// A number exactly as written: `11.0` and `11` stay distinguishable, as they are in pyhocon
/// (which keeps `int` and `float` apart). The lexeme is what string getters return.
#[derive(Clone, Debug)]
pub struct Number {
    text: String,
    kind: NumberKind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NumberKind {
    Int(i64),
    Float(f64),
}

impl Number {
    /// Parses a whole token as a HOCON number (`-1`, `+1`, `01`, `1.5`, `.5`, `1e3`), or `None`.
    pub fn parse(text: &str) -> Option<Number> {
        if !is_number_lexeme(text) {
            return None;
        }
        let is_int = !text.contains(['.', 'e', 'E']);
        let kind = if is_int {
            match text.parse::<i64>() {
                Ok(i) => NumberKind::Int(i),
                // Python's int is unbounded; past i64 we keep the value as a float but the lexeme
                // is still printed as written.
                Err(_) => NumberKind::Float(text.parse::<f64>().ok()?),
            }
        } else {
            NumberKind::Float(text.parse::<f64>().ok()?)
        };
        Some(Number {
            text: text.to_string(),
            kind,
        })
    }

    /// The number as it was written in the file.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value when it is an integer (`11`, `-3`, `01`), not a float (`11.0`, `1e3`).
    pub fn as_i64(&self) -> Option<i64> {
        match self.kind {
            NumberKind::Int(i) => Some(i),
            NumberKind::Float(_) => None,
        }
    }

    /// The value as a float, whatever its kind.
    pub fn as_f64(&self) -> f64 {
        match self.kind {
            NumberKind::Int(i) => i as f64,
            NumberKind::Float(f) => f,
        }
    }

    /// True when the number was written as a float (`11.0`, `.5`, `1e3`).
    pub fn is_float(&self) -> bool {
        matches!(self.kind, NumberKind::Float(_))
    }

    /// The number as JSON, keeping ints and floats apart (`11` vs `11.0`).
    pub fn to_json(&self) -> serde_json::Value {
        match self.kind {
            NumberKind::Int(i) => serde_json::Value::from(i),
            NumberKind::Float(f) => serde_json::Number::from_f64(f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(self.text.clone())),
        }
    }
}

impl PartialEq for Number {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

/// pyhocon's number pattern, applied to a whole token:
/// `[+-]?(\d*\.\d+|\d+(\.\d+)?)([eE][+-]?\d+)?`.
fn is_number_lexeme(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == frac_start {
            return false;
        }
    } else if int_digits == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return false;
        }
    }
    i == b.len()
}

/// What a value is.
#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Null,
    Bool(bool),
    Number(Number),
    String(String),
    List(Vec<Value>),
    Object(Object),
}

/// A resolved value with its origin. Equality compares the data only, not the origin.
#[derive(Clone, Debug)]
pub struct Value {
    pub kind: Kind,
    pub origin: Origin,
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind
    }
}

impl Value {
    pub fn new(kind: Kind, origin: Origin) -> Self {
        Value { kind, origin }
    }

    /// An empty object, the root of an empty file.
    pub fn empty_object(origin: Origin) -> Self {
        Value::new(Kind::Object(Object::new()), origin)
    }

    pub fn string(s: impl Into<String>, origin: Origin) -> Self {
        Value::new(Kind::String(s.into()), origin)
    }

    pub fn as_object(&self) -> Option<&Object> {
        match &self.kind {
            Kind::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_object_mut(&mut self) -> Option<&mut Object> {
        match &mut self.kind {
            Kind::Object(o) => Some(o),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match &self.kind {
            Kind::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self.kind, Kind::Null)
    }

    /// A short name of the kind, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "boolean",
            Kind::Number(n) if n.is_float() => "float",
            Kind::Number(_) => "integer",
            Kind::String(_) => "string",
            Kind::List(_) => "list",
            Kind::Object(_) => "object",
        }
    }

    /// The text a scalar stands for when it is used as a string (pyhocon's `get_string`):
    /// strings as they are, numbers as written, booleans as `true`/`false`. `None` for null,
    /// lists and objects.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.kind {
            Kind::String(s) => Some(s.clone()),
            Kind::Number(n) => Some(n.as_str().to_string()),
            Kind::Bool(b) => Some(b.to_string()),
            Kind::Null | Kind::List(_) | Kind::Object(_) => None,
        }
    }

    /// Looks a dotted path up (`agent.package_manager.type`, `a."b.c"`). An unparsable path or
    /// a path through a non-object finds nothing.
    pub fn get(&self, path: &str) -> Option<&Value> {
        let keys = crate::path::parse_path(path).ok()?;
        self.get_keys(&keys)
    }

    /// Looks a path up by its already split keys.
    pub fn get_keys<S: AsRef<str>>(&self, keys: &[S]) -> Option<&Value> {
        let mut cur = self;
        for k in keys {
            cur = cur.as_object()?.get(k.as_ref())?;
        }
        Some(cur)
    }

    /// Sets a value at a path of keys, creating (or replacing non-object values with) objects on
    /// the way. Objects at the target are replaced, not merged; use [`Value::merge`] to merge.
    pub fn set_keys<S: AsRef<str>>(&mut self, keys: &[S], value: Value) {
        let Some((last, parents)) = keys.split_last() else {
            *self = value;
            return;
        };
        let mut cur = self;
        for k in parents {
            if cur.as_object().is_none() {
                *cur = Value::empty_object(value.origin.clone());
            }
            let obj = match &mut cur.kind {
                Kind::Object(o) => o,
                _ => return,
            };
            cur = obj
                .entry(k.as_ref().to_string())
                .or_insert_with(|| Value::empty_object(value.origin.clone()));
        }
        if cur.as_object().is_none() {
            *cur = Value::empty_object(value.origin.clone());
        }
        if let Kind::Object(o) = &mut cur.kind {
            o.insert(last.as_ref().to_string(), value);
        }
    }

    /// Removes the value at a path; returns it when it was there.
    pub fn remove_keys<S: AsRef<str>>(&mut self, keys: &[S]) -> Option<Value> {
        let (last, parents) = keys.split_last()?;
        let mut cur = self;
        for k in parents {
            cur = cur.as_object_mut()?.get_mut(k.as_ref())?;
        }
        cur.as_object_mut()?.shift_remove(last.as_ref())
    }

    /// Merges `overlay` into `self` the way pyhocon's `ConfigTree.merge_configs` does (and the
    /// HOCON spec): where both sides are objects they merge key by key, anything else is replaced
    /// by the overlay. Used for duplicate keys and for layering config files.
    pub fn merge(&mut self, overlay: Value) {
        match (&mut self.kind, overlay.kind) {
            (Kind::Object(base), Kind::Object(over)) => {
                for (k, v) in over {
                    match base.get_mut(&k) {
                        Some(existing) => existing.merge(v),
                        None => {
                            base.insert(k, v);
                        }
                    }
                }
            }
            (_, kind) => {
                self.kind = kind;
                self.origin = overlay.origin;
            }
        }
    }

    /// Plain JSON (no origins); floats stay floats.
    pub fn to_json(&self) -> serde_json::Value {
        match &self.kind {
            Kind::Null => serde_json::Value::Null,
            Kind::Bool(b) => serde_json::Value::Bool(*b),
            Kind::Number(n) => n.to_json(),
            Kind::String(s) => serde_json::Value::String(s.clone()),
            Kind::List(l) => serde_json::Value::Array(l.iter().map(Value::to_json).collect()),
            Kind::Object(o) => {
                serde_json::Value::Object(o.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Builds a value from JSON; every node gets `origin`.
    pub fn from_json(json: &serde_json::Value, origin: &Origin) -> Value {
        let kind = match json {
            serde_json::Value::Null => Kind::Null,
            serde_json::Value::Bool(b) => Kind::Bool(*b),
            serde_json::Value::Number(n) => match Number::parse(&n.to_string()) {
                Some(num) => Kind::Number(num),
                None => Kind::String(n.to_string()),
            },
            serde_json::Value::String(s) => Kind::String(s.clone()),
            serde_json::Value::Array(a) => {
                Kind::List(a.iter().map(|v| Value::from_json(v, origin)).collect())
            }
            serde_json::Value::Object(o) => Kind::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), Value::from_json(v, origin)))
                    .collect(),
            ),
        };
        Value::new(kind, origin.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_lexemes_follow_pyhocon() {
        for ok in [
            "1",
            "-1",
            "+1",
            "01",
            "1.5",
            ".5",
            "1e3",
            "1E-2",
            "11.0",
            "-0.25e+10",
        ] {
            assert!(Number::parse(ok).is_some(), "{ok}");
        }
        for bad in [
            "", "1.", "1.0.0", "10GB", "e3", "1e", "+", ".", "0x10", "1_000", "1 2",
        ] {
            assert!(Number::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Number::parse("01").and_then(|n| n.as_i64()), Some(1));
        let f = Number::parse("11.0").expect("float");
        assert!(f.is_float());
        assert_eq!(f.as_str(), "11.0");
        assert_ne!(Number::parse("11"), Number::parse("11.0"));
    }

    #[test]
    fn merge_is_deep_for_objects_and_replacing_otherwise() {
        let o = Origin::default();
        let mut a = Value::from_json(&serde_json::json!({"x": {"a": 1, "b": [1]}, "y": 1}), &o);
        let b = Value::from_json(
            &serde_json::json!({"x": {"b": [2], "c": 3}, "y": {"z": 1}}),
            &o,
        );
        a.merge(b);
        assert_eq!(
            a.to_json(),
            serde_json::json!({"x": {"a": 1, "b": [2], "c": 3}, "y": {"z": 1}})
        );
    }
}
