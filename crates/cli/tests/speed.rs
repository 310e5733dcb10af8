//! Issue 18: the `--debug` timing line of an `execute`, and the abort watch, pushed by our
//! server (`task_long_poll`) or polled. No test here asserts a speed: the timings are read
//! by `bench/`, and the abort tests only ask that the abort arrives by the path under test.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::json;

mod common;
use common::task_server::Server;

fn shell_task(s: &Server, name: &str, script: &str) -> String {
    let file = s.home().join(format!("{name}.sh"));
    std::fs::write(&file, script).expect("script");
    s.create(&[
        "--project",
        "speed",
        "--name",
        name,
        "--script",
        file.to_str().unwrap_or_default(),
        "--binary",
        "/bin/bash",
        "--queue",
        "default",
    ])
}

fn status(s: &Server, task: &str) -> String {
    s.task(task)["status"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn wait_status(s: &Server, task: &str, wanted: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let now = status(s, task);
        if now == wanted {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {task} is {now}, not {wanted}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon(s: &Server, env: &[(&str, &str)], log: &Path) -> Daemon {
    let log = std::fs::File::create(log).expect("log");
    let mut c = Command::new(assert_cmd::cargo::cargo_bin("clearml-agent"));
    c.env_clear()
        .env("HOME", s.home())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config-file")
        .arg(&s.conf)
        .args(["daemon", "--queue", "default"])
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    for (k, v) in env {
        c.env(k, v);
    }
    Daemon(c.spawn().expect("daemon"))
}

#[test]
fn debug_execute_prints_the_per_step_timing_line() {
    let s = Server::start();
    let task = shell_task(&s, "timed", "echo timed task ran\n");
    let out = s.run(&["--debug", "execute", "--id", &task]);
    let all = format!("{}{}", out.stdout, out.stderr);
    assert_eq!(out.code, 0, "{all}");
    assert!(all.contains("timed task ran"), "{all}");
    let line = all
        .lines()
        .find(|l| l.contains("execute timing:"))
        .unwrap_or_else(|| panic!("no timing line:\n{all}"));
    for step in [
        "process start ",
        "config ",
        "login ",
        "task fetch ",
        "code (git) ",
        "interpreter probe ",
        "env restore ",
        "total ",
    ] {
        assert!(line.contains(step), "{step:?} missing: {line}");
    }
    // The line is in the task's console log on the server too.
    let log = s.ok(&["task", "logs", &task]);
    assert!(log.contains("execute timing:"), "{log}");

    // Without --debug there is no timing line.
    let again = shell_task(&s, "quiet", "echo quiet task ran\n");
    let out = s.run(&["execute", "--id", &again]);
    assert_eq!(out.code, 0);
    assert!(
        !format!("{}{}", out.stdout, out.stderr).contains("execute timing:"),
        "{}",
        out.stdout
    );
}

/// Starts a looping task under a daemon with `env`, stops it, and checks it ends `stopped`.
fn abort_with(env: &[(&str, &str)]) -> Duration {
    let s = Server::start();
    let task = shell_task(
        &s,
        "loop",
        "echo looping\nwhile true; do sleep 0.05; done\n",
    );
    let log = s.home().join("daemon.log");
    let _d = daemon(&s, env, &log);
    wait_status(&s, &task, "in_progress", Duration::from_secs(60));
    // The watch is up once the task's own process runs.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !s.ok(&["task", "logs", &task]).contains("looping") {
        assert!(Instant::now() < deadline, "the task never printed");
        std::thread::sleep(Duration::from_millis(100));
    }
    let at = Instant::now();
    s.call("tasks.stop", json!({"task": task}));
    wait_status(&s, &task, "stopped", Duration::from_secs(20));
    let took = at.elapsed();
    let log = s.ok(&["task", "logs", &task]);
    assert!(log.contains("User aborted"), "{log}");
    took
}

#[test]
fn an_abort_arrives_by_the_servers_push() {
    // With a 60 s status poll only the push can stop the task within the 20 s waited for.
    let took = abort_with(&[("CLEARML_AGENT_ABORT_POLL_SEC", "60")]);
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn an_abort_arrives_by_polling_without_the_push() {
    // The path every other server takes: `CLEARML_AGENT_NO_LONG_POLL=1` skips the question
    // to `server.info`, exactly as a server that does not advertise `task_long_poll`.
    abort_with(&[
        ("CLEARML_AGENT_NO_LONG_POLL", "1"),
        ("CLEARML_AGENT_ABORT_POLL_SEC", "0.5"),
    ]);
}

#[test]
fn the_server_answers_a_status_watch_when_the_task_changes() {
    let s = Server::start();
    let task = shell_task(&s, "watched", "echo x\n");
    let info = s.call("server.info", json!({}));
    assert_eq!(info["task_long_poll"], true, "{info}");
    let doc = s.task(&task);
    let wait_while = json!({"status": doc["status"], "status_message": doc["status_message"]});
    // Unchanged: held for the wait.
    let at = Instant::now();
    let r = s.call(
        "tasks.get_all",
        json!({"id": [task], "only_fields": ["id", "status", "status_message"],
               "wait_ms": 300, "wait_while": wait_while}),
    );
    assert!(at.elapsed() >= Duration::from_millis(250), "{r}");
    assert_eq!(r["tasks"][0]["status"], doc["status"]);
    // Changed while waiting: answered with the new status.
    let base = s.base.clone();
    let stopper = std::thread::spawn({
        let task = task.clone();
        move || {
            std::thread::sleep(Duration::from_millis(300));
            let rt = common::task_server::runtime();
            rt.block_on(async {
                reqwest::Client::new()
                    .post(format!("{base}/tasks.dequeue"))
                    .basic_auth(common::task_server::KEY, Some(common::task_server::SECRET))
                    .json(&json!({"task": task}))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
            })
        }
    });
    let r = s.call(
        "tasks.get_all",
        json!({"id": [task], "only_fields": ["id", "status", "status_message"],
               "wait_ms": 20000, "wait_while": wait_while}),
    );
    assert!(matches!(stopper.join(), Ok(Ok(true))));
    assert_ne!(r["tasks"][0]["status"], doc["status"], "{r}");
}
