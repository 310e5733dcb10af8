//! Writing a tree back out: JSON, HOCON, and the `key.path = value` properties listing that
//! `clearml-agent config` prints.

use crate::path::quote_key_if_needed;
use crate::value::{Kind, Value};

/// Pretty JSON (two-space indent), floats kept as floats.
pub fn render_json(value: &Value) -> String {
    serde_json::to_string_pretty(&value.to_json()).unwrap_or_default()
}

/// HOCON that parses back to the same tree: strings always quoted, numbers as written.
pub fn render_hocon(value: &Value) -> String {
    let mut out = String::new();
    match &value.kind {
        Kind::Object(o) => {
            for (k, v) in o {
                write_entry(&mut out, k, v, 0);
            }
        }
        _ => {
            write_value(&mut out, value, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

fn write_entry(out: &mut String, key: &str, value: &Value, level: usize) {
    indent(out, level);
    out.push_str(&quote_key_if_needed(key));
    if matches!(value.kind, Kind::Object(_)) {
        out.push(' ');
    } else {
        out.push_str(": ");
    }
    write_value(out, value, level);
    out.push('\n');
}

fn write_value(out: &mut String, value: &Value, level: usize) {
    match &value.kind {
        Kind::Null => out.push_str("null"),
        Kind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Kind::Number(n) => out.push_str(n.as_str()),
        Kind::String(s) => out.push_str(&quote_string(s)),
        Kind::List(items) => {
            if items.is_empty() {
                out.push_str("[]");
                return;
            }
            out.push_str("[\n");
            for item in items {
                indent(out, level + 1);
                write_value(out, item, level + 1);
                out.push('\n');
            }
            indent(out, level);
            out.push(']');
        }
        Kind::Object(o) => {
            if o.is_empty() {
                out.push_str("{}");
                return;
            }
            out.push_str("{\n");
            for (k, v) in o {
                write_entry(out, k, v, level + 1);
            }
            indent(out, level);
            out.push('}');
        }
    }
}

/// A JSON-style quoted string, which HOCON reads back unchanged.
pub(crate) fn quote_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One `a.b.c = value` line per leaf, as pyhocon's properties converter writes them (list items
/// are numbered, `=`, `!` and `#` in values are escaped, nulls and empty containers are left out).
pub fn render_properties(value: &Value) -> String {
    let mut lines = Vec::new();
    let mut stack = Vec::new();
    properties(value, &mut stack, &mut lines);
    lines.join("\n")
}

fn properties(value: &Value, stack: &mut Vec<String>, lines: &mut Vec<String>) {
    let leaf = |stack: &Vec<String>, text: String, lines: &mut Vec<String>| {
        lines.push(format!("{} = {}", stack.join("."), text));
    };
    match &value.kind {
        Kind::Object(o) => {
            for (k, v) in o {
                stack.push(k.clone());
                properties(v, stack, lines);
                stack.pop();
            }
        }
        Kind::List(items) => {
            for (i, v) in items.iter().enumerate() {
                stack.push(i.to_string());
                properties(v, stack, lines);
                stack.pop();
            }
        }
        Kind::Null => {}
        Kind::String(s) => leaf(
            stack,
            s.replace('=', "\\=")
                .replace('!', "\\!")
                .replace('#', "\\#")
                .replace('\n', "\\\n"),
            lines,
        ),
        Kind::Bool(b) => leaf(stack, b.to_string(), lines),
        Kind::Number(n) => leaf(stack, n.as_str().to_string(), lines),
    }
}
