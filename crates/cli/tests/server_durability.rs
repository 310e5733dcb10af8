//! `clearml-agent server` killed with SIGKILL during a burst of writes: after a restart, every
//! write the server acknowledged (tasks, queue entries, log lines) is still there.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The server on `port` and `files_port` (0: the system picks), and the ports it bound.
fn start(data: &Path, port: u16, files_port: u16) -> (ServerProcess, u16, u16) {
    let (child, port, files_port) = common::spawn_server(
        Command::new(assert_cmd::cargo::cargo_bin("clearml-agent"))
            .args(["server", "--port", &port.to_string(), "--files-port"])
            .arg(files_port.to_string())
            .arg("--data-dir")
            .arg(data)
            .args(["--access-key", "KEY", "--secret-key", "SECRET"])
            .env_clear()
            .env("HOME", data)
            .stderr(Stdio::null()),
    );
    (ServerProcess(child), port, files_port)
}

async fn wait_ready(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/debug.ping")).send().await
            && r.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server at {base} did not become ready");
}

/// A call with Basic credentials (no login round trip, so it works across the restart too).
/// `Ok(data)` only when the server answered 200.
async fn call(
    http: &reqwest::Client,
    base: &str,
    endpoint: &str,
    body: Value,
) -> Result<Value, String> {
    let r = http
        .post(format!("{base}/{endpoint}"))
        .basic_auth("KEY", Some("SECRET"))
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{endpoint}: HTTP {}", r.status()));
    }
    let env: Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(env["data"].clone())
}

#[derive(Default)]
struct Acked {
    tasks: Vec<String>,
    queued: Vec<String>,
    lines: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut server, port, files_port) = start(dir.path(), 0, 0);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    let queue = call(&http, &base, "queues.get_default", json!({}))
        .await
        .expect("default queue")["id"]
        .as_str()
        .expect("id")
        .to_string();

    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (http, base, queue, acked) = (http.clone(), base.clone(), queue.clone(), acked.clone());
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let Ok(d) = call(
                    &http,
                    &base,
                    "tasks.create",
                    json!({"name": format!("burst {w}.{i}")}),
                )
                .await
                else {
                    return;
                };
                let Some(id) = d["id"].as_str().map(str::to_string) else {
                    return;
                };
                acked.lock().expect("lock").tasks.push(id.clone());
                if call(
                    &http,
                    &base,
                    "tasks.enqueue",
                    json!({"task": id, "queue": queue}),
                )
                .await
                .is_ok()
                {
                    acked.lock().expect("lock").queued.push(id.clone());
                }
                let lines: Vec<String> = (0..3).map(|k| format!("line {w}.{i}.{k}")).collect();
                let body = lines
                    .iter()
                    .map(|m| {
                        json!({"type": "log", "task": id, "level": "info", "msg": m}).to_string()
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                let ok = http
                    .post(format!("{base}/events.add_batch"))
                    .basic_auth("KEY", Some("SECRET"))
                    .header("content-type", "application/json-lines")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    let mut a = acked.lock().expect("lock");
                    a.lines.extend(lines.into_iter().map(|l| (id.clone(), l)));
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGKILL in the middle of the burst.
    server.0.kill().expect("kill -9");
    let _ = server.0.wait();
    for w in writers {
        let _ = w.await;
    }
    let acked = std::mem::take(&mut *acked.lock().expect("lock"));
    assert!(
        acked.tasks.len() > 20,
        "the burst wrote only {} tasks",
        acked.tasks.len()
    );

    // The same ports again: the client's URL does not change across the restart.
    let _server = start(dir.path(), port, files_port);
    wait_ready(&http, &base).await;
    for id in &acked.tasks {
        call(&http, &base, "tasks.get_by_id", json!({"task": id}))
            .await
            .unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e}"));
    }
    let q = call(&http, &base, "queues.get_by_id", json!({"queue": queue}))
        .await
        .expect("queue");
    let entries: Vec<&str> = q["queue"]["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["task"].as_str())
        .collect();
    for id in &acked.queued {
        assert!(
            entries.contains(&id.as_str()),
            "acknowledged queue entry {id} lost"
        );
    }
    let mut by_task: std::collections::HashMap<&str, Vec<&str>> = Default::default();
    for (task, line) in &acked.lines {
        by_task.entry(task).or_default().push(line);
    }
    for (task, lines) in by_task {
        let log = call(
            &http,
            &base,
            "events.get_task_log",
            json!({"task": task, "batch_size": 1000, "navigate_earlier": false, "order": "asc"}),
        )
        .await
        .expect("log");
        let got: Vec<&str> = log["events"]
            .as_array()
            .expect("events")
            .iter()
            .filter_map(|e| e["msg"].as_str())
            .collect();
        for line in lines {
            assert!(
                got.contains(&line),
                "acknowledged log line {line:?} of {task} lost"
            );
        }
    }
}
