//! `clearml-agent task|queue|worker ...` against the embedded server, run as real processes:
//! the server binary on free loopback ports with a temporary data dir, the commands with a
//! temporary clearml.conf and a clean environment.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;
use serde_json::{Value, json};

const KEY: &str = "TESTKEY";
const SECRET: &str = "TESTSECRET";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The server process and its files; killed when dropped.
struct Server {
    child: Child,
    dir: tempfile::TempDir,
    base: String,
    conf: PathBuf,
    http: reqwest::Client,
    rt: tokio::runtime::Runtime,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Output of one command.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, files_port) = (free_port(), free_port());
        let data = dir.path().join("data");
        let child = StdCommand::new(assert_cmd::cargo::cargo_bin("clearml-agent"))
            .args(["server", "--port", &port.to_string()])
            .args(["--files-port", &files_port.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .args(["--access-key", KEY, "--secret-key", SECRET])
            .env_clear()
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("server starts");
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

    fn wait_ready(&self) {
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

    fn home(&self) -> &Path {
        self.dir.path()
    }

    /// The agent binary with the test config and a clean environment.
    fn agent(&self) -> Command {
        let mut cmd = Command::cargo_bin("clearml-agent").expect("binary");
        cmd.env_clear()
            .env("HOME", self.home())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config-file")
            .arg(&self.conf)
            .timeout(Duration::from_secs(60));
        cmd
    }

    fn run(&self, args: &[&str]) -> Out {
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
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert_eq!(
            o.code, 0,
            "{args:?} failed\nstdout: {}\nstderr: {}",
            o.stdout, o.stderr
        );
        o.stdout
    }

    /// Runs a command that must fail with exit code 1; returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
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
    fn create(&self, args: &[&str]) -> String {
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
    fn call(&self, endpoint: &str, body: Value) -> Value {
        self.try_call(endpoint, body)
            .unwrap_or_else(|e| panic!("{endpoint}: {e}"))
    }

    fn try_call(&self, endpoint: &str, body: Value) -> Result<Value, String> {
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
    fn add_log(&self, task: &str, lines: &[(i64, String)]) {
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

    fn task(&self, id: &str) -> Value {
        self.call("tasks.get_by_id", json!({ "task": id }))["task"].clone()
    }

    fn queue_id(&self, name: &str) -> String {
        let qs = self.call("queues.get_all", json!({ "name": format!("^{name}$") }));
        qs["queues"][0]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no queue {name}: {qs}"))
            .to_string()
    }

    fn queue_entries(&self, queue_id: &str) -> Vec<String> {
        let q = self.call("queues.get_by_id", json!({ "queue": queue_id }));
        q["queue"]["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| e["task"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    fn now_ms() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as i64
    }
}

// ------------------------------------------------------------------------------------------
// git helpers

fn git(dir: &Path, args: &[&str]) -> String {
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

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

/// What the agent does with the task's script section: clone, check out the commit, apply
/// the diff with `git apply --unidiff-zero`. Returns the checkout.
fn reproduce(script: &Value, into: &Path) -> PathBuf {
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

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

// ------------------------------------------------------------------------------------------
// task create

#[test]
fn create_from_local_folder_stores_commit_and_uncommitted_diff() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let repo = work.path().join("proj");
    std::fs::create_dir_all(&repo).expect("mkdir");
    git(&repo, &["init", "-q"]);
    write(&repo.join("train.py"), "print('v1')\n");
    write(&repo.join("lib/util.py"), "X = 1\n");
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    // Uncommitted: a changed file and a new, untracked entry script.
    write(&repo.join("train.py"), "print('v2, not committed')\n");
    write(&repo.join("tools/extra.py"), "print('untracked')\n");
    let reqs = work.path().join("reqs.txt");
    write(&reqs, "numpy==1.26.4\n# a comment\npandas\n");

    let repo_arg = repo.to_str().expect("utf-8 path");
    let id = server.create(&[
        "--project",
        "Folder Project",
        "--name",
        "from folder",
        "--folder",
        repo_arg,
        "--script",
        "train.py",
        "--requirements",
        reqs.to_str().expect("utf-8"),
        "--packages",
        "tqdm>=4",
        "--args",
        "lr=0.5",
        "epochs=3",
        "--args=--batch-size=64",
    ]);
    let t = server.task(&id);
    let script = &t["script"];
    let root = std::fs::canonicalize(&repo).expect("canonical");
    assert_eq!(script["repository"], json!(root.to_str()), "{script}");
    assert_eq!(script["version_num"], json!(head));
    assert_eq!(script["branch"], json!("main"));
    assert_eq!(script["entry_point"], json!("train.py"));
    assert_eq!(script["working_dir"], json!("."));
    assert_eq!(script["binary"], json!("python3"));
    let diff = script["diff"].as_str().expect("diff");
    assert!(
        diff.starts_with("diff --git a/train.py b/train.py"),
        "{diff}"
    );
    assert!(diff.contains("+print('v2, not committed')"), "{diff}");
    // Untracked files other than the entry point stay out of the diff.
    assert!(!diff.contains("untracked"), "{diff}");
    assert_eq!(
        script["requirements"]["pip"],
        json!("numpy==1.26.4\n# a comment\npandas\ntqdm>=4")
    );
    let args = &t["hyperparams"]["Args"];
    assert_eq!(args["lr"]["value"], json!("0.5"));
    assert_eq!(args["lr"]["section"], json!("Args"));
    assert_eq!(args["lr"]["name"], json!("lr"));
    assert_eq!(args["epochs"]["value"], json!("3"));
    assert_eq!(args["batch_size"]["value"], json!("64"), "{args}");
    assert_eq!(t["status"], json!("created"));
    assert_eq!(t["type"], json!("training"));
    let project = server.call("projects.get_by_id", json!({"project": t["project"]}));
    assert_eq!(project["project"]["name"], json!("Folder Project"));

    // What the agent will do reproduces the working tree.
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(script, scratch.path());
    assert_eq!(
        read(&checkout.join("train.py")),
        "print('v2, not committed')\n"
    );

    // A second task in the same project reuses it; an untracked entry script travels in the diff.
    let id2 = server.create(&[
        "--project",
        "Folder Project",
        "--name",
        "untracked entry",
        "--folder",
        repo_arg,
        "--script",
        "tools/extra.py",
        "--cwd",
        "lib",
        "--packages",
        "requests",
    ]);
    let t2 = server.task(&id2);
    assert_eq!(t2["project"], t["project"]);
    assert_eq!(t2["script"]["working_dir"], json!("lib"));
    assert_eq!(t2["script"]["entry_point"], json!("../tools/extra.py"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(&t2["script"], scratch.path());
    assert_eq!(
        read(&checkout.join("tools/extra.py")),
        "print('untracked')\n"
    );
    assert_eq!(
        read(&checkout.join("train.py")),
        "print('v2, not committed')\n"
    );
    let projects = server.call("projects.get_all", json!({"name": "^Folder Project$"}));
    assert_eq!(projects["projects"].as_array().map(Vec::len), Some(1));
}

#[test]
fn create_from_clone_uses_origin_and_carries_unpushed_commits_in_the_diff() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let upstream = work.path().join("upstream.git");
    std::fs::create_dir_all(&upstream).expect("mkdir");
    git(&upstream, &["init", "-q", "--bare"]);
    let clone = work.path().join("clone");
    git(
        work.path(),
        &["clone", "-q", upstream.to_str().expect("utf-8"), "clone"],
    );
    write(&clone.join("src/train.py"), "print('pushed')\n");
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "pushed"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    git(&clone, &["branch", "-q", "--set-upstream-to=origin/main"]);
    let pushed = git(&clone, &["rev-parse", "HEAD"]);
    write(&clone.join("src/train.py"), "print('local commit')\n");
    git(&clone, &["commit", "-q", "-am", "local"]);
    write(&clone.join("src/new.txt"), "staged\n");
    git(&clone, &["add", "src/new.txt"]);

    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "from clone",
        "--folder",
        clone.to_str().expect("utf-8"),
        "--script",
        clone.join("src/train.py").to_str().expect("utf-8"),
        "--packages",
        "numpy",
    ]);
    let script = server.task(&id)["script"].clone();
    assert_eq!(script["repository"], json!(upstream.to_str()), "{script}");
    assert_eq!(script["version_num"], json!(pushed));
    assert_eq!(script["branch"], json!("main"));
    assert_eq!(script["entry_point"], json!("src/train.py"));
    let scratch = tempfile::tempdir().expect("tempdir");
    let checkout = reproduce(&script, scratch.path());
    assert_eq!(
        read(&checkout.join("src/train.py")),
        "print('local commit')\n"
    );
    assert_eq!(read(&checkout.join("src/new.txt")), "staged\n");

    // A token in the origin URL is not stored on the task.
    git(
        &clone,
        &[
            "remote",
            "set-url",
            "origin",
            "https://user:s3cret@git.example.com/org/repo.git",
        ],
    );
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "token url",
        "--folder",
        clone.to_str().expect("utf-8"),
        "--script",
        "src/train.py",
        "--packages",
        "numpy",
    ]);
    assert_eq!(
        server.task(&id)["script"]["repository"],
        json!("https://git.example.com/org/repo.git")
    );
}

#[test]
fn create_from_folder_outside_git_stores_the_literal_script() {
    let server = Server::start();
    let work = tempfile::tempdir().expect("tempdir");
    let dir = work.path().join("plain");
    let text = "import sys\nprint('hello', sys.argv)\n";
    write(&dir.join("hello.py"), text);
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "literal",
        "--folder",
        dir.to_str().expect("utf-8"),
        "--script",
        "hello.py",
    ]);
    let script = server.task(&id)["script"].clone();
    assert_eq!(script["repository"], json!(""), "{script}");
    assert_eq!(script["diff"], json!(text));
    assert_eq!(script["entry_point"], json!("hello.py"));
    assert_eq!(script["working_dir"], json!("."));
    assert_eq!(script["binary"], json!("python3"));

    // A shell script gets bash.
    write(&dir.join("run.sh"), "echo hi\n");
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "shell",
        "--script",
        dir.join("run.sh").to_str().expect("utf-8"),
    ]);
    assert_eq!(server.task(&id)["script"]["binary"], json!("/bin/bash"));

    // A missing script is an error, and nothing is created.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "P",
        "--name",
        "missing",
        "--folder",
        dir.to_str().expect("utf-8"),
        "--script",
        "nope.py",
    ]);
    assert!(err.contains("script nope.py not found"), "{err}");
}

