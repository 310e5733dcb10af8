//! `daemon --docker` end to end: the server binary on loopback ports, a real git repository in
//! a temp folder, the real docker engine with the local test image
//! (`clearml-agent-test/python:bookworm`, built by `scripts/test-image`), real uv environments
//! built inside the container. Each test reads the outcome back through the server (status,
//! console log) and docker itself (containers left).
//!
//! The tests skip (with a line saying why) when docker or the test image is missing. The
//! proxy's CA bundle reaches the container the way a user behind a corporate proxy would pass
//! it: `agent.extra_docker_arguments` mounting `$PIP_CERT` and setting `SSL_CERT_FILE`.

#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use serde_json::{Value, json};

mod common;
use common::{bin, git, run, spawn_server, uv, workspace};

const KEY: &str = "DOCKERE2EKEY";
const SECRET: &str = "DOCKER-E2E-SECRET-8f14e45fceea167a";
const IMAGE: &str = "clearml-agent-test/python:bookworm";

/// Whether docker answers (the test is skipped, saying so, when it does not); the test image is
/// built by `scripts/test-image` when missing.
fn docker_ready() -> bool {
    let up = Command::new("docker")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !up {
        eprintln!("SKIPPED: docker is not usable here");
        return false;
    }
    let out = Command::new(workspace().join("scripts/test-image"))
        .arg(IMAGE)
        .output()
        .expect("scripts/test-image");
    assert!(
        out.status.success(),
        "scripts/test-image failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    true
}

/// Docker containers (all states) with this label value.
fn containers_of(label: &str, value: &str) -> Vec<String> {
    containers_in("docker", label, value)
}

/// Containers (all states) of `engine` (docker or podman) with this label value.
fn containers_in(engine: &str, label: &str, value: &str) -> Vec<String> {
    let out = Command::new(engine)
        .args(["ps", "-a", "-q", "--filter"])
        .arg(format!("label={label}={value}"))
        .output()
        .expect("ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

struct Setup {
    dir: tempfile::TempDir,
    server: Child,
    conf: PathBuf,
    rt: tokio::runtime::Runtime,
    client: Client,
    daemons: Vec<Child>,
    worker: String,
}

impl Drop for Setup {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
        for c in containers_of("clearml-worker-id", &self.worker) {
            let _ = Command::new("docker").args(["rm", "-f", &c]).output();
        }
    }
}

impl Setup {
    fn new(worker: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let mut cmd = Command::new(bin());
        cmd.args(["server", "--port", "0", "--files-port", "0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("CLEARML_SERVER_ACCESS_KEY", KEY)
            .env("CLEARML_SERVER_SECRET_KEY", SECRET)
            .env("HOME", &home)
            .stderr(Stdio::null());
        let (server, port, files_port) = spawn_server(&mut cmd);
        let conf = dir.path().join("clearml.conf");
        let base = format!("http://127.0.0.1:{port}");
        std::fs::write(
            &conf,
            format!(
                "api {{\n  api_server: \"{base}\"\n  web_server: \"{base}\"\n  files_server: \"http://127.0.0.1:{files_port}\"\n  credentials {{ access_key: \"{KEY}\", secret_key: \"{SECRET}\" }}\n}}\n\
                 agent {{\n  worker_id: \"{worker}\"\n  venvs_dir: \"{}\"\n  vcs_cache.path: \"{}\"\n  venvs_cache.path: \"{}\"\n  package_manager.type: uv\n\
                   extra_docker_arguments: [\"-v\", \"$PIP_CERT:/etc/clearml-ca.pem:ro\", \"-e\", \"SSL_CERT_FILE=/etc/clearml-ca.pem\", \"-e\", \"PIP_CERT=/etc/clearml-ca.pem\"]\n\
                   docker_init_bash_script: [\"echo init-script-ran\"]\n\
                   extra_docker_shell_script: [\"echo extra-script-ran\"]\n}}\n",
                dir.path().join("venvs").display(),
                dir.path().join("vcs").display(),
                dir.path().join("home/.clearml/venvs-cache").display(),
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
        Setup {
            dir,
            server,
            conf,
            rt,
            client,
            daemons: Vec::new(),
            worker: worker.to_string(),
        }
    }

    fn agent(&self) -> Command {
        let mut c = Command::new(bin());
        c.arg("--config-file")
            .arg(&self.conf)
            .env("HOME", self.dir.path().join("home"))
            .env("CLEARML_BOOTSTRAP_UV_EXEC", uv())
            .env("UV_CACHE_DIR", workspace().join(".cache/uv-cache"))
            .env_remove("CLEARML_WORKER_ID")
            .env_remove("SSH_AUTH_SOCK")
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

    fn wait_status(&self, task: &str, wanted: &[&str], timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(task);
            if wanted.contains(&s.as_str()) {
                return s;
            }
            if Instant::now() > deadline {
                panic!(
                    "task {task} is {s}, not {wanted:?}; log:\n{}\ndaemon:\n{}",
                    self.log(task),
                    self.daemon_output(0)
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

    fn wait_log(&self, task: &str, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log(task).contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the log of {task} ({}):\n{}\ndaemon:\n{}",
                self.status(task),
                self.log(task),
                self.daemon_output(0)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Writes a task's script into the test folder; its path, for `--script`.
    fn script(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("script");
        path.display().to_string()
    }

    fn create(&self, args: &[&str]) -> String {
        let out = run(self
            .agent()
            .args(["task", "create", "--project", "docker"])
            .args(args));
        out.lines().last().unwrap_or_default().trim().to_string()
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
}

/// A bare "remote" and a clone of it holding a project with a requirement.
fn project_repo(root: &Path, main: &str) -> PathBuf {
    let remote = root.join("remote.git");
    let work = root.join("work");
    std::fs::create_dir_all(&remote).expect("dir");
    git(&remote, &["init", "--bare", "-q"]);
    git(
        root,
        &["clone", "-q", remote.to_str().unwrap_or_default(), "work"],
    );
    std::fs::write(work.join("requirements.txt"), "six==1.16.0\n").expect("write");
    std::fs::write(work.join("main.py"), main).expect("write");
    git(&work, &["add", "."]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    work
}

const MAIN: &str = "import os, sys, six\n\
print('six version', six.__version__)\n\
print('python at', sys.executable)\n\
print('greeting from', os.environ.get('GREETING'))\n\
print('in docker image', os.environ.get('CLEARML_DOCKER_IMAGE'))\n";

fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

#[test]
fn docker_task_runs_in_its_image_with_setup_scripts() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-run");
    let work = project_repo(s.dir.path(), MAIN);
    let setup = s.dir.path().join("setup.sh");
    std::fs::write(&setup, "echo task-setup-script-ran\n").expect("setup");
    let task = s.create(&[
        "--name",
        "docker task",
        "--folder",
        work.to_str().unwrap_or_default(),
        "--script",
        "main.py",
        "--docker",
        IMAGE,
        "--docker-args",
        "-e GREETING=container-args",
        "--docker-bash-setup-script",
        setup.to_str().unwrap_or_default(),
        "--queue",
        "default",
    ]);
    s.start_daemon(&["--queue", "default", "--foreground", "--docker"]);
    s.wait_status(&task, &["completed"], Duration::from_secs(300));
    let log = s.log(&task);
    assert!(log.contains("six version 1.16.0"), "{log}");
    assert!(log.contains("greeting from container-args"), "{log}");
    assert!(log.contains(&format!("in docker image {IMAGE}")), "{log}");
    // The environment is built with the image's Python, in the venvs mount.
    assert!(
        log.contains("python at /root/.clearml/venvs/builds/"),
        "{log}"
    );
    for line in [
        "init-script-ran",
        "extra-script-ran",
        "task-setup-script-ran",
    ] {
        assert!(log.contains(line), "{line} missing:\n{log}");
    }
    // The printed docker command is there, and the secret is nowhere in the console.
    assert!(log.contains("Starting container: docker run"), "{log}");
    assert!(
        !log.contains(SECRET),
        "the secret key is in the console:\n{log}"
    );
    assert!(containers_of("clearml-task-id", &task).is_empty());

    // The second run of the same requirements restores the venv from the cache.
    let again = s.create(&[
        "--name",
        "docker task again",
        "--folder",
        work.to_str().unwrap_or_default(),
        "--script",
        "main.py",
        "--docker",
        IMAGE,
        "--queue",
        "default",
    ]);
    s.wait_status(&again, &["completed"], Duration::from_secs(180));
    let log = s.log(&again);
    assert!(log.contains("Using Cached environment"), "{log}");
    assert!(log.contains("six version 1.16.0"), "{log}");
}

#[test]
fn abort_and_sigterm_stop_the_container() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-abort");
    let script = s.script(
        "sleep.py",
        "import time\nprint('sleeper started', flush=True)\ntime.sleep(600)\n",
    );
    let create = |s: &Setup, name: &str| {
        s.create(&[
            "--name", name, "--script", &script, "--docker", IMAGE, "--queue", "default",
        ])
    };
    let task = create(&s, "sleeper");
    let d = s.start_daemon(&["--queue", "default", "--docker"]);
    s.wait_log(&task, "sleeper started", Duration::from_secs(180));
    assert_eq!(containers_of("clearml-task-id", &task).len(), 1);
    let started = Instant::now();
    s.call("tasks.stop", json!({"task": task, "force": true}));
    s.wait_status(&task, &["stopped"], Duration::from_secs(10));
    // The server shows `stopped` at once; what counts is the container going away.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !containers_of("clearml-task-id", &task).is_empty() {
        assert!(Instant::now() < deadline, "the container is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    eprintln!("abort -> container gone in {took:?}");
    // docker stop -t 1 (the test grace is 2 s), then kill: about 1.5 s here.
    assert!(took < Duration::from_millis(2500), "abort took {took:?}");
    s.wait_log(&task, "Process aborted by user", Duration::from_secs(10));
    assert_eq!(s.status(&task), "stopped");

    // Daemon SIGTERM: the running task is stopped and its container removed.
    let task2 = create(&s, "sleeper 2");
    s.wait_log(&task2, "sleeper started", Duration::from_secs(120));
    sigterm(&s.daemons[d]);
    let _ = s.daemons[d].wait();
    assert_eq!(s.status(&task2), "stopped");
    assert!(containers_of("clearml-task-id", &task2).is_empty());
}

#[test]
fn missing_image_fails_with_dockers_message() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-missing");
    let script = s.script("hello.py", "print('hello')\n");
    let task = s.create(&[
        "--name",
        "missing image",
        "--script",
        &script,
        "--docker",
        "clearml-agent-test/no-such-image:never",
        "--queue",
        "default",
    ]);
    s.start_daemon(&["--queue", "default", "--docker"]);
    s.wait_status(&task, &["failed"], Duration::from_secs(120));
    let log = s.log(&task);
    assert!(
        log.contains("clearml-agent-test/no-such-image:never is not available"),
        "{log}"
    );
    // docker's own words follow (here: no registry reachable).
    assert!(log.contains("Error response from daemon"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}

#[test]
fn predecessor_containers_are_removed_and_their_tasks_failed() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-predecessor");
    let script = s.script("hello.py", "print('hello')\n");
    // A task the dead agent was running: in progress, its container still there.
    let task = s.create(&["--name", "orphan", "--script", &script]);
    s.call("tasks.started", json!({"task": task, "force": true}));
    let out = Command::new("docker")
        .args(["run", "-d", "--name"])
        .arg(format!("clearml-id-{task}"))
        .args(["-l", "clearml-worker-id=docker-e2e-predecessor"])
        .arg("-l")
        .arg(format!("clearml-task-id={task}"))
        .args([IMAGE, "sleep", "600"])
        .output()
        .expect("docker run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(containers_of("clearml-task-id", &task).len(), 1);
    s.start_daemon(&["--queue", "default", "--docker"]);
    s.wait_status(&task, &["failed"], Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !containers_of("clearml-task-id", &task).is_empty() {
        assert!(Instant::now() < deadline, "the container is still there");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.daemon_output(0).contains("left by an earlier agent"));
}

#[test]
fn execute_docker_runs_one_task_in_the_given_image() {
    if !docker_ready() {
        return;
    }
    let s = Setup::new("docker-e2e-execute");
    let script = s.script(
        "hello.py",
        "import os\nprint('hello from', os.environ['CLEARML_DOCKER_IMAGE'])\n",
    );
    // No image on the task: the CLI's image is used.
    let task = s.create(&["--name", "execute docker", "--script", &script]);
    let out = s
        .agent()
        .args(["execute", "--id", &task, "--docker", IMAGE])
        .output()
        .expect("execute");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s.status(&task), "completed");
    let log = s.log(&task);
    assert!(log.contains(&format!("hello from {IMAGE}")), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    let doc = s.call("tasks.get_by_id", json!({"task": task}));
    assert!(containers_of("clearml-task-id", &task).is_empty());
    // The task named no image: the one used is written back to its container.
    assert_eq!(doc["task"]["container"]["image"], json!(IMAGE), "{doc}");
}

/// Not a timed test: `cargo test -p clearml-agent --test docker_mode bench -- --ignored
/// --nocapture` prints a warm docker task's enqueue-to-completed time next to a bare
/// `docker run --rm IMAGE python3 -c pass` (docs/benchmarks.md).
#[test]
#[ignore]
fn bench_warm_docker_task() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-bench");
    let work = project_repo(s.dir.path(), MAIN);
    s.start_daemon(&["--queue", "default", "--docker"]);
    let mut times = Vec::new();
    for i in 0..4 {
        let task = s.create(&[
            "--name",
            &format!("bench {i}"),
            "--folder",
            work.to_str().unwrap_or_default(),
            "--script",
            "main.py",
            "--docker",
            IMAGE,
        ]);
        let started = Instant::now();
        s.call(
            "tasks.enqueue",
            json!({"task": task, "queue_name": "default"}),
        );
        s.wait_status(&task, &["completed"], Duration::from_secs(300));
        times.push(started.elapsed());
    }
    let mut bare = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let st = Command::new("docker")
            .args(["run", "--rm", IMAGE, "python3", "-c", "pass"])
            .status()
            .expect("docker run");
        assert!(st.success());
        bare.push(started.elapsed());
    }
    eprintln!("docker task enqueue->completed (cold, then warm): {times:?}");
    eprintln!("bare docker run --rm {IMAGE} python3 -c pass: {bare:?}");
}

#[test]
fn build_docker_commits_an_image_the_task_then_runs_in_without_installing() {
    if !docker_ready() {
        return;
    }
    let s = Setup::new("docker-e2e-build");
    let work = project_repo(s.dir.path(), MAIN);
    let task = s.create(&[
        "--name",
        "build me",
        "--folder",
        work.to_str().unwrap_or_default(),
        "--script",
        "main.py",
        "--docker",
        IMAGE,
    ]);
    let target = format!("clearml-agent-test/built:{task}");
    let out = s
        .agent()
        .args(["build", "--id", &task, "--docker", "--target", &target])
        .output()
        .expect("build");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("Committed image {target}")),
        "{text}"
    );
    assert!(!text.contains(SECRET), "{text}");
    // The task was not touched by the build.
    assert_eq!(s.status(&task), "created");
    assert!(containers_of("clearml-task-id", &task).is_empty());

    // The task's own image wins over `--docker IMAGE`: point the task at the built image.
    s.call(
        "tasks.edit",
        json!({"task": task, "force": true, "container": {"image": target}}),
    );
    let out = s
        .agent()
        .args(["execute", "--id", &task, "--docker"])
        .output()
        .expect("execute");
    let _ = Command::new("docker")
        .args(["image", "rm", "-f", &target])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = s.log(&task);
    assert!(
        log.contains("Using the environment built into the image: /opt/clearml/env"),
        "{log}"
    );
    assert!(log.contains("six version 1.16.0"), "{log}");
    assert!(
        log.contains("python at /opt/clearml/env/bin/python"),
        "{log}"
    );
    assert!(!log.contains("cache miss"), "{log}");
}

/// Issue 12: services mode with docker runs several containers at once; SIGTERM stops the
/// tasks and removes their containers.
#[test]
fn services_mode_runs_several_containers() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-services");
    let script = s.script(
        "serve.py",
        "import time\nprint('service up', flush=True)\ntime.sleep(600)\n",
    );
    let tasks: Vec<String> = (0..2)
        .map(|i| {
            s.create(&[
                "--name",
                &format!("service {i}"),
                "--script",
                &script,
                "--docker",
                IMAGE,
                "--queue",
                "default",
            ])
        })
        .collect();
    let d = s.start_daemon(&["--queue", "default", "--services-mode", "--docker"]);
    for t in &tasks {
        s.wait_log(t, "service up", Duration::from_secs(240));
    }
    for t in &tasks {
        assert_eq!(
            containers_of("clearml-task-id", t).len(),
            1,
            "{}",
            s.daemon_output(d)
        );
        assert_eq!(s.status(t), "in_progress");
    }
    sigterm(&s.daemons[d]);
    let _ = s.daemons[d].wait();
    for t in &tasks {
        assert_eq!(s.status(t), "stopped", "{}", s.daemon_output(d));
        assert!(containers_of("clearml-task-id", t).is_empty());
    }
}

/// An image with an older glibc than this host's (Debian bullseye, glibc 2.31), built by
/// `scripts/test-image` when missing; `None` (saying why) when it cannot be built here.
fn old_glibc_image() -> Option<&'static str> {
    const OLD: &str = "clearml-agent-test/python:bullseye";
    let out = Command::new(workspace().join("scripts/test-image"))
        .arg(OLD)
        .env("TEST_IMAGE_SUITE", "bullseye")
        .output()
        .expect("scripts/test-image");
    if !out.status.success() {
        eprintln!(
            "SKIPPED: cannot build {OLD}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    Some(OLD)
}

/// A binary built on this host needs its glibc (2.36); an image with glibc 2.31 cannot run it.
/// Without a portable binary the task fails saying both versions and how to get one; with one
/// (`CLEARML_AGENT_DOCKER_BINARY`, or the build output of `scripts/build-portable` when it is
/// there), that one is mounted and the task completes.
#[test]
fn an_image_older_than_the_binary_gets_the_portable_binary_or_a_clear_failure() {
    if !docker_ready() {
        return;
    }
    let Some(old) = old_glibc_image() else {
        return;
    };
    let s = Setup::new("docker-e2e-old-glibc");
    let script = s.script("hello.py", "print('hello from the old image')\n");
    let task = s.create(&["--name", "old glibc", "--script", &script]);
    let running = bin();
    let needs = clearml_docker::required_glibc(&running).expect("elf");
    let portable: Vec<clearml_docker::BinaryCandidate> =
        clearml_docker::candidate_paths(None, &running)
            .into_iter()
            .skip(1)
            .map(|(p, o)| clearml_docker::BinaryCandidate::read(p, o))
            .filter(|c| matches!(c.needs, Ok(n) if n.is_none_or(|n| n <= (2, 31))))
            .collect();
    if needs.is_none_or(|n| n <= (2, 31)) {
        eprintln!("SKIPPED: {} itself runs with glibc 2.31", running.display());
        return;
    }
    let out = s
        .agent()
        .env_remove("CLEARML_AGENT_DOCKER_BINARY")
        .args(["execute", "--id", &task, "--docker", old])
        .output()
        .expect("execute");
    let log = s.log(&task);
    if let Some(p) = portable.first() {
        eprintln!(
            "a portable binary is here ({}): it must be used",
            p.path.display()
        );
        assert!(out.status.success(), "{log}");
        assert!(log.contains("hello from the old image"), "{log}");
        assert!(
            log.contains(&format!("has glibc 2.31, older than {}", running.display())),
            "{log}"
        );
    } else {
        fails_clearly(&s, &task, old, needs, out.status.success(), &log);
    }

    // With CLEARML_AGENT_DOCKER_BINARY naming a portable build, when one is given.
    if let Ok(p) = std::env::var("CLEARML_TEST_PORTABLE_BINARY") {
        let task = s.create(&["--name", "old glibc portable", "--script", &script]);
        let out = s
            .agent()
            .env("CLEARML_AGENT_DOCKER_BINARY", &p)
            .args(["execute", "--id", &task, "--docker", old])
            .output()
            .expect("execute");
        let log = s.log(&task);
        assert!(out.status.success(), "{log}");
        assert!(log.contains("hello from the old image"), "{log}");
        assert!(
            log.contains(&format!("-v {p}:/opt/clearml/bin/clearml-agent:ro")),
            "{log}"
        );
    } else {
        eprintln!(
            "(the explicit half needs CLEARML_TEST_PORTABLE_BINARY=<scripts/build-portable's output>)"
        );
    }
}

/// The task failed before any container ran, saying what the image has, what the binary
/// needs and how to get a portable one.
fn fails_clearly(
    s: &Setup,
    task: &str,
    old: &str,
    needs: Option<(u32, u32)>,
    succeeded: bool,
    log: &str,
) {
    eprintln!("{log}");
    assert!(!succeeded, "{log}");
    assert_eq!(s.status(task), "failed");
    let (a, b) = needs.unwrap_or_default();
    for want in [
        format!("image {old} has glibc 2.31"),
        format!("needs glibc {a}.{b}"),
        "scripts/build-portable".to_string(),
        "CLEARML_AGENT_DOCKER_BINARY".to_string(),
    ] {
        assert!(log.contains(&want), "{want:?} missing:\n{log}");
    }
    // The failure came before any container ran.
    assert!(!log.contains("Starting container"), "{log}");
    assert!(containers_of("clearml-task-id", task).is_empty());
    // The image's glibc is cached by image id (a later task does not probe it again).
    let cache = s.dir.path().join("venvs/.docker/image-glibc.json");
    let text = std::fs::read_to_string(&cache).expect("glibc cache");
    assert!(text.contains("\"2.31\""), "{text}");
}

/// Whether podman can run the test image here: it is loaded from docker when missing.
fn podman_ready() -> bool {
    let ok = |c: &mut Command| {
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("podman").arg("--version")) {
        eprintln!("SKIPPED: podman is not installed");
        return false;
    }
    if !ok(Command::new("podman").args(["image", "exists", IMAGE])) {
        let load = Command::new("sh")
            .arg("-c")
            .arg(format!("docker save {IMAGE} | podman load"))
            .output()
            .expect("podman load");
        if !load.status.success() {
            eprintln!(
                "SKIPPED: cannot load {IMAGE} into podman: {}",
                String::from_utf8_lossy(&load.stderr)
            );
            return false;
        }
    }
    true
}

/// `daemon --docker --podman`: the same task runs in podman's container, with podman's
/// labels, and nothing is left behind.
#[test]
fn podman_runs_a_task() {
    if !docker_ready() || !podman_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-podman");
    let work = project_repo(s.dir.path(), MAIN);
    let task = s.create(&[
        "--name",
        "podman task",
        "--folder",
        work.to_str().unwrap_or_default(),
        "--script",
        "main.py",
        "--docker",
        IMAGE,
        "--docker-args",
        "-e GREETING=podman-args",
        "--queue",
        "default",
    ]);
    s.start_daemon(&["--queue", "default", "--foreground", "--docker", "--podman"]);
    let status = s.wait_status(&task, &["completed", "failed"], Duration::from_secs(300));
    let log = s.log(&task);
    assert_eq!(
        status,
        "completed",
        "{log}\ndaemon:\n{}",
        s.daemon_output(0)
    );
    assert!(log.contains("Starting container: podman run"), "{log}");
    assert!(log.contains("six version 1.16.0"), "{log}");
    assert!(log.contains("greeting from podman-args"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    assert!(containers_in("podman", "clearml-task-id", &task).is_empty());

    // Abort: podman stops the container and nothing is left.
    let script = s.script(
        "sleep.py",
        "import time\nprint('sleeper started', flush=True)\ntime.sleep(600)\n",
    );
    let sleeper = s.create(&[
        "--name",
        "podman sleeper",
        "--script",
        &script,
        "--docker",
        IMAGE,
        "--queue",
        "default",
    ]);
    s.wait_log(&sleeper, "sleeper started", Duration::from_secs(180));
    assert_eq!(
        containers_in("podman", "clearml-task-id", &sleeper).len(),
        1
    );
    let started = Instant::now();
    s.call("tasks.stop", json!({"task": sleeper, "force": true}));
    s.wait_status(&sleeper, &["stopped"], Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(15);
    while !containers_in("podman", "clearml-task-id", &sleeper).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the podman container is still there"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("podman abort -> container gone in {:?}", started.elapsed());
}

const OWNER_MAIN: &str = "import json, os, urllib.request\n\
print('agent key in the task:', os.environ.get('CLEARML_API_ACCESS_KEY', 'none'))\n\
conf = open(os.environ['CLEARML_CONFIG_FILE']).read()\n\
print('keys in the container config:', 'secret_key' in conf)\n\
req = urllib.request.Request(os.environ['CLEARML_API_HOST'] + '/users.get_current_user',\n\
    data=b'{}', headers={'Authorization': 'Bearer ' + os.environ['CLEARML_AUTH_TOKEN'],\n\
                         'Content-Type': 'application/json'})\n\
print('acting as', json.load(urllib.request.urlopen(req))['data']['user']['name'])\n";

/// Issue 12: `--use-owner-token` in docker mode: the container gets the owner's token and a
/// configuration without the agent's keys, and the task's calls act as its owner.
#[test]
fn docker_task_runs_as_its_owner_without_the_agents_keys() {
    if !docker_ready() {
        return;
    }
    let mut s = Setup::new("docker-e2e-owner");
    let base = s.client.config().api_server.clone();
    let call = |key: (&str, &str), as_user: Option<&str>, endpoint: &str| -> Value {
        s.rt.block_on(async {
            let mut r = reqwest::Client::new()
                .post(format!("{base}/{endpoint}"))
                .basic_auth(key.0, Some(key.1))
                .json(&json!({"name": "alice"}));
            if let Some(u) = as_user {
                r = r.header("X-Clearml-Impersonate-As", u);
            }
            let env: Value = r.send().await.expect("send").json().await.expect("json");
            assert_eq!(env["meta"]["result_code"], 200, "{endpoint}: {env}");
            env["data"].clone()
        })
    };
    let alice = call((KEY, SECRET), None, "auth.create_user")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cred = call((KEY, SECRET), Some(&alice), "auth.create_credentials")["credentials"].clone();
    let work = project_repo(s.dir.path(), OWNER_MAIN);
    let out = run(s
        .agent()
        .env(
            "CLEARML_API_ACCESS_KEY",
            cred["access_key"].as_str().expect("key"),
        )
        .env(
            "CLEARML_API_SECRET_KEY",
            cred["secret_key"].as_str().expect("secret"),
        )
        .args([
            "task",
            "create",
            "--project",
            "docker",
            "--name",
            "alice in docker",
        ])
        .args(["--folder", work.to_str().unwrap_or_default()])
        .args([
            "--script", "main.py", "--docker", IMAGE, "--queue", "default",
        ]));
    let task = out.lines().last().unwrap_or_default().trim().to_string();
    let d = s.start_daemon(&[
        "--queue",
        "default",
        "--foreground",
        "--docker",
        "--use-owner-token",
    ]);
    let status = s.wait_status(&task, &["completed", "failed"], Duration::from_secs(300));
    let log = s.log(&task);
    assert_eq!(status, "completed", "{log}\n{}", s.daemon_output(d));
    assert!(log.contains("agent key in the task: none"), "{log}");
    assert!(log.contains("keys in the container config: False"), "{log}");
    assert!(log.contains("acting as alice"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
}
