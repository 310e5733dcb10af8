//! A recursive-descent parser for the pyhocon dialect that clearml.conf is written in.
//!
//! It reads characters, not tokens: whether `//` starts a comment or belongs to a URL depends on
//! where it stands (at the start of a token it is a comment; inside `http://host` it is text), and
//! newlines separate entries. Every node remembers its line and column so that later errors, even
//! type errors found by a getter, can point at the file position.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::Error;
use crate::node::{self, Concat, Node, NodeMap, Part, Piece, Subst};
use crate::path::parse_path;
use crate::value::{Kind, Number, Origin, Value};

/// Deeper nesting than this is refused instead of risking the stack.
pub(crate) const MAX_DEPTH: usize = 200;
/// Includes deeper than this are refused (they are almost certainly a loop).
const MAX_INCLUDE_DEPTH: usize = 32;

/// Characters pyhocon refuses in an unquoted value.
const FORBIDDEN: &[char] = &['^', '`', '+', '?', '!', '@', '*', '&'];

pub(crate) struct Parser<'a> {
    chars: Vec<char>,
    pos: usize,
    line_starts: Vec<usize>,
    source: Arc<str>,
    /// Folder that relative includes are read from.
    base_dir: Option<PathBuf>,
    depth: usize,
    includes: &'a mut IncludeState,
}

#[derive(Default)]
pub(crate) struct IncludeState {
    /// Files being parsed right now, to stop include loops.
    stack: HashSet<PathBuf>,
}

pub(crate) enum Root {
    Object(NodeMap, Origin),
    List(Node),
}

impl<'a> Parser<'a> {
    pub(crate) fn new(
        text: &str,
        source: Arc<str>,
        base_dir: Option<PathBuf>,
        includes: &'a mut IncludeState,
    ) -> Self {
        // A UTF-8 byte-order mark is not content.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let chars: Vec<char> = text.chars().collect();
        let mut line_starts = vec![0];
        for (i, c) in chars.iter().enumerate() {
            if *c == '\n' {
                line_starts.push(i + 1);
            }
        }
        Parser {
            chars,
            pos: 0,
            line_starts,
            source,
            base_dir,
            depth: 0,
            includes,
        }
    }

    fn origin_at(&self, pos: usize) -> Origin {
        let line = match self.line_starts.binary_search(&pos) {
            Ok(l) => l,
            Err(l) => l - 1,
        };
        let col = pos - self.line_starts[line];
        Origin {
            source: self.source.clone(),
            line: (line + 1) as u32,
            col: (col + 1) as u32,
        }
    }

    fn here(&self) -> Origin {
        self.origin_at(self.pos)
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::at(self.here(), message)
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn starts_with(&self, s: &str) -> bool {
        (self.pos..)
            .zip(s.chars())
            .all(|(i, c)| self.chars.get(i) == Some(&c))
    }

    fn at_comment(&self) -> bool {
        self.peek() == Some('#') || self.starts_with("//")
    }

    /// Spaces and tabs (pyhocon's whitespace); returns what was skipped.
    fn skip_inline_ws(&mut self) -> String {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) || self.is_other_inline_ws() {
            self.pos += 1;
        }
        self.chars[start..self.pos].iter().collect()
    }

    /// Unicode spaces other than newlines (e.g. a non-breaking space pasted from a web page) are
    /// whitespace too.
    fn is_other_inline_ws(&self) -> bool {
        matches!(self.peek(), Some(c) if c.is_whitespace() && c != '\n' && c != '\r' && c != ' ' && c != '\t')
    }

    fn skip_comment(&mut self) {
        while let Some(c) = self.peek() {
            if c == '\n' || c == '\r' {
                break;
            }
            self.pos += 1;
        }
    }

    /// Whitespace, newlines, comments and (when `commas`) commas between entries.
    fn skip_separators(&mut self, commas: bool) {
        loop {
            self.skip_inline_ws();
            match self.peek() {
                Some('\n' | '\r') => self.pos += 1,
                Some(',') if commas => self.pos += 1,
                _ if self.at_comment() => self.skip_comment(),
                _ => break,
            }
        }
    }