#[test]
fn create_from_repo_with_branch_docker_and_queue() {
    let server = Server::start();
    let qid = server.ok(&["queue", "create", "gpu-queue"]);
    let qid = qid.lines().last().unwrap_or_default().trim().to_string();
    let id = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "from repo",
        "--repo",
        "https://github.com/example/project.git",
        "--branch",
        "dev",
        "--script",
        "./src/train.py",
        "--cwd",
        "src",
        "--docker",
        "python:3.11",
        "--docker-args",
        "--ipc=host -e A=1",
        "--type",
        "data_processing",
        "--tags",
        "one",
        "two",
        "--queue",
        "gpu-queue",
    ]);
    let t = server.task(&id);
    let script = &t["script"];
    assert_eq!(
        script["repository"],
        json!("https://github.com/example/project.git")
    );
    assert_eq!(script["branch"], json!("dev"));
    assert!(
        script["version_num"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    );
    assert_eq!(script["entry_point"], json!("train.py"));
    assert_eq!(script["working_dir"], json!("src"));
    assert_eq!(script["binary"], json!("python3"));
    assert_eq!(script["diff"], json!(""));
    assert_eq!(t["container"]["image"], json!("python:3.11"));
    assert_eq!(t["container"]["arguments"], json!("--ipc=host -e A=1"));
    assert_eq!(t["type"], json!("data_processing"));
    assert_eq!(t["tags"], json!(["one", "two"]));
    assert_eq!(t["status"], json!("queued"));
    assert_eq!(t["execution"]["queue"], json!(qid));
    assert_eq!(server.queue_entries(&qid), vec![id.clone()]);

    // --commit instead of --branch.
    let id2 = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "at commit",
        "--repo",
        "git@github.com:example/project.git",
        "--commit",
        "0123456789abcdef0123456789abcdef01234567",
        "--script",
        "train.sh",
    ]);
    let s2 = server.task(&id2)["script"].clone();
    assert_eq!(
        s2["version_num"],
        json!("0123456789abcdef0123456789abcdef01234567")
    );
    assert_eq!(s2["binary"], json!("/bin/bash"));
    assert_eq!(s2["working_dir"], json!("."));

    // A module entry point.
    let id3 = server.create(&[
        "--project",
        "Remote/Sub",
        "--name",
        "module",
        "--repo",
        "https://github.com/example/project.git",
        "--module",
        "pkg.train --epochs 3",
    ]);
    let s3 = server.task(&id3)["script"].clone();
    assert_eq!(s3["entry_point"], json!("-m pkg.train --epochs 3"));
    assert_eq!(s3["binary"], json!("python3"));

    // An unknown queue: a clear error, and no task left behind.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "Remote/Sub",
        "--name",
        "never created",
        "--repo",
        "https://github.com/example/project.git",
        "--script",
        "train.py",
        "--queue",
        "nosuch",
    ]);
    assert!(
        err.contains(
            "queue nosuch does not exist; create it with `clearml-agent queue create nosuch`"
        ),
        "{err}"
    );
    let left = server.call("tasks.get_all", json!({"name": "^never created$"}));
    assert_eq!(left["tasks"], json!([]));

    // Malformed --args.
    let err = server.fails(&[
        "task",
        "create",
        "--project",
        "P",
        "--name",
        "bad args",
        "--repo",
        "https://github.com/example/project.git",
        "--script",
        "train.py",
        "--args",
        "novalue",
    ]);
    assert!(err.contains("key=value"), "{err}");
}

