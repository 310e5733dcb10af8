//! The console shipper against the real embedded server.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clearml_report::{CONTINUATION, Level, LogShipper, ShipperOptions};
use common::*;

fn options(spool: &std::path::Path) -> ShipperOptions {
    let mut opts = ShipperOptions::new(spool.to_path_buf());
    opts.flush_interval = Duration::from_millis(20);
    opts
}

fn spool_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_arrive_in_order_cleaned_and_joined() {
    let (server, dir) = server().await;
    let client = client(server.api_addr());
    let task = create_task(&client, "console").await;
    let echoed = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut opts = options(&dir.path().join("spool"));
    let sink = echoed.clone();
    opts.echo = Some(Box::new(move |line: &str| {
        sink.lock().expect("lock").push(line.to_string())
    }));
    let shipper = LogShipper::start(client.clone(), task.clone(), "w1".into(), opts);

    shipper.push_bytes(Level::Debug, b"first\nprogress 10%\rprogress 100%\n");
    shipper.push_bytes(Level::Debug, b"back\x08space\r\n\x1b[0m\nhal");
    shipper.push_bytes(Level::Debug, b"f line\n");
    shipper.line(Level::Info, "agent says hi");
    // Many numbered lines, cut at arbitrary points across pushes.
    let numbered: String = (0..3000).map(|i| format!("line {i:05}\n")).collect();
    for chunk in numbered.as_bytes().chunks(97) {
        shipper.push_bytes(Level::Debug, chunk);
    }
    shipper.line(Level::Error, "agent error\n");
    shipper.push_bytes(Level::Debug, b"tail without newline");
    let summary = shipper.finish(Duration::from_secs(20)).await;

    assert_eq!(summary.undelivered_lines, 0, "{summary:?}");
    assert_eq!(summary.rejected_lines, 0);
    assert_eq!(summary.delivered_lines, 3007);
    assert_eq!(summary.spool_file, None);
    let expected = format!(
        "first\nprogress 100%\nbackspace\nhalf line\nagent says hi\n{numbered}agent error\ntail without newline\n"
    );
    assert_eq!(log_text(&client, &task).await, expected);

    let events = log_events(&client, &task).await;
    let levels: Vec<&str> = events.iter().filter_map(|e| e["level"].as_str()).collect();
    assert!(levels.contains(&"info") && levels.contains(&"error"));
    assert!(
        levels
            .iter()
            .all(|l| ["debug", "info", "error"].contains(l))
    );
    assert_eq!(events[0]["worker"], "w1");
    let stamps: Vec<i64> = events
        .iter()
        .filter_map(|e| e["timestamp"].as_i64())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "strictly increasing"
    );
    // Lines were batched, not sent one event each.
    assert!(events.len() < 100, "{} events", events.len());

    let echoed = echoed.lock().expect("lock");
    assert_eq!(echoed.len(), 3007);
    assert_eq!(echoed[1], "progress 100%");
    assert_eq!(echoed[3006], "tail without newline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_line_is_split_into_64_kib_events() {
    let (server, dir) = server().await;
    let client = client(server.api_addr());
    let task = create_task(&client, "huge").await;
    let shipper = LogShipper::start(
        client.clone(),
        task.clone(),
        "w1".into(),
        options(&dir.path().join("spool")),
    );
    // 300 KiB in one line (pushed in pieces), with multi-byte characters at the cuts.
    let huge = "aé€".repeat(300 * 1024 / 6);
    for chunk in huge.as_bytes().chunks(10_000) {
        shipper.push_bytes(Level::Debug, chunk);
    }
    shipper.push_bytes(Level::Debug, b"\nnext\n");
    let summary = shipper.finish(Duration::from_secs(20)).await;
    assert_eq!(summary.undelivered_lines, 0);

    let events = log_events(&client, &task).await;
    let sizes: Vec<usize> = events
        .iter()
        .filter_map(|e| e["msg"].as_str().map(str::len))
        .collect();
    assert!(sizes.len() >= 5, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s <= 64 * 1024), "{sizes:?}");
    assert!(sizes[0] > 64 * 1024 - 4, "events are filled: {sizes:?}");
    // Every piece after the first is marked as a continuation.
    let msgs: Vec<&str> = events.iter().filter_map(|e| e["msg"].as_str()).collect();
    assert!(!msgs[0].starts_with(CONTINUATION));
    assert!(
        msgs[1..].iter().all(|m| m.starts_with(CONTINUATION)),
        "{sizes:?}"
    );
    assert_eq!(
        log_text(&client, &task).await.replace(CONTINUATION, ""),
        format!("{huge}\nnext\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_batches_are_dropped_not_retried() {
    let (server, dir) = server().await;
    let client = client(server.api_addr());
    let shipper = LogShipper::start(
        client,
        "no-such-task".into(),
        "w1".into(),
        options(&dir.path().join("spool")),
    );
    shipper.push_bytes(Level::Debug, b"a\nb\n");
    let started = std::time::Instant::now();
    let summary = shipper.finish(Duration::from_secs(20)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(summary.rejected_lines, 2);
    assert_eq!(summary.delivered_lines, 0);
    assert_eq!(summary.undelivered_lines, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_deadline_undelivered_lines_are_saved_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nothing listens on port 1 (tcpmux).
    let addr = "127.0.0.1:1".parse().expect("address");
    let client = client(addr);
    let spool = dir.path().join("spool");
    let mut opts = options(&spool);
    opts.memory_limit_bytes = 300;
    let shipper = LogShipper::start(client, "t1".into(), "w1".into(), opts);
    let text: String = (0..500).map(|i| format!("line {i:05}\n")).collect();
    shipper.push_bytes(Level::Debug, text.as_bytes());
    shipper.line(Level::Info, "last");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!spool_files(&spool).is_empty(), "the spool is used");

    let summary = shipper.finish(Duration::from_millis(500)).await;
    assert_eq!(summary.undelivered_lines, 501);
    assert_eq!(summary.delivered_lines, 0);
    let file = summary.spool_file.expect("saved");
    assert_eq!(
        spool_files(&spool),
        vec![file.clone()],
        "only the saved file is left"
    );
    let saved = std::fs::read_to_string(&file).expect("read");
    let events: Vec<serde_json::Value> = saved
        .lines()
        .map(|l| serde_json::from_str(l).expect("event"))
        .collect();
    let joined: String = events.iter().filter_map(|e| e["msg"].as_str()).collect();
    assert_eq!(joined, format!("{text}last\n"));
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "log" && e["task"] == "t1")
    );
    let stamps: Vec<i64> = events
        .iter()
        .filter_map(|e| e["timestamp"].as_i64())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]));
}

