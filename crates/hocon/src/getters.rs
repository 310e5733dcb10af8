//! Typed reads with the conversions the Python agent applies, and errors that name the key and
//! where its value was written.

use std::path::PathBuf;

use crate::value::{Kind, Origin, Value};

/// A value of the wrong type, or an unreadable path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}: {key}: {message}")]
pub struct GetError {
    /// The dotted key that was asked for.
    pub key: String,
    /// Where the offending value was written.
    pub origin: Origin,
    pub message: String,
}

/// Booleans as the Python agent reads them from config and environment: `true/yes/y/t/on/1`
/// and `false/no/n/f/off/0`, any case. Anything else is `None`.
pub fn parse_bool_str(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "t" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "f" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// A size string as clearml's `parse_size` (humanfriendly) reads it: `10GB` is 10·10⁹ bytes,
/// `512MiB` is 512·2²⁰, `1.5 KB` is 1500, a bare number is bytes. Case does not matter.
pub fn parse_size(s: &str) -> Option<f64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+' || c == 'e'))
        .unwrap_or(t.len());
    // `e` may belong to an exponent or start a unit like `EB`; settle it by trying both.
    let (num, unit) = match t[..split].parse::<f64>() {
        Ok(n) => (n, t[split..].trim()),
        Err(_) => {
            let digits_end = t
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
                .unwrap_or(t.len());
            (t[..digits_end].parse::<f64>().ok()?, t[digits_end..].trim())
        }
    };
    if !num.is_finite() {
        return None;
    }
    let unit = unit.to_ascii_lowercase();
    let factor: f64 = match unit.as_str() {
        "" | "b" | "byte" | "bytes" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "p" | "pb" => 1e15,
        "e" | "eb" => 1e18,
        "kib" => 1024.0,
        "mib" => 1024f64.powi(2),
        "gib" => 1024f64.powi(3),
        "tib" => 1024f64.powi(4),
        "pib" => 1024f64.powi(5),
        "eib" => 1024f64.powi(6),
        _ => return None,
    };
    Some(num * factor)
}