// ------------------------------------------------------------------------------------------
// enqueue, abort, show, list

#[test]
fn enqueue_show_abort_and_list() {
    let server = Server::start();
    let repo = [
        "--repo",
        "https://github.com/example/project.git",
        "--script",
        "train.py",
    ];
    let mut args = vec!["--project", "Ops", "--name", "draft task"];
    args.extend_from_slice(&repo);
    let id = server.create(&args);
    assert_eq!(server.task(&id)["status"], json!("created"));

    // Enqueue by name into the default queue (no --queue).
    server.ok(&["task", "enqueue", "draft task"]);
    let default_q = server.queue_id("default");
    assert_eq!(server.task(&id)["status"], json!("queued"));
    assert_eq!(server.queue_entries(&default_q), vec![id.clone()]);

    let show = server.ok(&["task", "show", &id]);
    for want in [
        format!("id:           {id}"),
        "name:         draft task".to_string(),
        "project:      Ops".to_string(),
        "status:       queued".to_string(),
        "repository:   https://github.com/example/project.git".to_string(),
        "entry point:  train.py".to_string(),
    ] {
        assert!(show.contains(&want), "{want:?} not in\n{show}");
    }
    assert!(
        show.contains(&format!("queue:        default ({default_q}), position 1")),
        "{show}"
    );
    let as_json: Value = serde_json::from_str(&server.ok(&["task", "show", &id, "--json"]))
        .expect("show --json is JSON");
    assert_eq!(as_json["id"], json!(id));

    // Abort a queued task: stopped at once and out of the queue.
    let o = server.run(&["task", "abort", &id]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(o.stderr.contains("stopped"), "{}", o.stderr);
    assert_eq!(server.task(&id)["status"], json!("stopped"));
    assert!(server.queue_entries(&default_q).is_empty());

    // Enqueue a stopped task again, into a named queue.
    server.ok(&["queue", "create", "second"]);
    server.ok(&["task", "enqueue", &id, "--queue", "second"]);
    let second = server.queue_id("second");
    assert_eq!(server.queue_entries(&second), vec![id.clone()]);

    // A running task: the worker is asked to stop it.
    let mut args = vec!["--project", "Ops", "--name", "running task"];
    args.extend_from_slice(&repo);
    let run_id = server.create(&args);
    server.call(
        "tasks.started",
        json!({"task": run_id, "force": true, "status_message": "launch by agent"}),
    );
    server.call(
        "workers.status_report",
        json!({"worker": "box:0", "timestamp": Server::now_ms(), "task": run_id}),
    );
    let o = server.run(&["task", "abort", &run_id]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stderr.contains("worker box:0 was asked to stop it"),
        "{}",
        o.stderr
    );
    let t = server.task(&run_id);
    assert_eq!(t["status"], json!("in_progress"));
    assert_eq!(t["status_message"], json!("stopping"));
    let show = server.ok(&["task", "show", &run_id]);
    assert!(show.contains("last worker:  box:0"), "{show}");

    // Enqueueing a running task is refused with the reason.
    let err = server.fails(&["task", "enqueue", &run_id, "--queue", "second"]);
    assert!(err.contains("it is in_progress"), "{err}");

    // Abort of a draft: nothing to abort.
    let mut args = vec!["--project", "Other", "--name", "another draft"];
    args.extend_from_slice(&repo);
    let draft = server.create(&args);
    let err = server.fails(&["task", "abort", &draft]);
    assert!(err.contains("it is created"), "{err}");

    // list, filtered.
    let all = server.ok(&["task", "list"]);
    for want in [&id, &run_id, &draft] {
        assert!(all.contains(want.as_str()), "{want} not in\n{all}");
    }
    assert!(all.starts_with("ID"), "{all}");
    let ops = server.ok(&["task", "list", "--project", "Ops"]);
    assert!(
        ops.contains(&id) && ops.contains(&run_id) && !ops.contains(&draft),
        "{ops}"
    );
    let running = server.ok(&["task", "list", "--status", "in_progress"]);
    assert!(
        running.contains(&run_id) && !running.contains(&id),
        "{running}"
    );
    let listed: Value =
        serde_json::from_str(&server.ok(&["task", "list", "--project", "Other", "--json"]))
            .expect("JSON");
    assert_eq!(listed[0]["id"], json!(draft));
    assert_eq!(listed.as_array().map(Vec::len), Some(1));
    let err = server.fails(&["task", "list", "--project", "No Such Project"]);
    assert!(
        err.contains("project No Such Project does not exist"),
        "{err}"
    );
}

#[test]
fn unknown_ids_give_one_line_errors() {
    let server = Server::start();
    let missing = "0123456789abcdef0123456789abcdef";
    for cmd in [
        vec!["task", "show", missing],
        vec!["task", "abort", missing],
        vec!["task", "logs", missing],
        vec!["task", "enqueue", missing, "--queue", "default"],
    ] {
        let err = server.fails(&cmd);
        assert!(
            err.contains(&format!("unknown task id {missing}")),
            "{cmd:?}: {err}"
        );
    }
    let err = server.fails(&["task", "show", "no such name"]);
    assert!(err.contains("unknown task id no such name"), "{err}");

    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "tiny",
        "--repo",
        "https://example.com/r.git",
        "--script",
        "a.py",
    ]);
    let err = server.fails(&["task", "enqueue", &id, "--queue", "nosuch"]);
    assert!(
        err.contains(
            "queue nosuch does not exist; create it with `clearml-agent queue create nosuch`"
        ),
        "{err}"
    );

    // A server that is not there.
    let conf = server.home().join("down.conf");
    let port = free_port();
    write(
        &conf,
        &format!(
            "api {{ api_server: \"http://127.0.0.1:{port}\", credentials {{ access_key: a, secret_key: b }} }}\n"
        ),
    );
    let out = Command::cargo_bin("clearml-agent")
        .expect("binary")
        .env_clear()
        .env("HOME", server.home())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config-file")
        .arg(&conf)
        .args(["queue", "list"])
        .timeout(Duration::from_secs(60))
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the server"), "{err}");
}

