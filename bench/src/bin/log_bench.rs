//! Console throughput end to end: a task that prints many short lines, from `tasks.enqueue` to
//! `completed`, through a real daemon and our server on this machine, and a check that every
//! line came back once, whole and in order.
//!
//! Usage: log-bench [--agent PATH] [--lines N] [--runs N]
//! Without --agent it uses the `clearml-agent` next to this binary (build both with the same
//! profile: `cargo build --release -p clearml-agent -p clearml-bench`).
//!
//! The task is a bash script running `seq -f 'console line %06.0f: the quick brown fox' 1 N`
//! (41 bytes a line with its newline). The time is measured here, from just before `tasks.enqueue` to the moment
//! `tasks.get_all` first reports `completed` (polled every 10 ms), with the daemon already
//! waiting on the queue (long poll). It includes the pickup, the `execute` child's start, the
//! task, the shipping of every line and the final status.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clearml_api::{Client, ClientConfig};
use serde_json::json;

const KEY: &str = "BENCHLOGACCESSKEY";
const SECRET: &str = "BENCH-LOG-SECRET-0cc175b9c0f1b6a8";

use clearml_bench::Kill;

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn line_text(i: u64) -> String {
    format!("console line {i:06}: the quick brown fox")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut agent = None;
    let mut lines: u64 = 200_000;
    let mut runs = 3;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--agent" => agent = Some(PathBuf::from(value()?)),
            "--lines" => lines = value()?.parse()?,
            "--runs" => runs = value()?.parse()?,
            "-h" | "--help" => {
                println!("log-bench [--agent PATH] [--lines N] [--runs N]");
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let agent = match agent {
        Some(a) => a,
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("clearml-agent"),
    };
    if !agent.is_file() {
        bail!(
            "{} is missing: cargo build --release -p clearml-agent",
            agent.display()
        );
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let (port, files_port) = (free_port()?, free_port()?);
    let api = format!("http://127.0.0.1:{port}");
    let _server = Kill(
        Command::new(&agent)
            .args(["server", "--port", &port.to_string()])
            .args(["--files-port", &files_port.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CLEARML_SERVER_ACCESS_KEY", KEY)
            .env("CLEARML_SERVER_SECRET_KEY", SECRET)
            .env("HOME", dir.join("home"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the server")?,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("the server did not start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let conf = dir.join("clearml.conf");
    std::fs::write(
        &conf,
        format!(
            "api {{\n  api_server: \"{api}\"\n  web_server: \"{api}\"\n  files_server: \"http://127.0.0.1:{files_port}\"\n  credentials {{ access_key: \"{KEY}\", secret_key: \"{SECRET}\" }}\n}}\n\
             agent {{\n  venvs_dir: \"{}\"\n}}\n",
            dir.join("venvs").display()
        ),
    )?;
    let client = Client::new(ClientConfig {
        api_server: api.clone(),
        access_key: KEY.into(),
        secret_key: SECRET.into(),
        verify_certificate: true,
        method: "post".into(),
        worker: None,
        retry_for: Duration::from_secs(30),
        timeout: Duration::from_secs(60),
    })?;
    let script = dir.join("print.sh");
    std::fs::write(
        &script,
        format!("seq -f 'console line %06.0f: the quick brown fox' 1 {lines}\n"),
    )?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let _daemon = Kill(
        Command::new(&agent)
            .arg("--config-file")
            .arg(&conf)
            .args(["daemon", "--queue", "default"])
            .env("HOME", dir.join("home"))
            .env("TMPDIR", &dir)
            .env_remove("CLEARML_WORKER_ID")
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting the daemon")?,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = client.call("workers.get_all", json!({})).await?;
        if w["workers"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        if Instant::now() > deadline {
            bail!("the daemon did not register");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{lines} lines of 41 bytes, {runs} runs");
    let mut results = Vec::new();
    for run in 0..runs {
        let out = Command::new(&agent)
            .arg("--config-file")
            .arg(&conf)
            .args(["task", "create", "--project", "log-bench", "--name"])
            .arg(format!("run {run}"))
            .arg("--script")
            .arg(&script)
            .args(["--binary", "/bin/bash"])
            .env("HOME", dir.join("home"))
            .output()?;
        if !out.status.success() {
            bail!("task create: {}", String::from_utf8_lossy(&out.stderr));
        }
        let task = String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string();
        let started = Instant::now();
        client
            .call(
                "tasks.enqueue",
                json!({"task": task, "queue_name": "default"}),
            )
            .await?;
        loop {
            let r = client
                .call(
                    "tasks.get_all",
                    json!({"id": [task], "only_fields": ["id", "status"]}),
                )
                .await?;
            let status = r["tasks"][0]["status"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            if status == "completed" {
                break;
            }
            if status == "failed" || started.elapsed() > Duration::from_secs(300) {
                bail!("task {task} is {status}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let secs = started.elapsed().as_secs_f64();
        if std::env::var_os("LOG_BENCH_PHASES").is_some() {
            let enq_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as f64
                - secs * 1000.0;
            let r = client
                .call(
                    "events.get_task_log",
                    json!({"task": task, "batch_size": 100000,
                       "navigate_earlier": false, "order": "asc"}),
                )
                .await?;
            let evs = r["events"].as_array().cloned().unwrap_or_default();
            for e in &evs {
                let msg = e["msg"].as_str().unwrap_or_default();
                let first = msg.lines().next().unwrap_or_default();
                let ts = e["timestamp"].as_f64().unwrap_or_default();
                if !first.starts_with("console line") || msg.contains("console line 000001") {
                    println!("  +{:>6.0} ms {:.60}", ts - enq_ms, first);
                }
            }
            let last = evs.iter().rev().find(|e| {
                e["msg"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("console line")
            });
            if let Some(e) = last {
                println!(
                    "  last task line event at +{:.0} ms",
                    e["timestamp"].as_f64().unwrap_or_default() - enq_ms
                );
            }
        }
        let (found, split) = check_log(&client, &task, lines).await?;
        println!(
            "run {run}: {secs:.2} s, {:.0} lines/s; {found} of {lines} lines back whole and in order, {split} split",
            lines as f64 / secs
        );
        if found != lines || split != 0 {
            bail!("lines were lost or split");
        }
        results.push(secs);
    }
    results.sort_by(f64::total_cmp);
    let median = results[results.len() / 2];
    println!(
        "median {median:.2} s, {:.0} lines/s end to end",
        lines as f64 / median
    );
    Ok(())
}

/// Reads the whole log back (forward, paging on the timestamp, which excludes it) and
/// counts the benchmark's lines that came back whole and in order (failing when any is missing
/// or doubled), and the events that end inside a line.
async fn check_log(client: &Client, task: &str, lines: u64) -> anyhow::Result<(u64, u64)> {
    let mut text = String::new();
    let mut msgs: Vec<String> = Vec::new();
    let mut from: Option<i64> = None;
    loop {
        let mut body = json!({"task": task, "batch_size": 10000, "navigate_earlier": false,
                              "order": "asc"});
        if let Some(ts) = from {
            body["from_timestamp"] = json!(ts);
        }
        let r = client.call("events.get_task_log", body).await?;
        let events = r["events"].as_array().cloned().unwrap_or_default();
        if events.is_empty() {
            break;
        }
        for e in &events {
            let ts = e["timestamp"].as_f64().unwrap_or_default() as i64;
            msgs.push(e["msg"].as_str().unwrap_or_default().to_string());
            from = Some(from.map_or(ts, |f: i64| f.max(ts)));
        }
    }
    let mut split = 0;
    for msg in &msgs {
        if !msg.ends_with('\n') {
            split += 1;
        }
        text.push_str(msg);
        if !msg.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut want = 1;
    let mut total = 0;
    for l in text.lines().filter(|l| l.starts_with("console line ")) {
        total += 1;
        if want <= lines && l == line_text(want) {
            want += 1;
        }
    }
    if total != lines {
        let seen: std::collections::BTreeSet<&str> = text.lines().collect();
        let missing: Vec<u64> = (1..=lines)
            .filter(|i| !seen.contains(line_text(*i).as_str()))
            .take(10)
            .collect();
        let odd: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("console line") && !l.starts_with("console line "))
            .take(5)
            .collect();
        eprintln!("missing (first 10): {missing:?}; mangled: {odd:?}");
        bail!("{total} benchmark lines came back, not {lines} (lost or duplicated)");
    }
    Ok((want - 1, split))
}
