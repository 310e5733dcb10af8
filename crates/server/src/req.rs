//! Reading request bodies: typed field access that answers a wrong type or a missing field
//! with the real server's 400 errors instead of failing later.

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::store::Doc;

/// The JSON body of a call (query-string arguments merged in).
pub struct Req {
    pub body: Map<String, Value>,
    /// `json-lines` bodies (events.add_batch): one object per line.
    pub lines: Option<Vec<Map<String, Value>>>,
    /// json-lines items that could not be read, as `(line index, message)`: `events.add_batch`
    /// stores the good lines and reports these; other endpoints refuse the call.
    pub bad_lines: Vec<(usize, String)>,
    /// Who is calling (`None` for the endpoints that need no token).
    pub caller: Option<crate::auth::Caller>,
    /// The `X-ClearML-Worker` header.
    pub worker_header: Option<String>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn wrong(field: &str, expected: &str, v: &Value) -> ApiError {
    ApiError::validation(format!(
        "field {field} must be {expected}, got {}",
        type_name(v)
    ))
}

impl Req {
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.body.get(field).filter(|v| !v.is_null())
    }

    pub fn str(&self, field: &str) -> Result<&str, ApiError> {
        match self.get(field) {
            None => Err(ApiError::missing_field(field)),
            Some(Value::String(s)) if !s.is_empty() => Ok(s),
            Some(Value::String(_)) => Err(ApiError::missing_field(field)),
            Some(v) => Err(wrong(field, "a string", v)),
        }
    }

    pub fn opt_str(&self, field: &str) -> Result<Option<&str>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(wrong(field, "a string", v)),
        }
    }

    pub fn bool_or(&self, field: &str, default: bool) -> Result<bool, ApiError> {
        match self.get(field) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(Value::String(s)) if s == "true" => Ok(true),
            Some(Value::String(s)) if s == "false" => Ok(false),
            Some(v) => Err(wrong(field, "a boolean", v)),
        }
    }

    pub fn i64_opt(&self, field: &str) -> Result<Option<i64>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Some)
                .ok_or_else(|| wrong(field, "an integer", &Value::Number(n.clone()))),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| wrong(field, "an integer", &Value::String(s.clone()))),
            Some(v) => Err(wrong(field, "an integer", v)),
        }
    }

    /// A list of strings; a single string counts as a one-item list.
    pub fn str_list(&self, field: &str) -> Result<Option<Vec<String>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(wrong(field, "a list of strings", other)),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(v) => Err(wrong(field, "a list of strings", v)),
        }
    }

    pub fn object(&self, field: &str) -> Result<Option<&Map<String, Value>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(v) => Err(wrong(field, "an object", v)),
        }
    }

    pub fn array(&self, field: &str) -> Result<Option<&Vec<Value>>, ApiError> {
        match self.get(field) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(wrong(field, "a list", v)),
        }
    }
}

/// Current time as the server writes it: ISO-8601 UTC with an offset.
pub fn now_iso() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// A new id in the real server's format: 32 lowercase hex characters.
pub fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Reads a dotted path (`script.requirements`) in a document.
pub fn get_path<'a>(doc: &'a Doc, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get(first)?;
    for p in parts {
        cur = cur.as_object()?.get(p)?;
    }
    Some(cur)
}

/// Writes a dotted path, creating objects on the way.
pub fn set_path(doc: &mut Doc, path: &str, value: Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else {
        return;
    };
    let mut cur = doc;
    for p in parts {
        let entry = cur
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            return;
        };
        cur = next;
    }
    cur.insert(last.to_string(), value);
}

/// The strings of a list field of a document (`tags`, `system_tags`); other items are skipped,
/// a missing or non-list field is empty.
pub fn doc_strings(doc: &Doc, key: &str) -> Vec<String> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `only_fields` projection: see [`crate::query::project`].
pub fn project(doc: &Doc, only_fields: Option<&[String]>) -> Doc {
    crate::query::project(doc, only_fields)
}

/// A `name` (or `comment`, worker `id`) filter: a Python-style `re.search` with the `regex`
/// crate (patterns the clients send are simple: `^name$`, escaped names), compiled once per
/// request, not once per document. An invalid pattern is matched literally.
pub enum NameFilter {
    Regex(regex::Regex),
    Literal(String),
}

impl NameFilter {
    pub fn new(pattern: &str) -> NameFilter {
        match regex::Regex::new(pattern) {
            Ok(re) => NameFilter::Regex(re),
            Err(_) => NameFilter::Literal(pattern.to_string()),
        }
    }

    pub fn is_match(&self, text: &str) -> bool {
        match self {
            NameFilter::Regex(re) => re.is_match(text),
            NameFilter::Literal(p) => text.contains(p.as_str()),
        }
    }
}

/// Python's `urllib.parse.unquote_plus`: `+` is a space, `%XX` a byte, bad escapes stay as they
/// are, and invalid UTF-8 becomes U+FFFD. Query strings and files-server paths both go through it.
pub fn unquote_plus(s: &str) -> String {
    // The workspace's one `%XX` decoder.
    clearml_percent::decode_form(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unquote_plus_like_python() {
        assert_eq!(unquote_plus("a+b%20c%2Fd"), "a b c/d");
        assert_eq!(unquote_plus("100%"), "100%");
        assert_eq!(unquote_plus("%zz%4"), "%zz%4");
        assert_eq!(unquote_plus("%D0%BF"), "п");
        assert_eq!(unquote_plus("%+1%41"), "% 1A");
    }
}