    fn enter(&mut self) -> Result<(), Error> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    /// The whole document: an object (with or without root braces) or a list.
    pub(crate) fn parse_document(&mut self) -> Result<Root, Error> {
        self.skip_separators(false);
        let origin = self.here();
        let root = match self.peek() {
            Some('[') => {
                let node = self.parse_list()?;
                Root::List(node)
            }
            Some('{') => {
                let open = self.pos;
                self.pos += 1;
                let map = self.parse_object_body(Some(open))?;
                Root::Object(map, origin)
            }
            _ => Root::Object(self.parse_object_body(None)?, origin),
        };
        self.skip_separators(true);
        if let Some(c) = self.peek() {
            return Err(self.err(format!(
                "unexpected {} after the end of the document",
                describe(c)
            )));
        }
        Ok(root)
    }

    /// Entries up to the closing `}` (when `open` is the position of the `{`) or the end of input.
    fn parse_object_body(&mut self, open: Option<usize>) -> Result<NodeMap, Error> {
        self.enter()?;
        let mut map = NodeMap::new();
        loop {
            self.skip_separators(true);
            match self.peek() {
                None => {
                    if let Some(open) = open {
                        let o = self.origin_at(open);
                        return Err(self.err(format!(
                            "end of input inside the object opened at line {}, column {}: a '}}' is missing",
                            o.line, o.col
                        )));
                    }
                    break;
                }
                Some('}') => {
                    if open.is_some() {
                        self.pos += 1;
                        break;
                    }
                    return Err(self.err("unexpected '}' with no object open"));
                }
                Some(_) => {}
            }
            if self.at_include()? {
                self.parse_include(&mut map)?;
            } else {
                self.parse_assignment(&mut map)?;
            }
            // An entry ends at a newline, a comma, a comment or the closing brace.
            self.skip_inline_ws();
            match self.peek() {
                None | Some('\n' | '\r' | ',' | '}') => {}
                _ if self.at_comment() => {}
                Some(c) => {
                    return Err(self.err(format!(
                        "unexpected {} after a value; put each setting on its own line or separate them with ','",
                        describe(c)
                    )));
                }
            }
        }
        self.depth -= 1;
        Ok(map)
    }

