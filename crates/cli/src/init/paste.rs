//! The pasted credentials block: knowing when it is complete, reading it, and showing it
//! back with the secret hidden.
//!
//! The web app's "Copy to clipboard" gives an `api { ... credentials { ... } }` block. Users
//! also paste it squeezed onto one line, as JSON, or with Windows line ends, and older web apps
//! gave a top-level `credentials` block plus `host`. All of these are HOCON, so the text is
//! parsed with our HOCON parser (substitutions are not looked up in the environment).

use clearml_hocon::{Options, Value};

/// What a paste gave; any part may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pasted {
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub web: Option<String>,
    pub api: Option<String>,
    pub files: Option<String>,
}

/// Follows the braces of the lines read so far, to tell when a block is complete.
#[derive(Debug, Default)]
pub struct BlockTracker {
    depth: i64,
    opened: bool,
}

impl BlockTracker {
    pub fn feed(&mut self, line: &str) {
        for c in code_chars(line) {
            match c {
                '{' => {
                    self.depth += 1;
                    self.opened = true;
                }
                '}' => self.depth -= 1,
                _ => {}
            }
        }
    }

    /// Inside an unfinished block: blank lines there are not the end of the paste.
    pub fn inside(&self) -> bool {
        self.depth > 0
    }

    /// A block was opened and is closed again.
    pub fn complete(&self) -> bool {
        self.opened && self.depth <= 0
    }
}

