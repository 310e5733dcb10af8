//! Dotted paths: `agent.package_manager.type`, `a."b.c"`, `g."2.1"`.

/// Splits a path into keys. Unquoted segments are split on `.`; a double-quoted segment is one
/// key whatever it contains (no escapes inside, as in pyhocon). Empty unquoted segments (`a..b`)
/// are skipped, as pyhocon's key splitter does.
pub fn parse_path(path: &str) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cur = String::new();
    let mut cur_used = false;
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                if cur_used {
                    keys.push(std::mem::take(&mut cur));
                }
                cur_used = false;
            }
            '"' => {
                let mut closed = false;
                for q in chars.by_ref() {
                    if q == '"' {
                        closed = true;
                        break;
                    }
                    cur.push(q);
                }
                if !closed {
                    return Err(format!("unterminated quote in path {path:?}"));
                }
                cur_used = true;
            }
            c => {
                cur.push(c);
                cur_used = true;
            }
        }
    }
    if cur_used {
        keys.push(cur);
    }
    if keys.is_empty() {
        return Err(format!("empty path {path:?}"));
    }
    Ok(keys)
}

/// Renders keys back into a path, quoting the keys that need it.
pub fn render_path<S: AsRef<str>>(keys: &[S]) -> String {
    keys.iter()
        .map(|k| quote_key_if_needed(k.as_ref()))
        .collect::<Vec<_>>()
        .join(".")
}

/// A key as it must be written in HOCON: bare when it only has safe characters.
pub fn quote_key_if_needed(key: &str) -> String {
    let safe = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-'));
    if safe {
        key.to_string()
    } else {
        crate::render::quote_string(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_dots_and_keeps_quoted_segments_whole() {
        assert_eq!(parse_path("a.b.c").unwrap(), ["a", "b", "c"]);
        assert_eq!(parse_path("g.\"2.1\"").unwrap(), ["g", "2.1"]);
        assert_eq!(parse_path("a..b").unwrap(), ["a", "b"]);
        assert!(parse_path("").is_err());
        assert!(parse_path("a.\"b").is_err());
    }

    #[test]
    fn renders_with_quotes_only_where_needed() {
        assert_eq!(render_path(&["agent", "venvs_dir"]), "agent.venvs_dir");
        assert_eq!(render_path(&["g", "2.1"]), "g.\"2.1\"");
    }
}
