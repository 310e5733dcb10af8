//! Running the `git` program: a fixed, prompt-free environment, credentials through
//! `GIT_ASKPASS`, and censored output.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::Reporter;
use crate::url::censor_url_passwords;

/// Builds an argv (an array) of mixed `&str`, `String`, `&Path` items.
macro_rules! args {
    ($($x:expr),* $(,)?) => { [$(::std::ffi::OsString::from($x)),*] };
}
pub(crate) use args;

/// The answer the askpass script gives: the user for a `Username...` prompt, the pass otherwise.
pub(crate) struct Creds {
    pub user: String,
    pub pass: String,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("user", &self.user)
            .field("pass", &"****")
            .finish()
    }
}

// The names of the variables that carry the secret to the askpass script. They are set on the
// git child only; the script file holds no secret.
const USER_VAR: &str = "CLEARML_VCS_GIT_USER";
const PASS_VAR: &str = "CLEARML_VCS_GIT_PASS";
const ASKPASS_SCRIPT: &str = "#!/bin/sh\n\
# Written by clearml-vcs: answers git's credential prompts from the environment.\n\
case \"$1\" in\n\
  [Uu]sername*) printf '%s\\n' \"$CLEARML_VCS_GIT_USER\" ;;\n\
  *) printf '%s\\n' \"$CLEARML_VCS_GIT_PASS\" ;;\n\
esac\n";

/// How a git command failed, with its output already censored.
#[derive(Debug)]
pub(crate) enum GitError {
    /// The program could not be started at all.
    Spawn(io::Error),
    Failed {
        detail: String,
    },
}

impl GitError {
    pub(crate) fn detail(&self) -> String {
        match self {
            GitError::Spawn(e) => format!("cannot run git: {e}"),
            GitError::Failed { detail } => detail.clone(),
        }
    }
}

pub(crate) struct Git<'a> {
    program: &'a OsStr,
    extra_config: &'a [(String, String)],
    reporter: &'a dyn Reporter,
    secrets: Vec<String>,
}

/// Lines of git's stderr kept for an error message.
const TAIL_LINES: usize = 20;

impl<'a> Git<'a> {
    pub(crate) fn new(
        program: &'a OsStr,
        extra_config: &'a [(String, String)],
        reporter: &'a dyn Reporter,
        secrets: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut all = Vec::new();
        for s in secrets.into_iter().filter(|s| !s.is_empty()) {
            // git may print a secret the way it was written in a URL, i.e. percent-encoded.
            let encoded = clearml_percent::encode(&s);
            if encoded != s {
                all.push(encoded);
            }
            all.push(s);
        }
        // Longest first, so a secret that contains another one is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
        all.dedup();
        Git {
            program,
            extra_config,
            reporter,
            secrets: all,
        }
    }

