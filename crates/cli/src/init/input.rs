//! Reading answers from standard input, with secrets kept off the screen.
//!
//! Ordinary answers are read as lines with the terminal's own echo and line editing. Secrets
//! (the pasted block, a secret key, a git password) are read with the terminal in raw mode:
//! nothing is echoed by the terminal, Ctrl-C is seen as a byte, so the terminal is always put
//! back before the program ends, and a Windows line end (`\r\n`) counts as one line end
//! rather than two. When standard input is not a terminal (a pipe, a file), every answer is a
//! plain line and end of input means "accept the default".

use std::fs::File;
use std::io::{self, BufRead, BufReader, IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::Duration;

use nix::sys::termios::{
    FlushArg, InputFlags, LocalFlags, SetArg, SpecialCharacterIndices, Termios, tcflush, tcgetattr,
    tcsetattr,
};

/// The user pressed Ctrl-C while a secret was being read.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error("cannot read standard input: {0}")]
    Io(#[from] io::Error),
}

pub struct Io {
    input: BufReader<File>,
    tty: bool,
    /// False with `--non-interactive`: nothing is asked, defaults are taken.
    interactive: bool,
    eof: bool,
}

impl Io {
    pub fn new(interactive: bool) -> Result<Io, InputError> {
        let stdin = io::stdin();
        // Our own buffered handle, so that what was read ahead can be looked at and dropped.
        // With standard input closed there is nothing to read: every answer is a default.
        let (file, tty) = match stdin.as_fd().try_clone_to_owned() {
            Ok(fd) => (File::from(fd), stdin.is_terminal()),
            Err(_) => (File::open("/dev/null")?, false),
        };
        Ok(Io {
            input: BufReader::new(file),
            tty,
            interactive,
            eof: false,
        })
    }

    /// Whether questions are asked at all.
    pub fn asks(&self) -> bool {
        self.interactive && !self.eof
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// Shows `prompt` and reads a line, echoed. `None`: nothing to read (non-interactive, or
    /// end of input).
    pub fn line(&mut self, prompt: &str) -> Result<Option<String>, InputError> {
        if !self.asks() {
            return Ok(None);
        }
        show(prompt);
        let line = self.cooked_line()?;
        if line.is_none() {
            println!();
        }
        Ok(line)
    }

    /// Shows `prompt` and reads a line that is not echoed.
    pub fn secret(&mut self, prompt: &str) -> Result<Option<String>, InputError> {
        if !self.asks() {
            return Ok(None);
        }
        let line = if self.tty {
            // Raw mode first: what arrives right after the prompt must not be echoed either.
            let mut raw = RawMode::enter()?;
            show(prompt);
            self.raw_line(&mut raw)?
        } else {
            show(prompt);
            self.cooked_line()?
        };
        // The Enter key was not echoed either.
        if self.tty || line.is_none() {
            println!();
        }
        Ok(line)
    }

    /// Shows `prompt` and reads pasted lines, without echo on a terminal, handing each to
    /// `take` until it returns false or input ends. The terminal stays in raw mode for the
    /// whole paste, so no line of it is echoed, whenever it arrives. What is left after the
    /// last line (the line end after a closing brace, a trailing newline of the clipboard) is
    /// dropped, so that it does not answer the next question; piped input is all meant and
    /// kept.
    pub fn paste(
        &mut self,
        prompt: &str,
        mut take: impl FnMut(&str) -> bool,
    ) -> Result<(), InputError> {
        if !self.asks() {
            return Ok(());
        }
        if !self.tty {
            show(prompt);
            while let Some(line) = self.cooked_line()? {
                if !take(&line) {
                    break;
                }
            }
            return Ok(());
        }
        let mut raw = RawMode::enter()?;
        show(prompt);
        while let Some(line) = self.raw_line(&mut raw)? {
            if !take(&line) {
                // A paste can arrive in more than one piece.
                std::thread::sleep(Duration::from_millis(60));
                let n = self.input.buffer().len();
                self.input.consume(n);
                let _ = tcflush(io::stdin(), FlushArg::TCIFLUSH);
                break;
            }
        }
        Ok(())
    }

    fn next_byte(&mut self) -> io::Result<Option<u8>> {
        loop {
            match self.input.fill_buf() {
                Ok([]) => return Ok(None),
                Ok(buf) => {
                    let b = buf[0];
                    self.input.consume(1);
                    return Ok(Some(b));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// A line as the terminal (or pipe) delivers it.
    fn cooked_line(&mut self) -> Result<Option<String>, InputError> {
        let mut bytes = Vec::new();
        loop {
            match self.input.read_until(b'\n', &mut bytes) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if bytes.is_empty() {
            self.eof = true;
            return Ok(None);
        }
        while matches!(bytes.last(), Some(b'\n' | b'\r')) {
            bytes.pop();
        }
        Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
    }

    /// A line read byte by byte with the terminal in raw mode, with the usual editing keys.
    fn raw_line(&mut self, raw: &mut RawMode) -> Result<Option<String>, InputError> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let Some(b) = self.next_byte()? else {
                if buf.is_empty() {
                    self.eof = true;
                    return Ok(None);
                }
                break;
            };
            match b {
                b'\r' => {
                    // A `\n` sent with this `\r` (a Windows line end) belongs to it: take it
                    // now, waiting a moment for it, so that it is not read as an empty answer.
                    if self.input.buffer().is_empty() {
                        raw.wait_briefly()?;
                        let _ = self.input.fill_buf();
                        raw.block()?;
                    }
                    if self.input.buffer().first() == Some(&b'\n') {
                        self.input.consume(1);
                    }
                    break;
                }
                b'\n' => break,
                0x03 => return Err(Interrupted.into()),
                0x04 if buf.is_empty() => {
                    self.eof = true;
                    return Ok(None);
                }
                0x7f | 0x08 => pop_char(&mut buf),
                0x15 => buf.clear(),
                0x1b => self.skip_escape()?,
                b'\t' => buf.push(b),
                b if b < 0x20 => {}
                b => buf.push(b),
            }
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }

    /// Skips the rest of an escape sequence (arrow keys, bracketed-paste markers).
    fn skip_escape(&mut self) -> io::Result<()> {
        match self.next_byte()? {
            Some(b'[') => {
                while let Some(b) = self.next_byte()? {
                    if (0x40..=0x7e).contains(&b) {
                        break;
                    }
                }
            }
            Some(b'O') => {
                self.next_byte()?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn show(prompt: &str) {
    print!("{prompt}");
    let _ = io::stdout().flush();
}

/// Removes the last character (all bytes of it) of a UTF-8 buffer.
fn pop_char(buf: &mut Vec<u8>) {
    while let Some(b) = buf.pop() {
        // Stop after removing a byte that starts a character.
        if b & 0xc0 != 0x80 {
            break;
        }
    }
}

/// The terminal in raw mode until dropped: no echo, no line editing, no signals from keys, CR
/// not turned into LF. Output processing stays on, so `\n` still starts a new line.
struct RawMode {
    saved: Termios,
    raw: Termios,
}

impl RawMode {
    fn enter() -> io::Result<RawMode> {
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin).map_err(io::Error::from)?;
        let mut raw = saved.clone();
        raw.local_flags &=
            !(LocalFlags::ICANON | LocalFlags::ECHO | LocalFlags::ISIG | LocalFlags::IEXTEN);
        raw.input_flags &= !(InputFlags::ICRNL | InputFlags::INLCR | InputFlags::IGNCR);
        raw.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
        raw.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).map_err(io::Error::from)?;
        Ok(RawMode { saved, raw })
    }

    /// Reads return what arrived within a tenth of a second, possibly nothing.
    fn wait_briefly(&mut self) -> io::Result<()> {
        self.with_timing(0, 1)
    }

    /// Reads wait for at least one byte again.
    fn block(&mut self) -> io::Result<()> {
        self.with_timing(1, 0)
    }

    fn with_timing(&mut self, min: u8, tenths: u8) -> io::Result<()> {
        self.raw.control_chars[SpecialCharacterIndices::VMIN as usize] = min;
        self.raw.control_chars[SpecialCharacterIndices::VTIME as usize] = tenths;
        tcsetattr(io::stdin(), SetArg::TCSANOW, &self.raw).map_err(io::Error::from)
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(io::stdin(), SetArg::TCSANOW, &self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::pop_char;

    #[test]
    fn backspace_removes_whole_characters() {
        let mut b = "aé".as_bytes().to_vec();
        pop_char(&mut b);
        assert_eq!(b, b"a");
        pop_char(&mut b);
        pop_char(&mut b);
        assert!(b.is_empty());
    }
}