    fn parse_assignment(&mut self, map: &mut NodeMap) -> Result<(), Error> {
        let key_origin = self.here();
        let keys = self.parse_key()?;
        if self.depth + keys.len() > MAX_DEPTH {
            return Err(Error::at(
                key_origin.clone(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        // pyhocon lets comments and newlines stand between a key and its separator.
        self.skip_separators(false);
        match self.peek() {
            Some('{') => {
                let open = self.pos;
                self.pos += 1;
                let body = self.parse_object_body(Some(open))?;
                node::put(map, &keys, Node::Obj(body, self.origin_at(open)));
            }
            Some(':' | '=') => {
                self.pos += 1;
                self.skip_separators(false);
                let value = self.parse_value()?;
                node::put(map, &keys, value);
            }
            Some('+') if self.peek_at(1) == Some('=') => {
                self.pos += 2;
                self.skip_separators(false);
                let value = self.parse_value()?;
                node::put(map, &keys, append_to(&keys, value, key_origin));
            }
            Some(c) => {
                return Err(self.err(format!(
                    "expected ':', '=' or '{{' after the key \"{}\", found {}",
                    crate::path::render_path(&keys),
                    describe(c)
                )));
            }
            None => {
                return Err(self.err(format!(
                    "the key \"{}\" has no value: expected ':', '=' or '{{'",
                    crate::path::render_path(&keys)
                )));
            }
        }
        Ok(())
    }

    /// A key: dotted unquoted segments, quoted segments (`"a.b"` is one key), or both.
    fn parse_key(&mut self) -> Result<Vec<String>, Error> {
        let start = self.pos;
        let mut keys = Vec::new();
        let mut cur = String::new();
        let mut cur_quoted = false;
        // Spaces are kept inside a key (`my key`) but not around it or around its dots.
        let mut pending_ws = String::new();
        loop {
            match self.peek() {
                Some(c @ (' ' | '\t')) => {
                    if !cur.is_empty() || cur_quoted {
                        pending_ws.push(c);
                    }
                    self.pos += 1;
                    continue;
                }
                Some('"') => {
                    cur.push_str(&std::mem::take(&mut pending_ws));
                    let s = if self.starts_with("\"\"\"") {
                        self.parse_triple_quoted()?
                    } else {
                        self.parse_quoted()?
                    };
                    cur.push_str(&s);
                    cur_quoted = true;
                }
                Some('.') => {
                    self.pos += 1;
                    pending_ws.clear();
                    push_key(&mut keys, &mut cur, cur_quoted);
                    cur_quoted = false;
                }
                Some(c)
                    if c == ':'
                        || c == '='
                        || c == '{'
                        || c == '\n'
                        || c == '\r'
                        || (c == '+' && self.peek_at(1) == Some('='))
                        || self.at_comment() =>
                {
                    break;
                }
                Some(c)
                    if matches!(c, '}' | '[' | ']' | ',' | '$' | '\\')
                        || FORBIDDEN.contains(&c) =>
                {
                    return Err(self.err(format!(
                        "{} is not allowed in a key; put the key in double quotes",
                        describe(c)
                    )));
                }
                Some(c) => {
                    cur.push_str(&std::mem::take(&mut pending_ws));
                    cur.push(c);
                    self.pos += 1;
                }
                None => break,
            }
        }
        push_key(&mut keys, &mut cur, cur_quoted);
        if keys.is_empty() {
            self.pos = start;
            return Err(match self.peek() {
                Some(c) => self.err(format!("expected a key, found {}", describe(c))),
                None => self.err("expected a key, found the end of input"),
            });
        }
        Ok(keys)
    }

    /// `include "f"`, `include file("f")`, `include required(...)`, `include url(...)`.
    fn at_include(&self) -> Result<bool, Error> {
        let word: String = self.chars[self.pos..]
            .iter()
            .take(7)
            .collect::<String>()
            .to_ascii_lowercase();
        if word != "include" {
            return Ok(false);
        }
        let mut i = self.pos + 7;
        let mut saw_ws = false;
        while matches!(self.chars.get(i), Some(' ' | '\t')) {
            i += 1;
            saw_ws = true;
        }
        if !saw_ws {
            return Ok(false);
        }
        let rest: String = self.chars[i..].iter().take(9).collect();
        Ok(rest.starts_with('"')
            || rest.starts_with("file(")
            || rest.starts_with("url(")
            || rest.starts_with("required(")
            || rest.starts_with("package(")
            || rest.starts_with("classpath("))
    }

    fn parse_include(&mut self, map: &mut NodeMap) -> Result<(), Error> {
        let origin = self.here();
        self.pos += 7;
        self.skip_inline_ws();
        let mut required = false;
        let mut closers = 0;
        if self.starts_with("required(") {
            required = true;
            closers += 1;
            self.pos += "required(".len();
            self.skip_inline_ws();
        }
        let mut kind = "file";
        for k in ["file(", "url(", "package(", "classpath("] {
            if self.starts_with(k) {
                kind = &k[..k.len() - 1];
                closers += 1;
                self.pos += k.len();
                self.skip_inline_ws();
                break;
            }
        }
        if self.peek() != Some('"') {
            return Err(self.err("include expects a quoted file name"));
        }
        let name = self.parse_quoted()?;
        for _ in 0..closers {
            self.skip_inline_ws();
            if self.peek() != Some(')') {
                return Err(self.err("include: a ')' is missing"));
            }
            self.pos += 1;
        }
        if kind != "file" {
            return Err(Error::at(
                origin,
                format!("include {kind}(...) is not supported; only files can be included"),
            ));
        }
        if name.starts_with("http://") || name.starts_with("https://") {
            return Err(Error::at(
                origin,
                format!("include of a URL ({name}) is not supported; only files can be included"),
            ));
        }
        let name = name.strip_prefix("file://").unwrap_or(&name);
        let path = match &self.base_dir {
            Some(dir) => dir.join(name),
            None => PathBuf::from(name),
        };
        let included = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(()),
            Err(e) => {
                return Err(Error::at(
                    origin,
                    format!("cannot read included file {}: {e}", path.display()),
                ));
            }
        };
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if self.includes.stack.len() >= MAX_INCLUDE_DEPTH
            || !self.includes.stack.insert(canonical.clone())
        {
            return Err(Error::at(
                origin,
                format!("{} includes itself (include loop)", path.display()),
            ));
        }
        let source: Arc<str> = Arc::from(path.display().to_string());
        let base = path.parent().map(Path::to_path_buf);
        let result = Parser::new(&included, source, base, self.includes).parse_document();
        self.includes.stack.remove(&canonical);
        match result? {
            Root::Object(entries, _) => {
                for (k, v) in entries {
                    node::put(map, std::slice::from_ref(&k), v);
                }
                Ok(())
            }
            Root::List(_) => Err(Error::at(
                origin,
                format!("included file {} is a list, not an object", path.display()),
            )),
        }
    }

    /// A value: one or more pieces on the same line (a concatenation), until a newline, a comma,
    /// a closing bracket or a comment.
    fn parse_value(&mut self) -> Result<Node, Error> {
        let origin = self.here();
        let mut parts: Vec<Part> = Vec::new();
        let mut ws = String::new();
        loop {
            let c = match self.peek() {
                None => break,
                Some(c) => c,
            };
            match c {
                '\n' | '\r' | ',' | '}' | ']' => break,
                ' ' | '\t' => {
                    ws.push_str(&self.skip_inline_ws());
                    continue;
                }
                _ if self.is_other_inline_ws() => {
                    ws.push_str(&self.skip_inline_ws());
                    continue;
                }
                _ if self.at_comment() => break,
                '\\' if matches!(self.peek_at(1), Some('\n' | '\r') | None) => {
                    // A backslash at the end of a line continues the value on the next line.
                    self.pos += 1;
                    while matches!(self.peek(), Some('\n' | '\r')) {
                        self.pos += 1;
                    }
                    self.skip_inline_ws();
                    continue;
                }
                _ => {}
            }
            let piece_origin = self.here();
            let piece = match c {
                '"' => {
                    let s = if self.starts_with("\"\"\"") {
                        self.parse_triple_quoted()?
                    } else {
                        self.parse_quoted()?
                    };
                    Piece::Scalar(Value::string(s.clone(), piece_origin), s)
                }
                '$' => {
                    if self.peek_at(1) != Some('{') {
                        return Err(self.err(
                            "'$' must start a substitution like ${name}; quote the value to use a literal '$'",
                        ));
                    }
                    Piece::Subst(self.parse_substitution()?)
                }
                '{' => {
                    let open = self.pos;
                    self.pos += 1;
                    let body = self.parse_object_body(Some(open))?;
                    Piece::Node(Node::Obj(body, piece_origin))
                }
                '[' => Piece::Node(self.parse_list()?),
                '=' => {
                    return Err(self
                        .err("unexpected '=' inside a value; quote the value if it contains '='"));
                }
                c if (c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
                    && self.number_len().is_some() =>
                {
                    let len = self.number_len().unwrap_or_default();
                    let text: String = self.chars[self.pos..self.pos + len].iter().collect();
                    self.pos += len;
                    let value = classify(&text, piece_origin);
                    Piece::Scalar(value, text)
                }
                c if FORBIDDEN.contains(&c) => {
                    return Err(self.err(format!(
                        "{} is not allowed in an unquoted value; put the value in double quotes",
                        describe(c)
                    )));
                }
                _ => {
                    let (text, escaped) = self.parse_unquoted();
                    let value = if escaped {
                        Value::string(text.clone(), piece_origin)
                    } else {
                        classify(&text, piece_origin)
                    };
                    Piece::Scalar(value, text)
                }
            };
            parts.push(Part {
                ws_before: std::mem::take(&mut ws),
                piece,
            });
        }
        if parts.is_empty() {
            // `a =` with nothing after it is the empty string in pyhocon; an empty list entry
            // (a trailing comma) is dropped by the list parser.
            return Ok(Node::Done(Value::string("", origin)));
        }
        finish_value(parts, origin)
    }

    /// The length of a number at the cursor when pyhocon would read one there: the number
    /// pattern, followed (after optional spaces) by the end of the value. This is how `+1` and
    /// `1e+3` are numbers although `+` is not allowed in unquoted text.
    fn number_len(&self) -> Option<usize> {
        let mut end = self.pos;
        while let Some(&c) = self.chars.get(end) {
            if c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.') {
                end += 1;
            } else {
                break;
            }
        }
        // The longest prefix that is a number, then the lookahead.
        let candidate: String = self.chars[self.pos..end].iter().collect();
        let len = (1..=candidate.len())
            .rev()
            .find(|&l| candidate.is_char_boundary(l) && Number::parse(&candidate[..l]).is_some())?;
        let mut i = self.pos + len;
        while matches!(self.chars.get(i), Some(' ' | '\t')) {
            i += 1;
        }
        let ok = match self.chars.get(i) {
            None => true,
            Some('$' | '}' | ']' | ',' | '#' | '\n' | '\r') => true,
            Some('/') => self.chars.get(i + 1) == Some(&'/'),
            _ => false,
        };
        ok.then_some(len)
    }

    /// An unquoted run of characters. Returns the text and whether it had escapes (an escaped
    /// token is always a string, never a number or keyword).
    fn parse_unquoted(&mut self) -> (String, bool) {
        let mut s = String::new();
        let mut escaped = false;
        while let Some(c) = self.peek() {
            match c {
                '"' | '$' | '{' | '}' | '[' | ']' | ',' | '#' | '=' | '\n' | '\r' | ' ' | '\t' => {
                    break;
                }
                c if FORBIDDEN.contains(&c) => break,
                c if c.is_whitespace() => break,
                '\\' => match self.peek_at(1) {
                    None | Some('\n' | '\r') => break,
                    Some(e) => {
                        self.pos += 2;
                        escaped = true;
                        match simple_escape(e) {
                            Some(c) => s.push(c),
                            None => {
                                s.push('\\');
                                s.push(e);
                            }
                        }
                    }
                },
                c => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
        (s, escaped)
    }

    /// A double-quoted string on one line, with JSON escapes (unknown escapes are kept as written,
    /// as pyhocon does: clearml-server schemas contain `"\>"`).
    fn parse_quoted(&mut self) -> Result<String, Error> {
        let open = self.here();
        self.pos += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.peek() else {
                return Err(Error::at(
                    open,
                    "unterminated string: the closing '\"' is missing",
                ));
            };
            match c {
                '"' => {
                    self.pos += 1;
                    return Ok(s);
                }
                '\n' | '\r' => {
                    return Err(Error::at(
                        open,
                        "unterminated string: the closing '\"' is missing on this line (use \"\"\" for text over several lines)",
                    ));
                }
                '\\' => {
                    let Some(e) = self.peek_at(1) else {
                        return Err(Error::at(
                            open,
                            "unterminated string: the closing '\"' is missing",
                        ));
                    };
                    if e == '\n' || e == '\r' {
                        return Err(
                            self.err("a backslash cannot end a line inside a quoted string")
                        );
                    }
                    self.pos += 2;
                    if let Some(c) = simple_escape(e) {
                        s.push(c);
                        continue;
                    }
                    match e {
                        '/' => s.push('/'),
                        'b' => s.push('\u{8}'),
                        'f' => s.push('\u{c}'),
                        'u' => match self.parse_unicode_escape() {
                            Some(ch) => s.push(ch),
                            None => s.push_str("\\u"),
                        },
                        other => {
                            s.push('\\');
                            s.push(other);
                        }
                    }
                }
                c => {
                    s.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// After `\u`: four hex digits (and a low surrogate after a high one). On anything else,
    /// consumes nothing and the escape is kept as written.
    fn parse_unicode_escape(&mut self) -> Option<char> {
        let hex4 = |p: &Self, at: usize| -> Option<u32> {
            let s: String = p.chars.get(at..at + 4)?.iter().collect();
            if s.chars().all(|c| c.is_ascii_hexdigit()) {
                u32::from_str_radix(&s, 16).ok()
            } else {
                None
            }
        };
        let hi = hex4(self, self.pos)?;
        if (0xD800..0xDC00).contains(&hi) {
            let lo = (self.chars.get(self.pos + 4) == Some(&'\\')
                && self.chars.get(self.pos + 5) == Some(&'u'))
            .then(|| hex4(self, self.pos + 6))
            .flatten()
            .filter(|lo| (0xDC00..0xE000).contains(lo));
            if let Some(lo) = lo {
                let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                let ch = char::from_u32(cp)?;
                self.pos += 10;
                return Some(ch);
            }
            return None;
        }
        let ch = char::from_u32(hi)?;
        self.pos += 4;
        Some(ch)
    }

    /// `"""raw text"""`: no escapes, may span lines; extra quotes before the closing three belong
    /// to the text (`""""a""""` is `"a"`).
    fn parse_triple_quoted(&mut self) -> Result<String, Error> {
        let open = self.here();
        self.pos += 3;
        let start = self.pos;
        let mut i = start;
        while i + 2 < self.chars.len() {
            if self.chars[i] == '"' && self.chars[i + 1] == '"' && self.chars[i + 2] == '"' {
                while self.chars.get(i + 3) == Some(&'"') {
                    i += 1;
                }
                let s: String = self.chars[start..i].iter().collect();
                self.pos = i + 3;
                return Ok(s);
            }
            i += 1;
        }
        Err(Error::at(
            open,
            "unterminated \"\"\" string: the closing \"\"\" is missing",
        ))
    }

    fn parse_substitution(&mut self) -> Result<Subst, Error> {
        let origin = self.here();
        self.pos += 2;
        let optional = self.peek() == Some('?');
        if optional {
            self.pos += 1;
        }
        let mut raw = String::new();
        loop {
            match self.peek() {
                Some('}') => {
                    self.pos += 1;
                    break;
                }
                Some('\n' | '\r') | None => {
                    return Err(Error::at(
                        origin,
                        "unterminated substitution: the closing '}' of '${' is missing",
                    ));
                }
                Some(c) => {
                    raw.push(c);
                    self.pos += 1;
                }
            }
        }
        let trimmed = raw.trim().to_string();
        let keys = parse_path(&trimmed)
            .map_err(|e| Error::at(origin.clone(), format!("bad substitution ${{{raw}}}: {e}")))?;
        Ok(Subst {
            keys,
            raw: trimmed,
            optional,
            origin,
        })
    }

    /// `[ ... ]`: entries separated by commas or newlines; empty entries (trailing commas) vanish.
    fn parse_list(&mut self) -> Result<Node, Error> {
        let open = self.pos;
        let origin = self.here();
        self.pos += 1;
        self.enter()?;
        let mut items = Vec::new();
        loop {
            self.skip_separators(true);
            match self.peek() {
                None => {
                    let o = self.origin_at(open);
                    return Err(self.err(format!(
                        "end of input inside the list opened at line {}, column {}: a ']' is missing",
                        o.line, o.col
                    )));
                }
                Some(']') => {
                    self.pos += 1;
                    break;
                }
                Some('}') => {
                    return Err(self.err("unexpected '}' inside a list: a ']' is missing"));
                }
                Some(_) => {}
            }
            let item = self.parse_value()?;
            if !is_empty_string(&item) {
                items.push(item);
            }
            self.skip_inline_ws();
            match self.peek() {
                None | Some('\n' | '\r' | ',' | ']') => {}
                _ if self.at_comment() => {}
                Some(c) => {
                    return Err(self.err(format!("unexpected {} in a list", describe(c))));
                }
            }
        }
        self.depth -= 1;
        Ok(Node::List(items, origin))
    }
}

/// The escapes pyhocon decodes in quoted and unquoted text alike; others stay as written.
fn simple_escape(e: char) -> Option<char> {
    match e {
        '\\' => Some('\\'),
        'n' => Some('\n'),
        'r' => Some('\r'),
        't' => Some('\t'),
        '=' | '#' | '!' | '"' => Some(e),
        _ => None,
    }
}

fn push_key(keys: &mut Vec<String>, cur: &mut String, quoted: bool) {
    let k = std::mem::take(cur);
    if quoted {
        keys.push(k);
    } else {
        let t = k.trim();
        // `a..b` and stray spaces around dots are tolerated, as pyhocon's splitter does.
        if !t.is_empty() {
            keys.push(t.to_string());
        }
    }
}

/// pyhocon drops empty-string entries from lists (they are what a trailing comma leaves behind).
fn is_empty_string(n: &Node) -> bool {
    matches!(n, Node::Done(Value { kind: Kind::String(s), .. }) if s.is_empty())
}

/// An unquoted token as a keyword, a number or a string.
fn classify(text: &str, origin: Origin) -> Value {
    let kind = if text.eq_ignore_ascii_case("true") {
        Kind::Bool(true)
    } else if text.eq_ignore_ascii_case("false") {
        Kind::Bool(false)
    } else if text.eq_ignore_ascii_case("null") {
        Kind::Null
    } else if let Some(n) = Number::parse(text) {
        Kind::Number(n)
    } else {
        Kind::String(text.to_string())
    };
    Value::new(kind, origin)
}

/// Turns the pieces of a value into a node: resolved right away when there is no substitution.
fn finish_value(parts: Vec<Part>, origin: Origin) -> Result<Node, Error> {
    if parts.iter().any(|p| matches!(p.piece, Piece::Subst(_))) {
        return Ok(Node::Concat(Concat {
            parts,
            prev: None,
            origin,
        }));
    }
    let pieces = parts.into_iter().map(|p| (p.ws_before, p.piece)).collect();
    Ok(node::combine(pieces, &origin)?.unwrap_or_else(|| Node::Done(Value::string("", origin))))
}

/// `key += value` is `key = ${?key} [value]` (the HOCON spec; pyhocon differs, see the corpus).
fn append_to(keys: &[String], value: Node, origin: Origin) -> Node {
    let list = match value {
        Node::List(..) => value,
        // `a +=` with nothing after it appends nothing (an empty list entry is no entry)
        other if is_empty_string(&other) => Node::List(Vec::new(), origin.clone()),
        other => Node::List(vec![other], origin.clone()),
    };
    Node::Concat(Concat {
        parts: vec![
            Part {
                ws_before: String::new(),
                piece: Piece::Subst(Subst {
                    keys: keys.to_vec(),
                    raw: crate::path::render_path(keys),
                    optional: true,
                    origin: origin.clone(),
                }),
            },
            Part {
                ws_before: String::new(),
                piece: Piece::Node(list),
            },
        ],
        prev: None,
        origin,
    })
}

fn describe(c: char) -> String {
    match c {
        '\n' | '\r' => "end of line".to_string(),
        c if c.is_control() => format!("control character U+{:04X}", c as u32),
        c => format!("'{c}'"),
    }
}
