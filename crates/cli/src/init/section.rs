//! The commented defaults written into a user's file, whole or only the missing part.
//!
//! A new `clearml.conf` gets the built-in `agent.conf` and `sdk.conf` with their comments, as
//! users of the Python agent expect. When an agent section is added to an existing file,
//! settings the file already has must not be written again: the later value would win and
//! silently undo the user's choice. So the defaults text is cut into entries (a key with its
//! value and the comment lines right above it) and only entries the file lacks are kept,
//! going into objects the file sets partly. The text stays the original, comments included.
//!
//! This reads our own defaults files, which hold one entry per line (or a bracketed value over
//! several lines); the tests check that every entry of both files is found.

use clearml_hocon::{Value, parse_path};

/// How much of a key a file already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// An object with some keys; its missing keys can be added.
    Partial,
    /// A value (or something in the way, like a string where an object would go).
    Present,
}

/// Presence of `path` in `tree`: a non-object on the way counts as present, so nothing is
/// written beneath it.
pub fn presence(tree: &Value, path: &[String]) -> Presence {
    let mut cur = tree;
    for k in path {
        let Some(obj) = cur.as_object() else {
            return Presence::Present;
        };
        match obj.get(k.as_str()) {
            Some(v) => cur = v,
            None => return Presence::Absent,
        }
    }
    if cur.as_object().is_some() {
        Presence::Partial
    } else {
        Presence::Present
    }
}

enum Item {
    Blank,
    /// A comment line not attached to an entry (separated by a blank line).
    Comment(usize),
    Entry(Entry),
}

struct Entry {
    /// Path relative to the enclosing object.
    key: Vec<String>,
    /// The comment lines right above it.
    comments: Vec<usize>,
    first: usize,
    last: usize,
    /// For `key: {` spread over lines: the lines between the opening and the closing line.
    body: Option<(usize, usize)>,
}

/// The characters of a line outside strings and comments.
fn code(line: &str) -> String {
    let mut out = String::new();
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
            out.push('s');
        } else if c == '"' {
            in_str = true;
            out.push('s');
        } else if c == '#' || (c == '/' && chars.peek() == Some(&'/') && prev.is_whitespace()) {
            break;
        } else {
            out.push(c);
        }
        prev = c;
    }
    out
}

fn depth_change(line: &str) -> i64 {
    code(line)
        .chars()
        .map(|c| match c {
            '{' | '[' => 1,
            '}' | ']' => -1,
            _ => 0,
        })
        .sum()
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with('#') || t.starts_with("//")
}

/// The key path an entry line starts with (`"match_rules": [` gives `match_rules`).
fn entry_key(line: &str) -> Option<Vec<String>> {
    let t = line.trim_start();
    let end = if let Some(rest) = t.strip_prefix('"') {
        let close = rest.find('"')?;
        let after = &rest[close + 1..];
        let tail = after
            .find(|c: char| c == ':' || c == '=' || c == '{' || c.is_whitespace())
            .unwrap_or(after.len());
        close + 2 + tail
    } else {
        t.find(|c: char| c == ':' || c == '=' || c == '{' || c.is_whitespace())
            .unwrap_or(t.len())
    };
    parse_path(t[..end].trim()).ok().filter(|p| !p.is_empty())
}

/// Cuts `lines[start..end]` (an object's body) into items.
fn items(lines: &[&str], start: usize, end: usize) -> Result<Vec<Item>, String> {
    let mut out = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut i = start;
    while i < end {
        let line = lines[i];
        if line.trim().is_empty() {
            out.extend(pending.drain(..).map(Item::Comment));
            out.push(Item::Blank);
            i += 1;
            continue;
        }
        if is_comment(line) {
            pending.push(i);
            i += 1;
            continue;
        }
        let key = entry_key(line).ok_or_else(|| format!("line {}: no key", i + 1))?;
        let mut depth = depth_change(line);
        let first = i;
        while depth > 0 {
            i += 1;
            if i >= end {
                return Err(format!("line {}: not closed", first + 1));
            }
            depth += depth_change(lines[i]);
        }
        let opens_object = code(line).trim_end().ends_with('{') && depth_change(line) == 1;
        out.push(Item::Entry(Entry {
            key,
            comments: std::mem::take(&mut pending),
            first,
            last: i,
            body: (opens_object && i > first).then_some((first + 1, i)),
        }));
        i += 1;
    }
    out.extend(pending.drain(..).map(Item::Comment));
    Ok(out)
}

