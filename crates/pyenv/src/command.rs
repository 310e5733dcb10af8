//! Running the installers: one pipe for stdout and stderr so lines keep their order, each line
//! forwarded as it arrives, and the last lines kept for the error.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::error::EnvError;
use crate::report::Reporter;

/// How many output lines an error keeps.
const TAIL_LINES: usize = 20;

/// The command as one masked line, arguments with spaces quoted.
pub(crate) fn display(cmd: &Command) -> String {
    let mut parts = vec![quote(&cmd.get_program().to_string_lossy())];
    parts.extend(cmd.get_args().map(|a| quote(&a.to_string_lossy())));
    mask_secrets(&parts.join(" "))
}

fn quote(arg: &str) -> String {
    if !arg.is_empty()
        && !arg
            .chars()
            .any(|c| c.is_whitespace() || "'\"\\$`;&|<>()*?!#".contains(c))
    {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Reports and runs `cmd`, forwarding each line of its merged output; fails on a non-zero exit.
pub(crate) fn run_streamed(
    mut cmd: Command,
    what: &str,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let command = display(&cmd);
    reporter.line(&format!("Running: {command}"));
    let spawn_error = |source| EnvError::Spawn {
        what: what.to_string(),
        command: command.clone(),
        source,
    };
    let (reader, writer) = io::pipe().map_err(spawn_error)?;
    let writer_err = writer.try_clone().map_err(spawn_error)?;
    cmd.stdin(Stdio::null()).stdout(writer).stderr(writer_err);
    let mut child = cmd.spawn().map_err(spawn_error)?;
    // The Command still holds the pipe's write ends; drop it or the read below never ends.
    drop(cmd);

    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let text = mask_secrets(text.trim_end_matches(['\n', '\r']));
                reporter.line(&text);
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // A broken pipe means the output is gone; the exit status still decides.
            Err(_) => break,
        }
    }
    let status = child.wait().map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        Err(EnvError::CommandFailed {
            what: what.to_string(),
            command,
            code: status.code(),
            status: status.to_string(),
            tail: tail.into(),
        })
    }
}

/// Runs `cmd` quietly and returns its stdout; on failure the error holds stderr and stdout.
pub(crate) fn run_captured(mut cmd: Command, what: &str) -> Result<String, EnvError> {
    let command = display(&cmd);
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| EnvError::Spawn {
            what: what.to_string(),
            command: command.clone(),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return Ok(stdout);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines: Vec<String> = stderr
        .lines()
        .chain(stdout.lines())
        .map(mask_secrets)
        .collect();
    let skip = lines.len().saturating_sub(TAIL_LINES);
    Err(EnvError::CommandFailed {
        what: what.to_string(),
        command,
        code: output.status.code(),
        status: output.status.to_string(),
        tail: lines.into_iter().skip(skip).collect(),
    })
}

/// Hides the password in every `scheme://user:password@host` of `text` (`user:****@`), or the
/// whole user part when it has no colon (a token: `****@`).
pub fn mask_secrets(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, after) = rest.split_at(pos + 3);
        out.push_str(head);
        let authority_end = after
            .find(|c: char| c == '/' || c == '"' || c == '\'' || c.is_whitespace())
            .unwrap_or(after.len());
        let authority = &after[..authority_end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":****");
                    }
                    None => out.push_str("****"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[authority_end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_passwords_and_tokens() {
        assert_eq!(
            mask_secrets("--extra-index-url https://bob:s3cr:et@host.io/simple x"),
            "--extra-index-url https://bob:****@host.io/simple x"
        );
        assert_eq!(
            mask_secrets("git+https://ghp_token@github.com/a/b.git"),
            "git+https://****@github.com/a/b.git"
        );
        assert_eq!(
            mask_secrets("https://pypi.org/simple and http://u:p@x"),
            "https://pypi.org/simple and http://u:****@x"
        );
        assert_eq!(mask_secrets("no urls: a@b"), "no urls: a@b");
        assert_eq!(mask_secrets("trailing ://"), "trailing ://");
        assert_eq!(mask_secrets("ünïcode://ü:ß@h/é"), "ünïcode://ü:****@h/é");
    }

    #[test]
    fn display_quotes_and_masks() {
        let mut cmd = Command::new("uv");
        cmd.args(["pip", "install", "pip<24 ; python_version < '3.10'"])
            .arg("https://u:p@h/simple");
        assert_eq!(
            display(&cmd),
            r"uv pip install 'pip<24 ; python_version < '\''3.10'\''' https://u:****@h/simple"
        );
    }

    #[test]
    fn streams_merged_output_and_reports_failure() {
        let lines = std::sync::Mutex::new(Vec::new());
        let reporter = |l: &str| lines.lock().unwrap().push(l.to_string());
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out1; echo err1 >&2; echo out2; exit 3"]);
        let err = run_streamed(cmd, "testing", &reporter).unwrap_err();
        let lines = lines.into_inner().unwrap();
        assert_eq!(&lines[1..], ["out1", "err1", "out2"]);
        match err {
            EnvError::CommandFailed { code, tail, .. } => {
                assert_eq!(code, Some(3));
                assert_eq!(tail, ["out1", "err1", "out2"]);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run_captured(Command::new("/nonexistent/prog"), "probing").unwrap_err();
        assert!(matches!(err, EnvError::Spawn { .. }), "{err}");
    }
}
