//! Writing to the user's terminal or pipe.
//!
//! Two concerns live here:
//!
//! * **A closed stdout ends the command quietly with exit 0**, as `git` and `rg` do
//!   (`clearml-agent config | head -1`). Rust ignores SIGPIPE, so a write to a closed pipe
//!   fails with `EPIPE` and `println!` panics with "failed printing to stdout: Broken pipe".
//!   Restoring SIGPIPE's default needs `unsafe` (forbidden in this workspace) and would also let
//!   a write to a child's closed stdin kill a running daemon, so instead: streaming writers go
//!   through [`write_stdout`], which exits 0 on `BrokenPipe`, and [`exit_quietly_on_broken_pipe`]
//!   installs a panic hook that turns exactly std's "failed printing to stdout: <EPIPE>" panic
//!   into the same quiet exit, which covers every `println!` in the binary.
//! * **Text from the server is made harmless before it reaches a terminal**: a task's console
//!   or name can hold escape sequences (retitle the window, move the cursor, hide or rewrite
//!   earlier lines). [`sanitize`] shows every control character except newline and tab in caret
//!   notation (`^[`), as `cat -v` does; to a pipe or file the text passes unchanged.

use std::borrow::Cow;
use std::io::{IsTerminal as _, Write as _};

/// The message std panics with when `println!` meets a closed stdout.
fn broken_stdout_message() -> String {
    format!(
        "failed printing to stdout: {}",
        std::io::Error::from_raw_os_error(nix::libc::EPIPE)
    )
}

/// Makes a `println!` to a closed stdout end the process with exit 0 and no message; any other
/// panic goes to the default hook unchanged.
pub fn exit_quietly_on_broken_pipe() {
    let expected = broken_stdout_message();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied());
        if message == Some(expected.as_str()) {
            std::process::exit(0);
        }
        default_hook(info);
    }));
}

/// Writes `bytes` to stdout and flushes. A closed stdout ends the process quietly with exit 0;
/// any other write error is returned.
pub fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => r,
    }
}

/// Whether stdout is a terminal (text from the server is sanitised only then).
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// `text` as it may be shown on a terminal: C0 controls other than `\n` and `\t` in caret
/// notation (`ESC` is `^[`, `CR` is `^M`), DEL as `^?`, C1 controls (U+0080..U+009F, which some
/// terminals act on as escape sequences) as `<U+009B>`.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            c if !is_unsafe(c) => out.push(c),
            '\u{7f}' => out.push_str("^?"),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(b'@' + c as u8));
            }
            c => out.push_str(&format!("<U+{:04X}>", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// `text` sanitised when stdout is a terminal, unchanged otherwise.
pub fn for_stdout(text: &str) -> Cow<'_, str> {
    if stdout_is_terminal() {
        sanitize(text)
    } else {
        Cow::Borrowed(text)
    }
}

/// `text` as one cell of a table: like [`sanitize`], and `\n` / `\t` too, since either would
/// break the row. Applied whether or not stdout is a terminal: a table is one line per row.
pub fn table_cell(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let tabs_and_newlines = text.replace('\n', "^J").replace('\t', "^I");
    Cow::Owned(sanitize(&tabs_and_newlines).into_owned())
}

fn is_unsafe(c: char) -> bool {
    c != '\n' && c != '\t' && (c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cells_stay_on_one_line() {
        assert_eq!(table_cell("plain name"), "plain name");
        assert_eq!(table_cell("a\nb\tc\x1b[2J"), "a^Jb^Ic^[[2J");
    }

    #[test]
    fn escape_sequences_are_shown_not_run() {
        assert_eq!(
            sanitize("\x1b]0;pwned\x07red \x1b[31mtext\x1b[0m"),
            "^[]0;pwned^Gred ^[[31mtext^[[0m"
        );
        assert_eq!(sanitize("a\rb\x08c\x7fd\u{9b}2J"), "a^Mb^Hc^?d<U+009B>2J");
    }

    #[test]
    fn newlines_tabs_and_unicode_pass() {
        let text = "epoch 1\tloss 0.5\nπ ≈ 3.14 — ok ✓\n";
        assert!(matches!(sanitize(text), Cow::Borrowed(_)));
        assert_eq!(sanitize(text), text);
    }

    #[test]
    fn the_hook_matches_std_message() {
        // std's wording, which the panic hook recognises.
        assert_eq!(
            broken_stdout_message(),
            "failed printing to stdout: Broken pipe (os error 32)"
        );
    }
}
