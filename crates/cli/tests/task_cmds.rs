//! `clearml-agent task|queue|worker ...` (all but `task create`) against the embedded server,
//! run as real processes (see `common/task_server.rs`).

mod common;

use assert_cmd::Command;
use common::task_server::*;
use serde_json::{Value, json};
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

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
    // Port 1 (tcpmux): nothing listens there.
    let port = 1;
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
