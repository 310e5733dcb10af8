//! What the commands write: a closed stdout ends every command quietly with exit 0, text from
//! the server reaches a terminal without its escape sequences, and `task show` hides the
//! password of a repository URL. Runs the binary against the embedded server in this process;
//! the terminal is a real pseudo-terminal.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use common::{TestServer, bin, in_process_server};

const KEY: &str = "TERMKEY";
const SECRET: &str = "TERMSECRET";

struct Env {
    server: TestServer,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let server = in_process_server(KEY, SECRET);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("clearml.conf"),
            format!(
                "api {{\n api_server: {api}\n web_server: {api}\n files_server: {files}\n \
                 credentials {{access_key: {KEY}, secret_key: {SECRET}}}\n}}\n",
                api = server.api,
                files = server.files
            ),
        )
        .unwrap();
        Env { server, dir }
    }

    fn conf(&self) -> PathBuf {
        self.dir.path().join("clearml.conf")
    }

    fn agent(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin());
        cmd.env_clear()
            .env("HOME", self.dir.path())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config-file")
            .arg(self.conf())
            .args(args);
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.agent(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A task whose console holds `lines`.
    fn task_with_log(&self, lines: &[&str]) -> String {
        let id = self.ok(&[
            "task",
            "create",
            "--project",
            "term",
            "--name",
            "escapes \x1b]0;retitled\x07",
            "--repo",
            "https://deploy:s3cr3t-t0ken@git.example.com/team/repo.git",
            "--script",
            "train.py",
        ]);
        let id = id.lines().last().unwrap().trim().to_string();
        let body = lines
            .iter()
            .enumerate()
            .map(|(i, msg)| {
                serde_json::json!({"type": "log", "task": id, "level": "info",
                    "worker": "w", "timestamp": 1_700_000_000_000_i64 + i as i64, "msg": msg})
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let status = rt.block_on(async {
            reqwest::Client::new()
                .post(format!("{}/events.add_batch", self.server.api))
                .basic_auth(KEY, Some(SECRET))
                .header("Content-Type", "application/json-lines")
                .body(body)
                .send()
                .await
                .unwrap()
                .status()
        });
        assert!(status.is_success());
        id
    }
}

/// Runs `cmd` with a stdout pipe whose reading end is already closed: the first write fails
/// with EPIPE, every time.
fn with_closed_stdout(cmd: &mut Command) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    cmd.stdout(writer).stderr(Stdio::piped()).output().unwrap()
}

fn assert_quiet_success(what: &str, out: &Output) {
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{what} on a closed stdout: {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `cmd` with its stdout on a pseudo-terminal and returns what the terminal received.
fn on_terminal(mut cmd: Command) -> String {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut child = cmd
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // `cmd` holds our copy of the terminal's far end: drop it, so that reading ends (EIO) once
    // the child has exited.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    // The terminal turns "\n" into "\r\n".
    String::from_utf8(got).unwrap().replace("\r\n", "\n")
}

#[test]
fn every_command_ends_quietly_with_exit_0_on_a_closed_stdout() {
    let env = Env::new();
    let id = env.task_with_log(&["line one", "line two"]);
    for args in [
        vec!["--version"],
        vec!["config"],
        vec!["config", "--json"],
        vec!["task", "show", id.as_str()],
        vec!["task", "show", "--json", id.as_str()],
        vec!["task", "logs", id.as_str()],
        vec!["task", "list"],
        vec!["queue", "list"],
        vec!["worker", "list"],
        vec!["cache", "status"],
    ] {
        let out = with_closed_stdout(&mut env.agent(&args));
        assert_quiet_success(&args.join(" "), &out);
    }
}

#[test]
fn config_piped_into_head_never_panics() {
    // The shape of the report: `clearml-agent config | head -1`, which failed about every other
    // run (the race is whether head has closed the pipe before the next write).
    let env = Env::new();
    let script = format!(
        "set -o pipefail; for i in $(seq 30); do '{}' --config-file '{}' config | head -1 > /dev/null || exit 1; done",
        bin().display(),
        env.conf().display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_quiet_success("config | head -1, 30 times", &out);
}

#[test]
fn task_logs_on_a_terminal_show_escape_sequences_instead_of_running_them() {
    let env = Env::new();
    let id = env.task_with_log(&[
        "\x1b]0;owned\x07title",
        "\x1b[2J\x1b[Hcleared",
        "tab\there, unicode π ✓",
        "progress 10%\rprogress 100%",
    ]);
    let shown = on_terminal(env.agent(&["task", "logs", &id]));
    assert!(
        !shown.contains('\x1b') && !shown.contains('\x07'),
        "{shown:?}"
    );
    assert!(shown.contains("^[]0;owned^Gtitle\n"), "{shown:?}");
    assert!(shown.contains("^[[2J^[[Hcleared\n"), "{shown:?}");
    assert!(shown.contains("tab\there, unicode π ✓\n"), "{shown:?}");
    assert!(shown.contains("progress 10%^Mprogress 100%\n"), "{shown:?}");

    // `task show` prints the task's name the same way.
    let shown = on_terminal(env.agent(&["task", "show", &id]));
    assert!(shown.contains("escapes ^[]0;retitled^G"), "{shown:?}");

    // Into a pipe or file the console is passed on byte for byte.
    let raw = env.ok(&["task", "logs", &id]);
    assert!(raw.contains("\x1b]0;owned\x07title\n"), "{raw:?}");
    assert!(raw.contains("progress 10%\rprogress 100%\n"), "{raw:?}");
}

#[test]
fn task_show_hides_the_repository_password() {
    let env = Env::new();
    let id = env.task_with_log(&["x"]);
    for args in [
        vec!["task", "show", &id],
        vec!["task", "show", "--json", &id],
    ] {
        let text = env.ok(&args);
        assert!(!text.contains("s3cr3t-t0ken"), "{args:?}: {text}");
        assert!(
            text.contains("https://deploy:********@git.example.com/team/repo.git"),
            "{args:?}: {text}"
        );
    }
    let text = on_terminal(env.agent(&["task", "show", &id]));
    assert!(!text.contains("s3cr3t-t0ken"), "{text}");
}
