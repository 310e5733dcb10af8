//! Raw console bytes to lines, the way the agent cleans task output (§5.12): split on `\n`,
//! keep the last non-empty `\r` segment of each line (progress bars redraw with `\r`), remove
//! backspaces, decode UTF-8 lossily and drop the bare terminal-reset line `ESC[0m`.

/// Beyond this many held bytes, a partial line that redraws itself with `\r` is compacted to
/// its last non-empty segment, so a progress bar that never prints `\n` stays small.
const COMPACT_AT: usize = 64 * 1024;
/// A partial line without `\r` that grows past this is sent as it is (as a piece of a line,
/// without end of line), so a task that never prints `\n` cannot exhaust memory.
const MAX_PARTIAL: usize = 1024 * 1024;

/// One cleaned line (or piece of a line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub text: String,
    /// False only for a piece cut off a very long line that is still being written.
    pub eol: bool,
}

/// Holds the incomplete trailing line of one stream between pushes.
#[derive(Default)]
pub(crate) struct Splitter {
    partial: Vec<u8>,
}

impl Splitter {
    /// Adds `bytes` and appends the lines they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<Piece>) {
        let mut rest = bytes;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            let line = if self.partial.is_empty() {
                clean(&rest[..pos])
            } else {
                self.partial.extend_from_slice(&rest[..pos]);
                let line = clean(&self.partial);
                self.partial.clear();
                line
            };
            if let Some(text) = line {
                out.push(Piece { text, eol: true });
            }
            rest = &rest[pos + 1..];
        }
        self.partial.extend_from_slice(rest);
        // Only new `\r`s can make compaction worthwhile; this keeps pushes linear.
        if self.partial.len() > COMPACT_AT && rest.contains(&b'\r') {
            compact(&mut self.partial);
        }
        if self.partial.len() > MAX_PARTIAL {
            // Cut on a UTF-8 boundary so no character is split between two pieces.
            let cut = utf8_cut(&self.partial);
            let head: Vec<u8> = self.partial.drain(..cut).collect();
            if let Some(text) = clean(&head) {
                out.push(Piece { text, eol: false });
            }
        }
    }

    /// The held partial line as a complete line (at the end of the stream).
    pub fn flush(&mut self) -> Option<Piece> {
        if self.partial.is_empty() {
            return None;
        }
        let text = clean(&self.partial);
        self.partial.clear();
        text.map(|text| Piece { text, eol: true })
    }
}

/// The cleaned text of one complete line, or `None` when the line is dropped.
pub(crate) fn clean(line: &[u8]) -> Option<String> {
    let segment = last_segment(line);
    // Most lines have no backspace and are valid UTF-8: one copy, no other work.
    let text = if segment.contains(&0x08) {
        let bytes: Vec<u8> = segment.iter().copied().filter(|&b| b != 0x08).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        String::from_utf8_lossy(segment).into_owned()
    };
    (text != "\x1b[0m").then_some(text)
}

/// The last non-empty `\r` segment (`"a\r"` keeps `"a"`, as a CRLF line ending should).
fn last_segment(line: &[u8]) -> &[u8] {
    line.rsplit(|&b| b == b'\r')
        .find(|s| !s.is_empty())
        .unwrap_or(&[])
}

/// Drops everything before the `\r` that starts the last non-empty segment: later bytes can
/// only extend that segment or start newer ones, so the line's final text is unchanged.
fn compact(partial: &mut Vec<u8>) {
    let mut end = partial.len();
    while let Some(cr) = partial[..end].iter().rposition(|&b| b == b'\r') {
        if cr + 1 < end {
            partial.drain(..cr);
            return;
        }
        end = cr;
    }
}

/// A cut point at most `MAX_PARTIAL` bytes in that does not split a UTF-8 sequence.
fn utf8_cut(bytes: &[u8]) -> usize {
    let mut cut = MAX_PARTIAL.min(bytes.len());
    // Step back over continuation bytes (10xxxxxx), at most 3 of them.
    let mut steps = 0;
    while cut > 0 && steps < 3 && bytes.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
        cut -= 1;
        steps += 1;
    }
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        out.extend(s.flush());
        out.into_iter().map(|p| p.text).collect()
    }

    #[test]
    fn carriage_returns_backspaces_and_resets() {
        assert_eq!(
            lines(&[b"10%\r50%\r100%\nx\x08y\r\n\x1b[0m\n\nend"]),
            vec!["100%", "xy", "", "end"]
        );
        assert_eq!(lines(&[b"only\r\r\n"]), vec!["only"]);
        assert_eq!(lines(&[b"\r\n"]), vec![""]);
    }

    #[test]
    fn partial_lines_join_and_bad_utf8_is_replaced() {
        assert_eq!(
            lines(&[b"hel", b"lo\nwor", b"ld\n\xff"]),
            vec!["hello", "world", "\u{fffd}"]
        );
        // A multi-byte character split across pushes survives.
        let e = "é".as_bytes();
        assert_eq!(lines(&[&e[..1], &e[1..], b"\n"]), vec!["é"]);
    }

    #[test]
    fn progress_bars_without_newline_stay_small() {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        for i in 0..100_000 {
            s.push(format!("\rstep {i}").as_bytes(), &mut out);
        }
        assert!(out.is_empty());
        assert!(s.partial.len() <= COMPACT_AT + 20);
        assert_eq!(s.flush().map(|p| p.text), Some("step 99999".to_string()));
    }

    #[test]
    fn endless_lines_are_cut_on_character_boundaries() {
        let mut s = Splitter::default();
        let mut out = Vec::new();
        let chunk = "ü".repeat(1000);
        for _ in 0..600 {
            s.push(chunk.as_bytes(), &mut out);
        }
        assert!(!out.is_empty());
        assert!(out.iter().all(|p| !p.eol && !p.text.contains('\u{fffd}')));
        let total: usize =
            out.iter().map(|p| p.text.len()).sum::<usize>() + s.flush().map_or(0, |p| p.text.len());
        assert_eq!(total, 600 * chunk.len());
    }
}
