//! The `task`/`queue`/`worker` tests' harness: the server binary on loopback ports the system
//! picks, with a temporary data dir, and the commands with a temporary clearml.conf and a
//! clean environment.

use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{Value, json};

pub const KEY: &str = "TESTKEY";
pub const SECRET: &str = "TESTSECRET";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server process and its files; killed when dropped.
pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub conf: PathBuf,
    pub http: reqwest::Client,
    pub rt: tokio::runtime::Runtime,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of one command.
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let (child, port, files_port) = super::spawn_server(
            StdCommand::new(assert_cmd::cargo::cargo_bin("clearml-agent"))
                .args(["server", "--port", "0", "--files-port", "0"])
                .arg("--data-dir")
                .arg(&data)
                .args(["--access-key", KEY, "--secret-key", SECRET])
                .env_clear()
                .env("HOME", dir.path())
                .stderr(Stdio::null()),
        );
        let base = format!("http://127.0.0.1:{port}");
        let conf = dir.path().join("clearml.conf");
        std::fs::write(
            &conf,
            format!(
                "api {{\n  api_server: \"{base}\"\n  web_server: \"{base}\"\n  files_server: \"http://127.0.0.1:{files_port}\"\n  credentials {{ access_key: \"{KEY}\", secret_key: \"{SECRET}\" }}\n}}\n"
            ),
        )
        .expect("write conf");
        let server = Server {
            child,
            dir,
            base,
            conf,
            http: reqwest::Client::new(),
            rt: runtime(),
        };
        server.wait_ready();
        server
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ok = self.rt.block_on(async {
                self.http
                    .get(format!("{}/debug.ping", self.base))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            });
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server at {} did not become ready", self.base);
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The agent binary with the test config and a clean environment.
    pub fn agent(&self) -> Command {
        let mut cmd = Command::cargo_bin("clearml-agent").expect("binary");
        cmd.env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config-file")
            .arg(&self.conf)
            .timeout(Duration::from_secs(60));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let out = self.agent().args(args).output().expect("runs");
        let o = Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !o.stderr.contains("panicked"),
            "{args:?} panicked: {}",
            o.stderr
        );
        o
    }

    /// Runs a command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "{args:?} failed\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 1,
            "{args:?} should fail\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        assert_eq!(
            o.stderr.trim().lines().count(),
            1,
            "one-line error expected: {}",
            o.stderr
        );
        o.stderr
    }

    /// `task create ...`: the id on the last stdout line.
    pub fn create(&self, args: &[&str]) -> String {
        let mut all = vec!["task", "create"];
        all.extend_from_slice(args);
        let out = self.ok(&all);
        let id = out.lines().last().unwrap_or_default().trim().to_string();
        assert!(
            id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
            "not an id: {out:?}"
        );
        id
    }

    /// A direct API call (Basic credentials); the `data` of a 200 answer.
    pub fn call(&self, endpoint: &str, body: Value) -> Value {
        self.try_call(endpoint, body)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    pub fn try_call(&self, endpoint: &str, body: Value) -> Result<Value, String> {
        self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}/{endpoint}", self.base))
                .basic_auth(KEY, Some(SECRET))
                .json(&body)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = r.status();
            let env: Value = r.json().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("HTTP {status}: {}", env["meta"]["result_msg"]));
            }
            Ok(env["data"].clone())
        })
    }

    /// Log lines sent as `events.add_batch` json-lines, each `(timestamp ms, msg)`.
    pub fn add_log(&self, task: &str, lines: &[(i64, String)]) {
        let body = lines
            .iter()
            .map(|(ts, msg)| {
                json!({"type": "log", "task": task, "level": "info", "worker": "test-worker",
                       "timestamp": ts, "msg": msg})
                .to_string()
            })
            .collect::<Vec<_>>()
            .join("\n");
        let (status, text) = self.rt.block_on(async {
            let r = self
                .http
                .post(format!("{}/events.add_batch", self.base))
                .basic_auth(KEY, Some(SECRET))
                .header("Content-Type", "application/json-lines")
                .body(body)
                .send()
                .await
                .expect("add_batch sent");
            (r.status(), r.text().await.unwrap_or_default())
        });
        assert!(status.is_success(), "events.add_batch: {status} {text}");
    }

    pub fn task(&self, id: &str) -> Value {
        self.call("tasks.get_by_id", json!({ "task": id }))["task"].clone()
    }

    pub fn queue_id(&self, name: &str) -> String {
        let qs = self.call("queues.get_all", json!({ "name": format!("^{name}$") }));
        qs["queues"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no queue {name}: {qs}"))
            .to_string()
    }

    pub fn queue_entries(&self, queue_id: &str) -> Vec<String> {
        let q = self.call("queues.get_by_id", json!({ "queue": queue_id }));
        q["queue"]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["task"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    }
}

// ------------------------------------------------------------------------------------------
// git helpers

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = StdCommand::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.file.allow=always",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// What the agent does with the task's script section: clone, check out the commit, apply
/// the diff with `git apply --unidiff-zero`. Returns the checkout.
pub fn reproduce(script: &Value, into: &Path) -> PathBuf {
    let repo = script["repository"].as_str().expect("repository");
    let dest = into.join("checkout");
    let out = StdCommand::new("git")
        .args(["-c", "protocol.file.allow=always", "clone", "--quiet", repo])
        .arg(&dest)
        .output()
        .expect("git clone");
    assert!(
        out.status.success(),
        "clone {repo}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let commit = script["version_num"].as_str().expect("version_num");
    git(&dest, &["checkout", "--quiet", "--force", commit]);
    let diff = script["diff"].as_str().unwrap_or_default();
    if !diff.is_empty() {
        let mut child = StdCommand::new("git")
            .arg("-C")
            .arg(&dest)
            .args(["apply", "--unidiff-zero", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("git apply");
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(diff.as_bytes()).expect("diff written");
            stdin.write_all(b"\n").expect("newline");
        }
        let out = child.wait_with_output().expect("git apply waits");
        assert!(
            out.status.success(),
            "git apply failed: {}\n{diff}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dest
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// task create
