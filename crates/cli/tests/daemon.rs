//! `clearml-agent daemon` and `execute` end to end: the server binary on loopback ports, real
//! git repositories in temp folders, real uv environments with packages from PyPI, real task
//! processes. Each test reads the outcome back through the server (status, console log) and
//! the process table.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
mod daemon_setup;
use common::{git, run};
use daemon_setup::*;

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
