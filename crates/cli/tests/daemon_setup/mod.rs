//! The server-plus-agent setup the daemon end-to-end tests share (daemon.rs, daemon_breadth.rs).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use serde_json::{Value, json};

use crate::common::{bin, git, run, spawn_server, uv, workspace};

pub const KEY: &str = "E2EACCESSKEY";
pub const SECRET: &str = "E2E-SECRET-d41d8cd98f00b204";
pub const GIT_PASS: &str = "git-pass-5f4dcc3b5aa765d61d83";

pub fn server_command(dir: &Path, port: u16, files_port: u16) -> Command {
    let mut c = Command::new(bin());
    c.args(["server", "--port", &port.to_string()])
        .args(["--files-port", &files_port.to_string()])
        .arg("--data-dir")
        .arg(dir.join("data"))
        // Keys through the environment: the tests look for the secret in every argv.
        .env("CLEARML_SERVER_ACCESS_KEY", KEY)
        .env("CLEARML_SERVER_SECRET_KEY", SECRET)
        .env("HOME", dir.join("home"))
        .stderr(Stdio::null());
    c
}

/// A server process plus an agent configuration pointing at it.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub files_port: u16,
    pub server: Option<Child>,
    pub conf: PathBuf,
    pub rt: tokio::runtime::Runtime,
    pub client: Client,
    pub daemons: Vec<Child>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        if let Some(s) = &mut self.server {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Setup {
    pub fn new(extra_conf: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        // Ports the system picks on the first start; a restart reuses them.
        let (server, port, files_port) = spawn_server(&mut server_command(dir.path(), 0, 0));
        let conf = dir.path().join("clearml.conf");
        let base = format!("http://127.0.0.1:{port}");
        std::fs::write(
            &conf,
            format!(
                "api {{\n  api_server: \"{base}\"\n  web_server: \"{base}\"\n  files_server: \"http://127.0.0.1:{files_port}\"\n  credentials {{ access_key: \"{KEY}\", secret_key: \"{SECRET}\" }}\n}}\n\
                 agent {{\n  venvs_dir: \"{}\"\n  vcs_cache.path: \"{}\"\n}}\n{extra_conf}\n",
                dir.path().join("venvs").display(),
                dir.path().join("vcs").display(),
            ),
        )
        .expect("conf");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("rt");
        let client = Client::new(ClientConfig {
            api_server: base,
            access_key: KEY.into(),
            secret_key: SECRET.into(),
            verify_certificate: true,
            method: "post".into(),
            worker: None,
            retry_for: Duration::from_secs(30),
            timeout: Duration::from_secs(30),
        })
        .expect("client");
        let s = Setup {
            dir,
            port,
            files_port,
            server: Some(server),
            conf,
            rt,
            client,
            daemons: Vec::new(),
        };
        s.wait_server();
        s
    }

    /// Starts the server again on the same ports and data.
    pub fn start_server(&mut self) {
        let (child, _, _) = spawn_server(&mut server_command(
            self.dir.path(),
            self.port,
            self.files_port,
        ));
        self.server = Some(child);
        self.wait_server();
    }

    pub fn wait_server(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill(); // SIGKILL
            let _ = s.wait();
        }
    }

    /// The agent binary with this setup's home, config and a shared uv and uv cache.
    pub fn agent(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config-file")
            .arg(&self.conf)
            .env("HOME", self.dir.path().join("home"))
            .env("CLEARML_BOOTSTRAP_UV_EXEC", uv())
            .env("UV_CACHE_DIR", workspace().join(".cache/uv-cache"))
            .env_remove("CLEARML_WORKER_ID")
            .env("CLEARML_AGENT_KILL_GRACE_SEC", "2");
        c
    }

    pub fn call(&self, endpoint: &str, body: Value) -> Value {
        self.rt
            .block_on(self.client.call(endpoint, body))
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    pub fn status(&self, task: &str) -> String {
        self.call("tasks.get_by_id", json!({"task": task}))["task"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn task_doc(&self, task: &str) -> Value {
        self.call("tasks.get_by_id", json!({"task": task}))["task"].clone()
    }

    pub fn wait_status(&self, task: &str, wanted: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(task);
            if wanted.contains(&s.as_str()) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {task} is {s}, not {wanted:?}; log:\n{}",
                    self.log(task)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self, task: &str) -> String {
        let out = self
            .agent()
            .args(["task", "logs", task])
            .output()
            .expect("logs");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `task create ... --queue Q`; returns the id.
    pub fn create(&self, args: &[&str]) -> String {
        let out = run(self
            .agent()
            .args(["task", "create", "--project", "e2e"])
            .args(args));
        out.lines().last().unwrap_or_default().trim().to_string()
    }

    /// A shell task with a literal script.
    pub fn shell_task(&self, name: &str, script: &str, queue: &str) -> String {
        let file = self.dir.path().join(format!("{name}.sh"));
        std::fs::write(&file, script).expect("script");
        self.create(&[
            "--name",
            name,
            "--script",
            file.to_str().unwrap_or_default(),
            "--binary",
            "/bin/bash",
            "--queue",
            queue,
        ])
    }

    pub fn start_daemon(&mut self, args: &[&str]) -> usize {
        let log = std::fs::File::create(
            self.dir
                .path()
                .join(format!("daemon{}.log", self.daemons.len())),
        )
        .expect("log");
        let child = self
            .agent()
            .arg("daemon")
            .args(args)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon");
        self.daemons.push(child);
        self.daemons.len() - 1
    }

    pub fn daemon_output(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon{i}.log"))).unwrap_or_default()
    }

    pub fn workers(&self) -> Vec<String> {
        self.call("workers.get_all", json!({"last_seen": 0}))["workers"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w["id"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

pub fn processes_with(marker: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        {
            continue;
        }
        if String::from_utf8_lossy(&cmd).contains(marker) {
            found.push(pid);
        }
    }
    found
}

/// A bare "remote" and a clone of it holding a project with a requirement.
pub fn project_repo(root: &Path) -> (PathBuf, PathBuf) {
    let remote = root.join("remote.git");
    let work = root.join("work");
    std::fs::create_dir_all(&remote).expect("dir");
    git(&remote, &["init", "--bare", "-q"]);
    git(
        root,
        &["clone", "-q", remote.to_str().unwrap_or_default(), "work"],
    );
    std::fs::write(work.join("requirements.txt"), "six==1.16.0\n").expect("write");
    std::fs::write(
        work.join("main.py"),
        "import six\nprint('six version', six.__version__)\nprint('greeting: committed')\n",
    )
    .expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    (remote, work)
}

pub fn started_order(s: &Setup, tasks: &[String]) -> Vec<String> {
    let mut with_time: Vec<(String, String)> = tasks
        .iter()
        .map(|t| {
            let doc = s.task_doc(t);
            (
                doc["started"].as_str().unwrap_or_default().to_string(),
                t.clone(),
            )
        })
        .collect();
    with_time.sort();
    with_time.into_iter().map(|(_, t)| t).collect()
}

pub fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}