// ------------------------------------------------------------------------------------------
// logs

#[test]
fn logs_print_every_line_in_order() {
    let server = Server::start();
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "logged",
        "--repo",
        "https://example.com/r.git",
        "--script",
        "a.py",
    ]);
    // 1203 lines over more than two pages, many sharing a timestamp (as lines of one batch
    // do), one spanning two lines, the later batch sent first (lines that share a timestamp
    // keep their arrival order, so the split falls between timestamps).
    let t0 = Server::now_ms() - 100_000;
    let lines: Vec<(i64, String)> = (0..1203)
        .map(|i| (t0 + i / 7, format!("line {i:04}")))
        .collect();
    server.add_log(&id, &lines[602..]);
    server.add_log(&id, &lines[..602]);
    server.add_log(&id, &[(t0 + 1000, "multi\nline".to_string())]);
    let out = server.ok(&["task", "logs", &id]);
    let mut want: Vec<String> = lines.iter().map(|(_, m)| m.clone()).collect();
    want.push("multi".into());
    want.push("line".into());
    let got: Vec<&str> = out.lines().collect();
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!("line {i}: got {:?}, want {:?}", got[i], want[i]);
    }
    assert_eq!(got.len(), want.len(), "number of lines");

    // By name too; an empty log prints nothing.
    let id2 = server.create(&[
        "--project",
        "P",
        "--name",
        "silent",
        "--repo",
        "https://example.com/r.git",
        "--script",
        "a.py",
    ]);
    assert_eq!(server.ok(&["task", "logs", "silent"]), "");
    let _ = id2;
}