/// `~` and `$VAR`/`${VAR}` expansion, like Python's `os.path.expandvars(os.path.expanduser(p))`:
/// unknown variables are left as written.
pub(crate) fn expand_path(s: &str, env: &dyn Fn(&str) -> Option<String>) -> String {
    let home = env("HOME");
    let s = match (s.strip_prefix('~'), home) {
        (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
            format!("{}{rest}", home.trim_end_matches('/'))
        }
        _ => s.to_string(),
    };
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' {
            let (name, end) = if chars.get(i + 1) == Some(&'{') {
                match chars[i + 2..].iter().position(|&c| c == '}') {
                    Some(p) => (
                        chars[i + 2..i + 2 + p].iter().collect::<String>(),
                        i + 3 + p,
                    ),
                    None => (String::new(), i),
                }
            } else {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                (chars[i + 1..j].iter().collect::<String>(), j)
            };
            if let Some(v) = (!name.is_empty()).then(|| env(&name)).flatten() {
                out.push_str(&v);
                i = end;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

impl Value {
    fn type_error(&self, key: &str, expected: &str) -> GetError {
        let found = match &self.kind {
            Kind::String(s) => format!("the string {s:?}"),
            Kind::Number(n) => format!("the number {}", n.as_str()),
            Kind::Bool(b) => format!("the boolean {b}"),
            _ => format!("{} {}", article(self.type_name()), self.type_name()),
        };
        GetError {
            key: key.to_string(),
            origin: self.origin.clone(),
            message: format!("expected {expected}, found {found}"),
        }
    }

    /// The value at `key` unless it is missing or null.
    fn present(&self, key: &str) -> Option<&Value> {
        self.get(key).filter(|v| !v.is_null())
    }

    /// A string; numbers and booleans give their text. `None` when missing or null.
    pub fn get_str(&self, key: &str) -> Result<Option<String>, GetError> {
        match self.present(key) {
            None => Ok(None),
            Some(v) => v
                .scalar_text()
                .map(Some)
                .ok_or_else(|| v.type_error(key, "a string")),
        }
    }

    /// A boolean; also the strings and numbers the Python agent accepts (see [`parse_bool_str`]).
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match &v.kind {
            Kind::Bool(b) => Some(*b),
            Kind::String(s) => parse_bool_str(s),
            Kind::Number(n) => match n.as_i64() {
                Some(1) => Some(true),
                Some(0) => Some(false),
                _ => None,
            },
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| v.type_error(key, "a boolean (true/false, yes/no, on/off, 1/0)"))
    }

    /// An integer; integer-valued strings are accepted.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match &v.kind {
            Kind::Number(n) => n.as_i64().or_else(|| {
                let f = n.as_f64();
                (f.fract() == 0.0 && f.abs() < 9.0e15).then_some(f as i64)
            }),
            Kind::String(s) => s.trim().parse::<i64>().ok(),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| v.type_error(key, "an integer"))
    }

    /// A number; numeric strings are accepted.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match &v.kind {
            Kind::Number(n) => Some(n.as_f64()),
            Kind::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| v.type_error(key, "a number"))
    }

    /// A byte count: a number, or a size string such as `10GB` or `512MiB` (see [`parse_size`]).
    /// Negative numbers (`-1`, "no limit") are kept.
    pub fn get_bytes(&self, key: &str) -> Result<Option<i64>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match &v.kind {
            Kind::Number(n) => Some(n.as_f64()),
            Kind::String(s) => parse_size(s),
            _ => None,
        };
        parsed
            .filter(|f| f.abs() < 9.2e18)
            .map(|f| Some(f.round() as i64))
            .ok_or_else(|| v.type_error(key, "a size (a number of bytes, or e.g. 10GB, 512MiB)"))
    }

    /// A percentage: `5%` or a plain number, as a number of percent (`5%` is `5.0`).
    pub fn get_percent(&self, key: &str) -> Result<Option<f64>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match &v.kind {
            Kind::Number(n) => Some(n.as_f64()),
            Kind::String(s) => {
                let t = s.trim();
                t.strip_suffix('%')
                    .unwrap_or(t)
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite())
            }
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| v.type_error(key, "a percentage (e.g. 5%)"))
    }

    /// A list of strings. A single string counts as a one-item list (so
    /// `extra_index_url: "https://..."` works too); items must be scalars.
    pub fn get_str_list(&self, key: &str) -> Result<Option<Vec<String>>, GetError> {
        let Some(v) = self.present(key) else {
            return Ok(None);
        };
        match &v.kind {
            Kind::List(items) => items
                .iter()
                .filter(|i| !i.is_null())
                .map(|i| {
                    i.scalar_text()
                        .ok_or_else(|| i.type_error(key, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Kind::String(s) => Ok(Some(vec![s.clone()])),
            _ => Err(v.type_error(key, "a list of strings")),
        }
    }

    /// A path with `~` and `$VAR` expanded against the process environment.
    pub fn get_path(&self, key: &str) -> Result<Option<PathBuf>, GetError> {
        self.get_path_with(key, &|name| std::env::var(name).ok())
    }

    /// [`Value::get_path`] with a chosen environment (tests).
    pub fn get_path_with(
        &self,
        key: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<PathBuf>, GetError> {
        Ok(self
            .get_str(key)?
            .filter(|s| !s.is_empty())
            .map(|s| PathBuf::from(expand_path(&s, env))))
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> Value {
        crate::parse_str(text).expect("parses")
    }

    #[test]
    fn booleans_accept_what_the_python_agent_accepts() {
        let c = conf("a: yes\nb: Off\nc: 1\nd: True\ne: maybe\nf: 2\ng: null");
        assert_eq!(c.get_bool("a").unwrap(), Some(true));
        assert_eq!(c.get_bool("b").unwrap(), Some(false));
        assert_eq!(c.get_bool("c").unwrap(), Some(true));
        assert_eq!(c.get_bool("d").unwrap(), Some(true));
        assert_eq!(c.get_bool("g").unwrap(), None);
        assert_eq!(c.get_bool("missing").unwrap(), None);
        let e = c.get_bool("e").unwrap_err();
        assert_eq!(e.key, "e");
        assert_eq!((e.origin.line, e.origin.col), (5, 4));
        assert!(e.to_string().contains("\"maybe\""), "{e}");
        assert!(c.get_bool("f").is_err());
    }

    #[test]
    fn sizes_and_percentages() {
        let c = conf("a: 10GB\nb: 512MiB\nc: -1\nd: 5%\ne: 1.5 KB\nf: lots\ng: 100");
        assert_eq!(c.get_bytes("a").unwrap(), Some(10_000_000_000));
        assert_eq!(c.get_bytes("b").unwrap(), Some(512 * 1024 * 1024));
        assert_eq!(c.get_bytes("c").unwrap(), Some(-1));
        assert_eq!(c.get_bytes("e").unwrap(), Some(1500));
        assert_eq!(c.get_bytes("g").unwrap(), Some(100));
        assert!(c.get_bytes("f").is_err());
        assert_eq!(c.get_percent("d").unwrap(), Some(5.0));
        assert!(c.get_percent("f").is_err());
    }

    #[test]
    fn strings_keep_number_lexemes() {
        let c = conf("cuda_version: 11.0\nn: 7\nl: [a, 1]");
        assert_eq!(c.get_str("cuda_version").unwrap().as_deref(), Some("11.0"));
        assert_eq!(c.get_i64("n").unwrap(), Some(7));
        assert_eq!(c.get_f64("cuda_version").unwrap(), Some(11.0));
        assert!(c.get_str("l").is_err());
        assert_eq!(
            c.get_str_list("l").unwrap(),
            Some(vec!["a".to_string(), "1".to_string()])
        );
    }

    #[test]
    fn paths_expand_home_and_variables() {
        let env = |n: &str| match n {
            "HOME" => Some("/home/u".to_string()),
            "X" => Some("xx".to_string()),
            _ => None,
        };
        let c = conf("a: ~/.clearml/venvs\nb: \"$X/${X}/$NOPE\"\nc: \"~user/x\"");
        assert_eq!(
            c.get_path_with("a", &env).unwrap(),
            Some(PathBuf::from("/home/u/.clearml/venvs"))
        );
        assert_eq!(
            c.get_path_with("b", &env).unwrap(),
            Some(PathBuf::from("xx/xx/$NOPE"))
        );
        assert_eq!(
            c.get_path_with("c", &env).unwrap(),
            Some(PathBuf::from("~user/x"))
        );
    }
}