    /// The same runner, also censoring `more`.
    pub(crate) fn with_secrets(&self, more: impl IntoIterator<Item = String>) -> Git<'a> {
        Git::new(
            self.program,
            self.extra_config,
            self.reporter,
            self.secrets.iter().cloned().chain(more),
        )
    }

    pub(crate) fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// Removes every known password, and any `user:pass@` in a URL, from `text`.
    pub(crate) fn censor(&self, text: &str) -> String {
        let mut out = censor_url_passwords(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "****");
            }
        }
        out
    }

    /// Reports one line, censored.
    pub(crate) fn say(&self, text: &str) {
        self.reporter.line(&self.censor(text));
    }

    /// Runs git and returns its stdout. With `report`, its output lines go to the reporter.
    pub(crate) fn run(
        &self,
        cwd: Option<&Path>,
        args: &[OsString],
        creds: Option<&Creds>,
        report: bool,
    ) -> Result<String, GitError> {
        self.run_with_input(cwd, args, creds, None, report)
    }

    pub(crate) fn run_with_input(
        &self,
        cwd: Option<&Path>,
        args: &[OsString],
        creds: Option<&Creds>,
        input: Option<&[u8]>,
        report: bool,
    ) -> Result<String, GitError> {
        let mut cmd = Command::new(self.program);
        // Repositories owned by another user (a cache mounted into a container) are refused by
        // git unless marked safe; this marks them for our commands only, not in the user's
        // global config.
        cmd.args(["-c", "safe.directory=*"]);
        if creds.is_some() {
            // An empty value clears the configured credential helpers, so that none of them
            // stores our password (a `store` helper writes it to ~/.git-credentials).
            cmd.args(["-c", "credential.helper="]);
        }
        cmd.args(args);
        if let Some(dir) = cwd {
            cmd.current_dir(dir);
        }
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        if std::env::var_os("GIT_SSH_COMMAND").is_none() && std::env::var_os("GIT_SSH").is_none() {
            cmd.env("GIT_SSH_COMMAND", "ssh -oBatchMode=yes");
        }
        // Extra config through the environment, not argv, in case a value is secret (a header).
        if !self.extra_config.is_empty() {
            let base: usize = std::env::var("GIT_CONFIG_COUNT")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            for (i, (k, v)) in self.extra_config.iter().enumerate() {
                cmd.env(format!("GIT_CONFIG_KEY_{}", base + i), k);
                cmd.env(format!("GIT_CONFIG_VALUE_{}", base + i), v);
            }
            cmd.env(
                "GIT_CONFIG_COUNT",
                (base + self.extra_config.len()).to_string(),
            );
        }
        cmd.env_remove(USER_VAR).env_remove(PASS_VAR);
        // Inherited from a surrounding git (a hook, a test harness) these would point our
        // commands at the wrong repository.
        for var in [
            "GIT_DIR",
            "GIT_WORK_TREE",
            "GIT_INDEX_FILE",
            "GIT_OBJECT_DIRECTORY",
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            "GIT_COMMON_DIR",
            "GIT_NAMESPACE",
        ] {
            cmd.env_remove(var);
        }
        // Kept alive until git exits; removed with its folder afterwards.
        let _askpass_dir = match creds {
            Some(c) => {
                let (dir, script) = write_askpass().map_err(GitError::Spawn)?;
                cmd.env("GIT_ASKPASS", script)
                    .env(USER_VAR, &c.user)
                    .env(PASS_VAR, &c.pass);
                Some(dir)
            }
            None => None,
        };
        cmd.stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

        let mut child = cmd.spawn().map_err(GitError::Spawn)?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut tail: VecDeque<String> = VecDeque::new();
        let out_bytes = std::thread::scope(|s| {
            if let (Some(mut pipe), Some(data)) = (stdin, input) {
                s.spawn(move || {
                    // A write error means git stopped reading; its exit status tells why.
                    let _ = pipe.write_all(data);
                });
            }
            let out = s.spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut pipe) = stdout {
                    let _ = pipe.read_to_end(&mut buf);
                }
                buf
            });
            if let Some(pipe) = stderr {
                for chunk in BufReader::new(pipe).split(b'\n') {
                    let Ok(chunk) = chunk else { break };
                    let text = String::from_utf8_lossy(&chunk);
                    // Progress meters redraw with '\r': only the last state is worth a line.
                    let Some(line) = text.rsplit('\r').map(str::trim_end).find(|l| !l.is_empty())
                    else {
                        continue;
                    };
                    let line = self.censor(line);
                    if report {
                        self.reporter.line(&line);
                    }
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            }
            out.join().unwrap_or_default()
        });
        let status = child.wait().map_err(GitError::Spawn)?;
        let stdout = String::from_utf8_lossy(&out_bytes).into_owned();
        if report {
            for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
                self.say(line);
            }
        }
        if status.success() {
            Ok(stdout)
        } else {
            let mut detail = Vec::from(tail).join("\n");
            if detail.is_empty() {
                detail = format!("git {} ({status})", first_word(args));
            }
            Err(GitError::Failed { detail })
        }
    }
}

fn first_word(args: &[OsString]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .find(|a| !a.starts_with('-'))
        .map(|a| a.into_owned())
        .unwrap_or_default()
}

/// A private (0700) folder holding the askpass script.
fn write_askpass() -> io::Result<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::Builder::new().prefix("clearml-git-").tempdir()?;
    let script = dir.path().join("askpass.sh");
    let mut file = std::fs::File::create(&script)?;
    file.write_all(ASKPASS_SCRIPT.as_bytes())?;
    drop(file);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok((dir, script))
}