#[test]
fn logs_follow_until_the_task_ends() {
    let server = Server::start();
    for (end, code) in [("tasks.completed", 0), ("tasks.failed", 1)] {
        let id = server.create(&[
            "--project",
            "P",
            "--name",
            "followed",
            "--repo",
            "https://example.com/r.git",
            "--script",
            "a.py",
        ]);
        server.call("tasks.started", json!({"task": id, "force": true}));
        let t0 = Server::now_ms();
        server.add_log(&id, &[(t0, "first".into()), (t0, "second".into())]);
        let child = StdCommand::new(assert_cmd::cargo::cargo_bin("clearml-agent"))
            .env_clear()
            .env("HOME", server.home())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("--config-file")
            .arg(&server.conf)
            .args(["task", "logs", &id, "--follow"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("follow starts");
        std::thread::sleep(Duration::from_millis(1500));
        // Same timestamp as the lines already printed, then later ones.
        server.add_log(&id, &[(t0, "third".into()), (t0 + 5, "fourth".into())]);
        std::thread::sleep(Duration::from_millis(1500));
        server.add_log(&id, &[(t0 + 10, "last".into())]);
        server.call(end, json!({"task": id, "force": true}));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut child = child;
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "--follow did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().expect("output");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            ["first", "second", "third", "fourth", "last"],
            "stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(code), "{end}");
    }
}

// ------------------------------------------------------------------------------------------
// queues, workers

#[test]
fn queue_list_and_create() {
    let server = Server::start();
    let out = server.ok(&["queue", "create", "cpu-queue", "--tags", "fast", "cheap"]);
    let qid = out.lines().last().unwrap_or_default().trim().to_string();
    assert_eq!(qid.len(), 32, "{out}");
    let err = server.fails(&["queue", "create", "cpu-queue"]);
    assert!(err.contains("queue cpu-queue already exists"), "{err}");

    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "queued",
        "--repo",
        "https://example.com/r.git",
        "--script",
        "a.py",
        "--queue",
        "cpu-queue",
    ]);
    let _ = id;
    let list = server.ok(&["queue", "list"]);
    let header = list.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("QUEUED"),
        "{list}"
    );
    let row = list
        .lines()
        .find(|l| l.starts_with("cpu-queue "))
        .unwrap_or_else(|| panic!("no cpu-queue row in\n{list}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["cpu-queue", qid.as_str(), "1", "fast,cheap"],
        "{row}"
    );
    assert!(
        list.lines().any(|l| l.starts_with("default (default)")),
        "{list}"
    );
    let as_json: Value =
        serde_json::from_str(&server.ok(&["queue", "list", "--json"])).expect("JSON");
    assert!(
        as_json
            .as_array()
            .is_some_and(|qs| qs.iter().any(|q| q["id"] == json!(qid))),
        "{as_json}"
    );
}