/// The characters of a HOCON line outside quoted strings and comments. `//` starts a comment
/// only at the start or after a space: in `https://host` it is part of the value, as pyhocon
/// reads it.
fn code_chars(line: &str) -> Vec<char> {
    let mut out = Vec::new();
    let mut in_str = false;
    let mut escaped = false;
    let mut prev = ' ';
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if in_str {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '#' || (c == '/' && chars.peek() == Some(&'/') && prev.is_whitespace()) {
            break;
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

/// Reads the pasted text. `Err` carries the parser's reason.
pub fn parse(text: &str) -> Result<Pasted, String> {
    let value = Options::with_env(|_| None)
        .parse_str(text, "the pasted configuration", None)
        .map_err(|e| e.to_string())?;
    let api = value.get_keys(&["api"]).filter(|v| v.as_object().is_some());
    // The current block nests everything under `api`; older web apps put it at the top.
    let field = |names: &[&str]| -> Option<String> {
        let scopes = api.into_iter().chain(std::iter::once(&value));
        for scope in scopes {
            for name in names {
                if let Some(s) = scope.get_keys(&[*name]).and_then(text_of) {
                    return Some(s);
                }
            }
        }
        None
    };
    let credentials = api
        .and_then(|a| a.get_keys(&["credentials"]))
        .or_else(|| value.get_keys(&["credentials"]));
    let key = |name: &str| {
        credentials
            .and_then(|c| c.get_keys(&[name]))
            .and_then(text_of)
    };
    Ok(Pasted {
        access_key: key("access_key"),
        secret_key: key("secret_key"),
        web: field(&["web_server"]),
        api: field(&["api_server", "host"]),
        files: field(&["files_server"]),
    })
}

fn text_of(v: &Value) -> Option<String> {
    v.scalar_text()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The line with the value of every `secret...` key replaced by stars, for showing a paste
/// back on the screen.
pub fn mask_secrets(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let lower: Vec<char> = line.to_lowercase().chars().collect();
    // Lower-casing can change the length for a few scripts; then mask the whole line.
    if lower.len() != chars.len() {
        return if line.to_lowercase().contains("secret") {
            "*".repeat(8)
        } else {
            line.to_string()
        };
    }
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if lower[i..].starts_with(&['s', 'e', 'c', 'r', 'e', 't'])
            && let Some((value_start, value_end)) = secret_value_span(&chars, i + 6)
        {
            out.extend(&chars[i..value_start]);
            let quoted = chars[value_start] == '"';
            if quoted {
                out.push('"');
            }
            out.push_str("********");
            if quoted && value_end > value_start + 1 && chars[value_end - 1] == '"' {
                out.push('"');
            }
            i = value_end;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// After the word `secret` at `at`: the rest of the key name, an optional closing quote, `:`
/// or `=` (or the start of an object/value), then the value. Returns the value's span.
fn secret_value_span(chars: &[char], mut at: usize) -> Option<(usize, usize)> {
    while at < chars.len() && (chars[at].is_alphanumeric() || chars[at] == '_') {
        at += 1;
    }
    if chars.get(at) == Some(&'"') {
        at += 1;
    }
    while chars.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    match chars.get(at) {
        Some(':') | Some('=') => at += 1,
        _ => return None,
    }
    while chars.get(at).is_some_and(|c| c.is_whitespace()) {
        at += 1;
    }
    let start = at;
    if chars.get(at) == Some(&'"') {
        at += 1;
        let mut escaped = false;
        while at < chars.len() {
            let c = chars[at];
            at += 1;
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                break;
            }
        }
    } else {
        while at < chars.len()
            && !matches!(chars[at], ',' | '}' | '#')
            && !chars[at].is_whitespace()
        {
            at += 1;
        }
    }
    (at > start).then_some((start, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BLOCK: &str = r#"api {
  web_server: https://app.clear.ml
  api_server: https://api.clear.ml
  files_server: https://files.clear.ml
  credentials {
    "access_key" = "AK1234"
    "secret_key" = "S3cr3t/with+chars"
  }
}
"#;

    fn full() -> Pasted {
        Pasted {
            access_key: Some("AK1234".into()),
            secret_key: Some("S3cr3t/with+chars".into()),
            web: Some("https://app.clear.ml".into()),
            api: Some("https://api.clear.ml".into()),
            files: Some("https://files.clear.ml".into()),
        }
    }

    fn lines_until_complete(text: &str) -> usize {
        let mut t = BlockTracker::default();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() && !t.inside() {
                return n;
            }
            t.feed(line);
            if t.complete() {
                return n + 1;
            }
        }
        usize::MAX
    }

    #[test]
    fn the_web_block_and_its_variants_parse() {
        assert_eq!(parse(BLOCK), Ok(full()));
        let one_line = r#"api { web_server: https://app.clear.ml, api_server: https://api.clear.ml, files_server: https://files.clear.ml, credentials {"access_key": "AK1234", "secret_key": "S3cr3t/with+chars"} }"#;
        assert_eq!(parse(one_line), Ok(full()));
        let json = r#"{"api": {"web_server": "https://app.clear.ml", "api_server": "https://api.clear.ml", "files_server": "https://files.clear.ml", "credentials": {"access_key": "AK1234", "secret_key": "S3cr3t/with+chars"}}}"#;
        assert_eq!(parse(json), Ok(full()));
        let old = "credentials {\n \"access_key\" = \"AK1234\"\n \"secret_key\" = \"S3cr3t/with+chars\"\n}\nhost: https://api.clear.ml\n";
        let p = parse(old).expect("parses");
        assert_eq!(p.access_key.as_deref(), Some("AK1234"));
        assert_eq!(p.api.as_deref(), Some("https://api.clear.ml"));
        assert_eq!(p.web, None);
        assert!(parse("api { credentials {").is_err());
    }

    #[test]
    fn the_block_ends_at_its_closing_brace() {
        assert_eq!(lines_until_complete(BLOCK), 9);
        // Blank lines inside the block (a CRLF paste read as two line ends) do not end it.
        let spaced = BLOCK.replace('\n', "\n\n");
        assert_eq!(lines_until_complete(&spaced), 17);
        // Braces in strings and comments do not count; URLs are not comments.
        let tricky = "api { # }\n  x: \"}\"\n  web_server: http://h:8080 // {\n}\n";
        assert_eq!(lines_until_complete(tricky), 4);
        assert_eq!(lines_until_complete("\napi {"), 0);
    }

    #[test]
    fn secrets_are_masked_in_every_form() {
        for (line, want) in [
            (
                r#"    "secret_key" = "S3cr3t/with+chars""#,
                r#"    "secret_key" = "********""#,
            ),
            (
                r#"credentials {"access_key": "AK", "secret_key": "a\"b"}"#,
                r#"credentials {"access_key": "AK", "secret_key": "********"}"#,
            ),
            ("secret_key: abc, x: 1", "secret_key: ********, x: 1"),
            ("SECRET_KEY=abc}", "SECRET_KEY=********}"),
            ("no secrets here", "no secrets here"),
        ] {
            assert_eq!(mask_secrets(line), want);
        }
        assert!(!mask_secrets(r#""secret_key" = "S3cr3t""#).contains("S3cr3t"));
    }
}