/// The lines of one object's body that the file lacks, and how many entries they hold.
fn render(
    lines: &[&str],
    body: &[Item],
    prefix: &[String],
    present: &dyn Fn(&[String]) -> Presence,
) -> Result<(Vec<String>, usize), String> {
    let mut out: Vec<String> = Vec::new();
    let mut entries = 0;
    for item in body {
        match item {
            Item::Blank => {
                if out.last().is_some_and(|l| !l.trim().is_empty()) {
                    out.push(String::new());
                }
            }
            Item::Comment(i) => out.push(lines[*i].to_string()),
            Item::Entry(e) => {
                let path: Vec<String> = prefix.iter().chain(&e.key).cloned().collect();
                let keep: Option<Vec<String>> = match (present(&path), e.body) {
                    (Presence::Absent, _) => {
                        entries += 1;
                        Some(
                            lines[e.first..=e.last]
                                .iter()
                                .map(|l| l.to_string())
                                .collect(),
                        )
                    }
                    (Presence::Partial, Some((from, to))) => {
                        let inner = items(lines, from, to)?;
                        let (sub, n) = render(lines, &inner, &path, present)?;
                        entries += n;
                        (n > 0).then(|| {
                            let mut v = vec![lines[e.first].to_string()];
                            v.extend(sub);
                            v.push(lines[e.last].to_string());
                            v
                        })
                    }
                    _ => None,
                };
                if let Some(text) = keep {
                    out.extend(e.comments.iter().map(|i| lines[*i].to_string()));
                    out.extend(text);
                }
            }
        }
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    if entries == 0 {
        out.clear();
    }
    Ok((out, entries))
}

/// `name { ... }` holding the entries of `defaults` (a built-in defaults file: one object,
/// opening brace on the first line) that `present` does not report, with `intro` as its first
/// comment. `None` when nothing is missing.
pub fn missing_section(
    name: &str,
    defaults: &str,
    intro: &str,
    present: &dyn Fn(&[String]) -> Presence,
) -> Result<Option<String>, String> {
    let lines: Vec<&str> = defaults.lines().collect();
    let open = lines
        .iter()
        .position(|l| !l.trim().is_empty())
        .filter(|i| lines[*i].trim() == "{")
        .ok_or("the defaults do not start with `{`")?;
    let close = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .filter(|i| lines[*i].trim() == "}" && *i > open)
        .ok_or("the defaults do not end with `}`")?;
    let mut body = items(&lines, open + 1, close)?;
    // The file's own opening note is about the defaults file, not about a user's config.
    let lead = body
        .iter()
        .take_while(|i| matches!(i, Item::Comment(_)))
        .count();
    body.drain(..lead);
    let root = vec![name.to_string()];
    let (text, n) = render(&lines, &body, &root, present)?;
    if n == 0 {
        return Ok(None);
    }
    let mut out = format!("{name} {{\n");
    for line in intro.lines() {
        if line.is_empty() {
            out.push_str("    #\n");
        } else {
            out.push_str(&format!("    # {line}\n"));
        }
    }
    out.push('\n');
    let mut skipping_blanks = true;
    for line in text {
        if skipping_blanks && line.trim().is_empty() {
            continue;
        }
        skipping_blanks = false;
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("}\n");
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clearml_hocon::Options;

    const AGENT: &str = include_str!("../../../config/defaults/agent.conf");
    const SDK: &str = include_str!("../../../config/defaults/sdk.conf");

    fn parse(text: &str) -> Value {
        Options::with_env(|_| None)
            .parse_str(text, "test", None)
            .expect("parses")
    }

    fn absent(_: &[String]) -> Presence {
        Presence::Absent
    }

    #[test]
    fn the_whole_section_is_the_defaults_with_comments() {
        for (name, text) in [("agent", AGENT), ("sdk", SDK)] {
            let section = missing_section(name, text, "intro", &absent)
                .expect("cut")
                .expect("something");
            let written = parse(&section);
            let original = parse(&format!("{name} {text}"));
            assert_eq!(written, original, "{name}: {section}");
            assert!(section.contains("    # intro\n"));
            assert!(!section.contains("Built-in defaults"), "{section}");
        }
        let section = missing_section("agent", AGENT, "x", &absent)
            .expect("cut")
            .expect("something");
        assert!(section.contains("# where task venvs are built"));
    }

    #[test]
    fn only_missing_entries_are_kept() {
        let existing = parse(
            "agent { package_manager.type: pip, venvs_dir: /data/venvs, default_docker: null }",
        );
        let present = |p: &[String]| presence(&existing, p);
        let section = missing_section("agent", AGENT, "x", &present)
            .expect("cut")
            .expect("something");
        let added = parse(&section);
        assert_eq!(added.get("agent.package_manager.type"), None);
        assert_eq!(added.get("agent.venvs_dir"), None);
        assert_eq!(added.get("agent.default_docker"), None);
        assert!(added.get("agent.package_manager.pip_version").is_some());
        assert!(added.get("agent.vcs_cache.enabled").is_some());
        // The user's values survive the addition.
        let mut merged = existing.clone();
        merged.merge(added.clone());
        assert_eq!(
            merged.get_str("agent.package_manager.type").ok().flatten(),
            Some("pip".to_string())
        );
        // With everything there, nothing is left to add.
        let mut full = parse(&format!("agent {AGENT}"));
        full.merge(existing);
        let present = |p: &[String]| presence(&full, p);
        assert_eq!(missing_section("agent", AGENT, "x", &present), Ok(None));
    }

    #[test]
    fn presence_stops_at_values_in_the_way() {
        let t = parse("agent { a: 1, b { c: 2 } }");
        let p = |s: &str| presence(&t, &parse_path(s).expect("path"));
        assert_eq!(p("agent.a"), Presence::Present);
        assert_eq!(p("agent.a.x"), Presence::Present);
        assert_eq!(p("agent.b"), Presence::Partial);
        assert_eq!(p("agent.b.d"), Presence::Absent);
        assert_eq!(p("sdk"), Presence::Absent);
    }
}