#[test]
fn worker_list_after_status_report() {
    let server = Server::start();
    assert_eq!(server.ok(&["worker", "list"]).lines().count(), 1);
    let id = server.create(&[
        "--project",
        "P",
        "--name",
        "worked on",
        "--repo",
        "https://example.com/r.git",
        "--script",
        "a.py",
    ]);
    let qid = server.queue_id("default");
    server.call(
        "workers.status_report",
        json!({"worker": "gpu-box:1", "timestamp": Server::now_ms(), "queues": [qid],
               "task": id, "machine_stats": {"cpu_usage": [1.0]}}),
    );
    server.call(
        "workers.register",
        json!({"worker": "idle-box:2", "queues": [qid]}),
    );
    let out = server.ok(&["worker", "list"]);
    let row = out
        .lines()
        .find(|l| l.starts_with("gpu-box:1"))
        .unwrap_or_else(|| panic!("no worker row in\n{out}"));
    assert!(row.contains("default"), "{row}");
    assert!(row.contains(&format!("{id} (worked on)")), "{row}");
    assert!(out.lines().any(|l| l.starts_with("idle-box:2")), "{out}");
    let as_json: Value =
        serde_json::from_str(&server.ok(&["worker", "list", "--json"])).expect("JSON");
    assert_eq!(as_json.as_array().map(Vec::len), Some(2), "{as_json}");
}
