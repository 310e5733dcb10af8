//! `clearml-agent daemon` and `execute` end to end: the server binary on loopback ports, real
//! git repositories in temp folders, real uv environments with packages from PyPI, real task
//! processes. Each test reads the outcome back through the server (status, console log) and
//! the process table.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use serde_json::{Value, json};

mod common;
use common::{bin, git, run, spawn_server, uv, workspace};

const KEY: &str = "E2EACCESSKEY";
const SECRET: &str = "E2E-SECRET-d41d8cd98f00b204";
const GIT_PASS: &str = "git-pass-5f4dcc3b5aa765d61d83";

fn server_command(dir: &Path, port: u16, files_port: u16) -> Command {
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
struct Setup {
    dir: tempfile::TempDir,
    port: u16,
    files_port: u16,
    server: Option<Child>,
    conf: PathBuf,
    rt: tokio::runtime::Runtime,
    client: Client,
    daemons: Vec<Child>,
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
    fn new(extra_conf: &str) -> Setup {
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
    fn start_server(&mut self) {
        let (child, _, _) = spawn_server(&mut server_command(
            self.dir.path(),
            self.port,
            self.files_port,
        ));
        self.server = Some(child);
        self.wait_server();
    }

    fn wait_server(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill_server(&mut self) {
        if let Some(mut s) = self.server.take() {
            let _ = s.kill(); // SIGKILL
            let _ = s.wait();
        }
    }

    /// The agent binary with this setup's home, config and a shared uv and uv cache.
    fn agent(&self) -> Command {
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

    fn call(&self, endpoint: &str, body: Value) -> Value {
        self.rt
            .block_on(self.client.call(endpoint, body))
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    fn status(&self, task: &str) -> String {
        self.call("tasks.get_by_id", json!({"task": task}))["task"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    fn task_doc(&self, task: &str) -> Value {
        self.call("tasks.get_by_id", json!({"task": task}))["task"].clone()
    }

    fn wait_status(&self, task: &str, wanted: &[&str], timeout: Duration) -> String {
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

    fn log(&self, task: &str) -> String {
        let out = self
            .agent()
            .args(["task", "logs", task])
            .output()
            .expect("logs");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `task create ... --queue Q`; returns the id.
    fn create(&self, args: &[&str]) -> String {
        let out = run(self
            .agent()
            .args(["task", "create", "--project", "e2e"])
            .args(args));
        out.lines().last().unwrap_or_default().trim().to_string()
    }

    /// A shell task with a literal script.
    fn shell_task(&self, name: &str, script: &str, queue: &str) -> String {
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

    fn start_daemon(&mut self, args: &[&str]) -> usize {
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

    fn daemon_output(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("daemon{i}.log"))).unwrap_or_default()
    }

    fn workers(&self) -> Vec<String> {
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

fn processes_with(marker: &str) -> Vec<i32> {
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
fn project_repo(root: &Path) -> (PathBuf, PathBuf) {
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

#[test]
fn git_task_with_requirements_and_diff_completes() {
    let mut s = Setup::new("");
    let (_remote, work) = project_repo(s.dir.path());
    // The uncommitted change the agent must apply.
    std::fs::write(
        work.join("main.py"),
        "import six\nprint('six version', six.__version__)\nprint('greeting: from the diff')\n",
    )
    .expect("write");
    let task = s.create(&[
        "--name",
        "git task",
        "--folder",
        work.to_str().unwrap_or_default(),
        "--script",
        "main.py",
        "--queue",
        "default",
    ]);
    s.start_daemon(&["--queue", "default", "--foreground"]);
    s.wait_status(&task, &["completed"], Duration::from_secs(240));
    let log = s.log(&task);
    assert!(log.contains("six version 1.16.0"), "{log}");
    assert!(log.contains("greeting: from the diff"), "{log}");
    assert!(!log.contains("greeting: committed"), "{log}");
    // The clone and install output is in the console too.
    assert!(log.to_lowercase().contains("six"), "{log}");
    // The environment's packages are written back, the request kept as org_pip.
    let doc = s.task_doc(&task);
    let pip = doc["script"]["requirements"]["pip"]
        .as_str()
        .unwrap_or_default();
    assert!(pip.contains("six==1.16.0"), "{doc}");
}

#[test]
fn failing_task_fails_with_the_exit_code() {
    let mut s = Setup::new("");
    let task = s.shell_task("fails", "echo about to fail\nexit 3\n", "default");
    s.start_daemon(&["--queue", "default"]);
    s.wait_status(&task, &["failed"], Duration::from_secs(60));
    let doc = s.task_doc(&task);
    assert_eq!(
        doc["status_reason"], "worker execution exit code 3",
        "{doc}"
    );
    let log = s.log(&task);
    assert!(log.contains("about to fail"), "{log}");
    assert!(log.contains("Process failed, exit code 3"), "{log}");
}

#[test]
fn abort_stops_the_task_and_its_children_within_a_second() {
    let mut s = Setup::new("");
    let marker = format!("sleep-marker-{}", std::process::id());
    let task = s.shell_task(
        "long",
        &format!(
            "bash -c 'exec -a {marker} sleep 300' &\nsetsid bash -c 'exec -a {marker} sleep 300' &\necho started\nwhile true; do sleep 0.1; done\n"
        ),
        "default",
    );
    s.start_daemon(&["--queue", "default"]);
    s.wait_status(&task, &["in_progress"], Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "task never started its helpers");
        std::thread::sleep(Duration::from_millis(50));
    }
    let stop_at = Instant::now();
    s.call("tasks.stop", json!({"task": task}));
    s.wait_status(&task, &["stopped"], Duration::from_secs(10));
    let took = stop_at.elapsed();
    assert!(took < Duration::from_secs(1), "stopped after {took:?}");
    assert!(
        processes_with(&marker).is_empty(),
        "left behind: {:?}",
        processes_with(&marker)
    );
    let log = s.log(&task);
    assert!(log.contains("User aborted"), "{log}");
}

#[test]
fn sigterm_stops_the_running_task_and_unregisters() {
    let mut s = Setup::new("");
    let task = s.shell_task(
        "until-term",
        "echo running\nwhile true; do sleep 0.1; done\n",
        "default",
    );
    let d = s.start_daemon(&["--queue", "default"]);
    s.wait_status(&task, &["in_progress"], Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.workers().is_empty() {
        assert!(Instant::now() < deadline, "worker never registered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = s.daemons[d].id();
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = s.daemons[d].wait().expect("daemon exits");
    assert!(status.success(), "{status:?}\n{}", s.daemon_output(d));
    assert_eq!(s.status(&task), "stopped");
    assert_eq!(s.task_doc(&task)["status_reason"], "user abort");
    assert!(s.workers().is_empty(), "{:?}", s.workers());
}

fn started_order(s: &Setup, tasks: &[String]) -> Vec<String> {
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

#[test]
fn first_queue_wins_and_fairness_alternates() {
    for fairness in [false, true] {
        let mut s = Setup::new("");
        run(s.agent().args(["queue", "create", "second"]));
        let mut first = Vec::new();
        let mut second = Vec::new();
        for i in 0..2 {
            second.push(s.shell_task(&format!("s{i}"), "echo s\n", "second"));
            first.push(s.shell_task(&format!("f{i}"), "echo f\n", "default"));
        }
        let mut args = vec!["--queue", "default", "second"];
        if fairness {
            args.push("--order-fairness");
        }
        s.start_daemon(&args);
        for t in first.iter().chain(&second) {
            s.wait_status(t, &["completed"], Duration::from_secs(60));
        }
        let all: Vec<String> = first.iter().chain(&second).cloned().collect();
        let order = started_order(&s, &all);
        let expected = if fairness {
            vec![
                first[0].clone(),
                second[0].clone(),
                first[1].clone(),
                second[1].clone(),
            ]
        } else {
            vec![
                first[0].clone(),
                first[1].clone(),
                second[0].clone(),
                second[1].clone(),
            ]
        };
        assert_eq!(order, expected, "fairness={fairness}");
    }
}

#[test]
fn server_outage_loses_and_duplicates_no_line() {
    let mut s = Setup::new("");
    let task = s.shell_task(
        "numbered",
        "for i in $(seq 1 120); do echo \"line $i\"; sleep 0.1; done\n",
        "default",
    );
    s.start_daemon(&["--queue", "default"]);
    s.wait_status(&task, &["in_progress"], Duration::from_secs(60));
    std::thread::sleep(Duration::from_secs(2));
    s.kill_server();
    std::thread::sleep(Duration::from_secs(5));
    s.start_server();
    s.wait_status(&task, &["completed"], Duration::from_secs(120));
    let log = s.log(&task);
    let lines: Vec<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("line "))
        .collect();
    let expected: Vec<String> = (1..=120).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "{log}");
}

/// A git server speaking the dumb HTTP protocol behind Basic auth, for the credentials test.
fn serve_repo_with_auth(bare: &Path, user: &str, pass: &str) -> (u16, Arc<Mutex<bool>>) {
    use base64::Engine as _;
    git(bare, &["update-server-info"]);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
    );
    let root = bare.to_path_buf();
    let stop = Arc::new(Mutex::new(false));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let root = root.clone();
            let expected = expected.clone();
            std::thread::spawn(move || {
                use std::io::{BufRead as _, BufReader};
                let mut reader = BufReader::new(&stream);
                let mut request = String::new();
                let _ = reader.read_line(&mut request);
                let mut authorized = false;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.strip_prefix("Authorization: ") {
                        authorized = v.trim() == expected;
                    }
                }
                let path = request.split_whitespace().nth(1).unwrap_or("/");
                let path = path.split('?').next().unwrap_or("/");
                let rel = path.trim_start_matches("/repo.git/");
                let mut out = &stream;
                if !authorized {
                    let _ = out.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                }
                match std::fs::read(root.join(rel))
                    .ok()
                    .filter(|_| !rel.contains(".."))
                {
                    Some(body) => {
                        let _ = write!(
                            out,
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = out.write_all(&body);
                    }
                    None => {
                        let _ = out.write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    (port, stop)
}

#[test]
fn secrets_stay_out_of_logs_argv_and_console() {
    let dir = tempfile::tempdir().expect("tmp");
    let (remote, _work) = project_repo(dir.path());
    let (port, _stop) = serve_repo_with_auth(&remote, "gituser", GIT_PASS);
    let mut s = Setup::new(&format!(
        "agent.git_user: gituser\nagent.git_pass: \"{GIT_PASS}\"\n"
    ));
    let url = format!("http://127.0.0.1:{port}/repo.git");
    let task = s.create(&[
        "--name",
        "private repo",
        "--repo",
        &url,
        "--branch",
        "main",
        "--script",
        "main.py",
        "--queue",
        "default",
    ]);
    s.start_daemon(&["--queue", "default", "--foreground"]);
    // Watch every process's argv while the task runs.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut leaked_argv = Vec::new();
    loop {
        for secret in [SECRET, GIT_PASS] {
            for pid in processes_with(secret) {
                leaked_argv.push((pid, secret));
            }
        }
        let st = s.status(&task);
        if st == "completed" || st == "failed" {
            break;
        }
        assert!(Instant::now() < deadline, "task did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(leaked_argv.is_empty(), "secrets in argv: {leaked_argv:?}");
    let log = s.log(&task);
    assert_eq!(s.status(&task), "completed", "{log}");
    assert!(log.contains("six version 1.16.0"), "{log}");
    let console = s.daemon_output(0);
    for secret in [SECRET, GIT_PASS] {
        assert!(!log.contains(secret), "secret in the task log");
        assert!(!console.contains(secret), "secret in the daemon's console");
    }
    let doc = s.task_doc(&task).to_string();
    assert!(!doc.contains(GIT_PASS), "git password stored on the task");
}

#[test]
fn execute_runs_one_task_here_and_list_shows_workers() {
    let mut s = Setup::new("agent.worker_id: \"listed-worker\"\n");
    let task = s.shell_task("once", "echo executed here\n", "default");
    let out = s
        .agent()
        .args(["execute", "--id", &task])
        .output()
        .expect("execute");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("executed here"), "{stdout}");
    assert_eq!(s.status(&task), "completed");
    assert!(s.log(&task).contains("executed here"));
    // The task left its queue.
    let q = s.call("queues.get_default", json!({}));
    let q = s.call("queues.get_by_id", json!({"queue": q["id"]}));
    assert_eq!(q["queue"]["entries"], json!([]));

    // --require-queue refuses a task that is not queued.
    let out = s
        .agent()
        .args(["execute", "--require-queue", "--id", &task])
        .output()
        .expect("execute");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not queued"));

    s.start_daemon(&["--queue", "default"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = run(s.agent().args(["list"]));
        if out.contains("listed-worker") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "list never showed the worker: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Issue 10, item 10: a symlink committed to the repository must not lead the working folder
/// or the entry point outside it.
#[test]
fn symlinks_in_the_repository_do_not_lead_outside() {
    let mut s = Setup::new("");
    let outside = s.dir.path().join("outside");
    std::fs::create_dir_all(&outside).expect("dir");
    let marker = format!("ran-outside-{}", std::process::id());
    std::fs::write(outside.join("main.py"), format!("print('{marker}')\n")).expect("write");
    let remote = s.dir.path().join("links.git");
    let work = s.dir.path().join("links");
    std::fs::create_dir_all(&remote).expect("dir");
    git(&remote, &["init", "--bare", "-q"]);
    git(
        s.dir.path(),
        &["clone", "-q", remote.to_str().unwrap_or_default(), "links"],
    );
    std::fs::write(work.join("main.py"), "print('inside')\n").expect("write");
    std::os::unix::fs::symlink(&outside, work.join("escape")).expect("symlink");
    std::os::unix::fs::symlink(outside.join("main.py"), work.join("linked.py")).expect("symlink");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "links"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let make = |name: &str| {
        s.create(&[
            "--name",
            name,
            "--folder",
            work.to_str().unwrap_or_default(),
            "--script",
            "main.py",
        ])
    };
    // The working folder through the link; then the entry point through the other link.
    let by_dir = make("by working dir");
    s.call(
        "tasks.edit",
        json!({"task": by_dir, "script": {"working_dir": "escape", "entry_point": "main.py",
               "repository": remote.to_str().unwrap_or_default(), "branch": "main",
               "diff": ""}}),
    );
    let by_entry = make("by entry point");
    s.call(
        "tasks.edit",
        json!({"task": by_entry, "script": {"working_dir": ".", "entry_point": "linked.py",
               "repository": remote.to_str().unwrap_or_default(), "branch": "main",
               "diff": ""}}),
    );
    for t in [&by_dir, &by_entry] {
        s.call("tasks.enqueue", json!({"task": t, "queue_name": "default"}));
    }
    s.start_daemon(&["--queue", "default"]);
    for t in [&by_dir, &by_entry] {
        s.wait_status(t, &["failed", "completed"], Duration::from_secs(240));
        let log = s.log(t);
        assert!(!log.contains(&marker), "the script outside ran:\n{log}");
        assert_eq!(s.status(t), "failed", "{log}");
        assert!(log.contains("outside the repository"), "{log}");
    }
}

/// Issue 10, item 6: `--stop` without ids stops every agent of this worker name, and never a
/// process that a planted pid file names.
#[test]
fn stop_stops_all_of_this_workers_agents_and_trusts_no_planted_pid_file() {
    let name = format!("stopper{}", std::process::id());
    let mut s = Setup::new(&format!("agent.worker_name: \"{name}\"\n"));
    let tmp = s.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    for i in 0..2 {
        let log =
            std::fs::File::create(s.dir.path().join(format!("stop-daemon{i}.log"))).expect("log");
        let child = s
            .agent()
            .env("TMPDIR", &tmp)
            .args(["daemon", "--queue", "default"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon");
        s.daemons.push(child);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.workers().len() < 2 {
        assert!(Instant::now() < deadline, "workers: {:?}", s.workers());
        std::thread::sleep(Duration::from_millis(100));
    }
    // A pid file naming an unrelated process, in this worker name's format.
    let mut victim = Command::new("sleep").arg("60").spawn().expect("sleep");
    std::fs::write(
        tmp.join(format!(".clearmlagent_{}_7.tmp", victim.id())),
        format!("{name}:7\n7"),
    )
    .expect("pid file");
    let out = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--stop"])
        .output()
        .expect("stop");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Not stopping pid"), "{text}");
    assert_eq!(
        victim.try_wait().expect("wait"),
        None,
        "the planted pid was killed"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    for d in &mut s.daemons {
        loop {
            if d.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "an agent was not stopped:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = victim.kill();
    let _ = victim.wait();
}

/// Issue 10, item 5: after `kill -9` of the daemon, the task's processes do not live on, and the
/// next daemon in the slot marks the task failed.
#[test]
fn a_killed_daemons_task_is_cleaned_up_by_the_next_one() {
    let mut s = Setup::new("");
    let tmp = s.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let marker = format!("orphan-marker-{}", std::process::id());
    let task = s.shell_task(
        "orphaned",
        &format!(
            "bash -c 'exec -a {marker} sleep 300' &\nsetsid bash -c 'exec -a {marker} sleep 300' &\necho started\nwhile true; do sleep 0.1; done\n"
        ),
        "default",
    );
    let start = |s: &mut Setup, n: usize| {
        let log =
            std::fs::File::create(s.dir.path().join(format!("kill9-daemon{n}.log"))).expect("log");
        let child = s
            .agent()
            .env("TMPDIR", &tmp)
            .args(["daemon", "--queue", "default"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("daemon");
        s.daemons.push(child);
        s.daemons.len() - 1
    };
    let first = start(&mut s, 0);
    s.wait_status(&task, &["in_progress"], Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_with(&marker).len() < 2 {
        assert!(Instant::now() < deadline, "task never started its helpers");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The task's first process (the daemon's child, which became the task's shell).
    let daemon_pid = s.daemons[first].id() as i32;
    let leaders: Vec<i32> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|st| {
                    let rest = st.rsplit_once(')')?.1.to_string();
                    rest.split_whitespace().nth(1)?.parse::<i32>().ok()
                })
                == Some(daemon_pid)
        })
        .collect();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    s.daemons[first].kill().expect("kill -9"); // SIGKILL
    let _ = s.daemons[first].wait();
    let killed_at = Instant::now();
    // The leader dies with the daemon, before any new daemon starts.
    while pid_alive(leaders[0]) {
        assert!(
            killed_at.elapsed() < Duration::from_secs(5),
            "the task's leader outlived the daemon"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    start(&mut s, 1);
    loop {
        let status = s.status(&task);
        let left = processes_with(&marker);
        if status != "in_progress" && left.is_empty() {
            break;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "60 s after kill -9: task {status}, left behind {left:?}\n{}",
            std::fs::read_to_string(s.dir.path().join("kill9-daemon1.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let doc = s.task_doc(&task);
    assert_eq!(doc["status"], "failed", "{doc}");
    let message = doc["status_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("was killed while running the task"),
        "{doc}"
    );
    assert!(s.log(&task).contains("was killed while running the task"));
}

fn pid_alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|st| {
            st.rsplit_once(')')
                .map(|(_, r)| !r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// Issue 12: `daemon --stop --wait` lets the running task finish (completed, not stopped), takes
/// nothing new (the next task stays queued) and the daemon exits; `--status` lists the agent
/// with its running task.
#[test]
fn stop_wait_drains_and_status_lists_the_agent() {
    let name = format!("drainer{}", std::process::id());
    let mut s = Setup::new(&format!("agent.worker_name: \"{name}\"\n"));
    let tmp = s.dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("tmp");
    let flag = s.dir.path().join("go");
    let first = s.shell_task(
        "drained",
        &format!(
            "echo started\nwhile [ ! -e {} ]; do sleep 0.1; done\necho done\n",
            flag.display()
        ),
        "default",
    );
    let log = std::fs::File::create(s.dir.path().join("drain-daemon.log")).expect("log");
    let child = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--queue", "default"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon");
    s.daemons.push(child);
    s.wait_status(&first, &["in_progress"], Duration::from_secs(60));
    let second = s.shell_task("left-queued", "echo second\n", "default");

    let status = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--status"])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(status.status.success(), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no line for the agent:\n{text}"));
    assert!(line.contains(&s.daemons[0].id().to_string()), "{text}");
    assert!(line.contains(&first), "{text}");
    assert!(line.contains("default"), "{text}");

    let stopper = s
        .agent()
        .env("TMPDIR", &tmp)
        .args(["daemon", "--stop", "--wait"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("stop --wait");
    // The daemon still runs its task while the stopper waits.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&first), "in_progress");
    assert!(s.daemons[0].try_wait().expect("wait").is_none());
    std::fs::write(&flag, "").expect("flag");
    let out = stopper.wait_with_output().expect("stopper exits");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.daemons[0].try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the daemon did not exit");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.status(&first), "completed");
    assert_eq!(s.status(&second), "queued");
}

/// Issue 12: `-O` and `--log-level` reach the task's process (PYTHONOPTIMIZE, CLEARML_LOG_LEVEL)
/// in the daemon and in `execute`.
#[test]
fn run_flags_reach_the_task_environment() {
    let mut s = Setup::new("");
    // `execute` first, while no daemon could take the task.
    let other = s.shell_task(
        "env-flags-exec",
        "echo \"opt=[$PYTHONOPTIMIZE] level=[$CLEARML_LOG_LEVEL]\"\n",
        "default",
    );
    let out = s
        .agent()
        .args(["execute", "--id", &other, "-O", "--log-level", "ERROR"])
        .output()
        .expect("execute");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = s.log(&other);
    assert!(log.contains("opt=[1] level=[ERROR]"), "{log}\n{text}");

    let task = s.shell_task(
        "env-flags",
        "echo \"opt=[$PYTHONOPTIMIZE] level=[$CLEARML_LOG_LEVEL] user=[$CLEARML_AGENT_GIT_USER]\"\n",
        "default",
    );
    s.start_daemon(&[
        "--queue",
        "default",
        "-OO",
        "--log-level",
        "warning",
        "--git-user",
        "someone",
    ]);
    s.wait_status(&task, &["completed"], Duration::from_secs(60));
    let log = s.log(&task);
    assert!(
        log.contains("opt=[2] level=[WARNING] user=[someone]"),
        "{log}"
    );
}

/// Issue 12: `--services-mode` runs three tasks at once, each under its own
/// `<id>:service:<task>` worker, and SIGTERM stops all of them (marked stopped).
#[test]
fn services_mode_runs_tasks_together_and_sigterm_stops_them_all() {
    let mut s = Setup::new("");
    let tasks: Vec<String> = (0..3)
        .map(|i| {
            s.shell_task(
                &format!("service{i}"),
                "echo serving\nwhile true; do sleep 0.1; done\n",
                "default",
            )
        })
        .collect();
    let d = s.start_daemon(&["--queue", "default", "--services-mode"]);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let states: Vec<String> = tasks.iter().map(|t| s.status(t)).collect();
        if states.iter().all(|st| st == "in_progress") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all running at once: {states:?}\n{}",
            s.daemon_output(d)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let workers = s.workers();
        if tasks.iter().all(|t| {
            workers
                .iter()
                .any(|w| w.ends_with(&format!(":service:{t}")))
        }) {
            break;
        }
        assert!(Instant::now() < deadline, "workers: {workers:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = s.daemons[d].id();
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = s.daemons[d].wait().expect("daemon exits");
    assert!(status.success(), "{status:?}\n{}", s.daemon_output(d));
    for t in &tasks {
        assert_eq!(s.status(t), "stopped", "{}", s.daemon_output(d));
    }
    assert!(s.workers().is_empty(), "{:?}", s.workers());
}

/// Issue 12: `--services-mode 2` never runs more than two tasks at once.
#[test]
fn services_mode_limit_is_kept() {
    let mut s = Setup::new("");
    let tasks: Vec<String> = (0..3)
        .map(|i| s.shell_task(&format!("short{i}"), "sleep 2\necho ok\n", "default"))
        .collect();
    let d = s.start_daemon(&["--queue", "default", "--services-mode", "2"]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut most = 0;
    loop {
        let states: Vec<String> = tasks.iter().map(|t| s.status(t)).collect();
        most = most.max(states.iter().filter(|st| *st == "in_progress").count());
        if states.iter().all(|st| st == "completed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{states:?}\n{}",
            s.daemon_output(d)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(most, 2, "{}", s.daemon_output(d));
}

/// Issue 12: outside its `agent.downtime` window the daemon takes no task but stays
/// registered; with `agent.reload_config` an edit of clearml.conf (the downtime removed)
/// takes effect without a restart.
#[test]
fn downtime_holds_tasks_and_reload_config_picks_up_the_edit() {
    let mut s = Setup::new("agent.reload_config: true\nagent.downtime: [\"0-24\"]\n");
    let task = s.shell_task("after-downtime", "echo ran\n", "default");
    let log = std::fs::File::create(s.dir.path().join("reload-daemon.log")).expect("log");
    let child = s
        .agent()
        .env("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC", "0.3")
        .args(["daemon", "--queue", "default"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("daemon");
    s.daemons.push(child);
    let read = |s: &Setup| {
        std::fs::read_to_string(s.dir.path().join("reload-daemon.log")).unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !read(&s).contains("Outside the working hours") {
        assert!(Instant::now() < deadline, "{}", read(&s));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&task), "queued", "{}", read(&s));
    assert_eq!(s.workers().len(), 1, "the idle daemon must stay registered");
    let conf = std::fs::read_to_string(&s.conf).expect("conf");
    std::fs::write(&s.conf, conf.replace("agent.downtime: [\"0-24\"]\n", "")).expect("edit");
    s.wait_status(&task, &["completed"], Duration::from_secs(60));
    assert!(read(&s).contains("Schedule removed"), "{}", read(&s));
}

/// Issue 12: `--dynamic-gpus --gpus 0-2 --queue dual=2 single=1` gives each task its own GPUs
/// (visible devices and worker id), never shares one, and holds a task back until enough
/// GPUs are free. (No GPU is needed: only the assignment is checked.)
#[test]
fn dynamic_gpus_split_the_pool_between_tasks() {
    let mut s = Setup::new("agent.worker_name: \"gpubox\"\n");
    let flag = s.dir.path().join("release");
    let d = s.start_daemon(&[
        "--dynamic-gpus",
        "--gpus",
        "0-2",
        "--queue",
        "dual=2",
        "single=1",
        "--create-queue",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.workers().is_empty() {
        assert!(Instant::now() < deadline, "{}", s.daemon_output(d));
        std::thread::sleep(Duration::from_millis(100));
    }
    let script = format!(
        "echo \"gpus=[$CUDA_VISIBLE_DEVICES]\"\nwhile [ ! -e {} ]; do sleep 0.1; done\n",
        flag.display()
    );
    let a = s.shell_task("dual-a", &script, "dual");
    s.wait_status(&a, &["in_progress"], Duration::from_secs(60));
    let b = s.shell_task("single-b", &script, "single");
    s.wait_status(&b, &["in_progress"], Duration::from_secs(60));
    let c = s.shell_task("dual-c", &script, "dual");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(s.status(&c), "queued", "{}", s.daemon_output(d));
    let workers = s.workers();
    assert!(
        workers.contains(&"gpubox:gpu0,1".to_string()),
        "{workers:?}"
    );
    assert!(workers.contains(&"gpubox:gpu2".to_string()), "{workers:?}");
    std::fs::write(&flag, "").expect("flag");
    for t in [&a, &b, &c] {
        s.wait_status(t, &["completed"], Duration::from_secs(60));
    }
    assert!(s.log(&a).contains("gpus=[0,1]"), "{}", s.log(&a));
    assert!(s.log(&b).contains("gpus=[2]"), "{}", s.log(&b));
    assert!(s.log(&c).contains("gpus=[0,1]"), "{}", s.log(&c));
}

/// Issue 12: `execute --standalone-mode` builds no environment: the task runs with the Python
/// as it is (not in a virtual environment) and nothing is created in agent.venvs_dir.
#[test]
fn standalone_mode_runs_with_the_python_as_it_is() {
    let s = Setup::new("");
    let file = s.dir.path().join("standalone.py");
    std::fs::write(
        &file,
        "import sys\nprint('in-venv=%s' % (sys.prefix != sys.base_prefix))\n",
    )
    .expect("script");
    let task = s.create(&[
        "--name",
        "standalone",
        "--script",
        file.to_str().unwrap_or_default(),
        "--queue",
        "default",
    ]);
    let out = s
        .agent()
        .args(["execute", "--id", &task, "--standalone-mode"])
        .output()
        .expect("execute");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    let log = s.log(&task);
    assert!(log.contains("in-venv=False"), "{log}\n{text}");
    assert!(log.contains("Standalone mode"), "{log}");
    let venvs = s.dir.path().join("venvs");
    let built: Vec<_> = std::fs::read_dir(&venvs)
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().join("bin/python").exists())
                .collect()
        })
        .unwrap_or_default();
    assert!(built.is_empty(), "a venv was built: {built:?}");
}

/// Issue 12: `--downtime` holds new tasks in services mode too.
#[test]
fn services_mode_keeps_the_downtime() {
    let mut s = Setup::new("");
    let task = s.shell_task("held", "echo ran\n", "default");
    let d = s.start_daemon(&[
        "--queue",
        "default",
        "--services-mode",
        "--downtime",
        "0-24",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.workers().is_empty() {
        assert!(Instant::now() < deadline, "{}", s.daemon_output(d));
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.status(&task), "queued", "{}", s.daemon_output(d));
    let pid = s.daemons[d].id();
    run(Command::new("kill").args(["-TERM", &pid.to_string()]));
    let status = s.daemons[d].wait().expect("daemon exits");
    assert!(status.success(), "{}", s.daemon_output(d));
    assert_eq!(s.status(&task), "queued");
}

/// Issue 12: `build --install-globally` builds an environment that sees the system's
/// site-packages (agent.package_manager.system_site_packages for that build).
#[test]
fn build_install_globally_sees_system_site_packages() {
    let s = Setup::new("");
    let file = s.dir.path().join("glob.py");
    std::fs::write(&file, "print('hi')\n").expect("script");
    let task = s.create(&[
        "--name",
        "globally",
        "--script",
        file.to_str().unwrap_or_default(),
    ]);
    for (flag, target, wanted) in [
        (None, "plain-env", "false"),
        (Some("--install-globally"), "global-env", "true"),
    ] {
        let dir = s.dir.path().join(target);
        let mut cmd = s.agent();
        cmd.args(["build", "--id", &task, "--target"]).arg(&dir);
        if let Some(f) = flag {
            cmd.arg(f);
        }
        let out = cmd.output().expect("build");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        let cfg = std::fs::read_to_string(dir.join("pyvenv.cfg")).expect("pyvenv.cfg");
        assert!(
            cfg.contains(&format!("include-system-site-packages = {wanted}")),
            "{flag:?}: {cfg}"
        );
    }
}