/// The product promise: lines pushed while the server is down are delivered after it comes
/// back, each exactly once and in order, through the spool when memory is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_outage_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let spool = dir.path().join("spool");
    // A port the system picks; the restart below reuses it.
    let server = BackgroundServer::start(data.clone(), 0);
    let port = server.addr.port();
    let client = client(server.addr);
    let task = create_task(&client, "outage").await;
    let mut opts = options(&spool);
    opts.memory_limit_bytes = 2048;
    let shipper = LogShipper::start(client.clone(), task.clone(), "w1".into(), opts);
    let line = |i: usize| format!("line {i:05}\n");

    for i in 0..100 {
        shipper.push_bytes(Level::Debug, line(i).as_bytes());
    }
    // Stop only once everything so far is stored, so no reply is lost in the crash (that
    // case needs the server to ignore retransmitted events).
    wait_for("the first lines", Duration::from_secs(10), || async {
        log_text(&client, &task).await.lines().count() == 100
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");

    // The server is down: keep writing, well past the memory limit, for long enough that
    // the shipper retries several times.
    assert!(matches!(
        client.call("tasks.get_all", serde_json::json!({})).await,
        Err(clearml_api::ApiError::Unreachable { .. })
    ));
    for i in 100..2000 {
        shipper.push_bytes(Level::Debug, line(i).as_bytes());
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    assert!(!spool_files(&spool).is_empty(), "the spool is used");

    let server = tokio::task::spawn_blocking(move || BackgroundServer::start(data, port))
        .await
        .expect("restart");
    for i in 2000..2100 {
        shipper.push_bytes(Level::Debug, line(i).as_bytes());
    }
    let summary = shipper.finish(Duration::from_secs(30)).await;
    assert_eq!(summary.undelivered_lines, 0, "{summary:?}");
    assert_eq!(summary.delivered_lines, 2100);

    let expected: String = (0..2100).map(line).collect();
    assert_eq!(log_text(&client, &task).await, expected);
    assert!(spool_files(&spool).is_empty(), "spool files are deleted");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .expect("stop");
}
