//! Machine statistics and the worker status reporter against the real embedded server.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod common;

use std::time::Duration;

use clearml_report::{StatsSampler, StatusReporter};
use common::*;
use serde_json::{Value, json};

#[test]
fn stats_have_the_keys_with_plausible_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut sampler = StatsSampler::new(dir.path().to_path_buf());
    for _ in 0..3 {
        // Some CPU work between samples.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        std::thread::sleep(Duration::from_millis(50));
        sampler.sample();
    }
    let report = sampler.report();
    let cpu = report["cpu_usage"].as_array().expect("cpu_usage list");
    assert_eq!(cpu.len(), 1);
    let cpu = cpu[0].as_f64().expect("number");
    assert!((0.0..=100.0).contains(&cpu), "{report}");
    assert!(report["memory_used"].as_f64().expect("memory_used") > 0.0);
    assert!(report["memory_free"].as_f64().expect("memory_free") > 0.0);
    let disk = report["disk_free_home"].as_f64().expect("disk_free_home");
    assert!((0.0..=100.0).contains(&disk), "{report}");
    for key in ["disk_read", "disk_write", "network_tx", "network_rx"] {
        assert!(report[key].as_f64().expect(key) >= 0.0, "{key}: {report}");
    }
    // Rounded to 3 decimals.
    let m = report["memory_used"].as_f64().unwrap_or_default();
    assert!(((m * 1000.0).round() - m * 1000.0).abs() < 1e-6);
    if sampler.has_gpus() {
        assert!(report["gpu_usage"].is_array(), "{report}");
    } else {
        assert!(report.get("gpu_usage").is_none());
    }
    // A report without samples since the last one still has the instantaneous values.
    let again = sampler.report();
    assert!(again["memory_used"].as_f64().is_some(), "{again}");
}

async fn worker(client: &clearml_api::Client, id: &str) -> Option<Value> {
    let data = client
        .call("workers.get_all", json!({"last_seen": 0}))
        .await
        .expect("workers.get_all");
    data["workers"]
        .as_array()?
        .iter()
        .find(|w| w["id"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_shows_its_task_and_statistics() {
    let (server, _dir) = server().await;
    let client = client(server.api_addr());
    let task = create_task(&client, "status").await;
    let queue = client
        .call("queues.get_default", json!({}))
        .await
        .expect("default queue")["id"]
        .as_str()
        .expect("queue id")
        .to_string();
    let reporter = StatusReporter::start(
        client.clone(),
        "host:test-worker".into(),
        vec![queue.clone()],
        Duration::from_secs(1),
        vec!["gpu-less".into()],
    );
    reporter.set_task(Some(task.clone()), Some(queue.clone()));
    wait_for("the task on the worker", Duration::from_secs(5), || async {
        worker(&client, "host:test-worker")
            .await
            .is_some_and(|w| w["task"]["id"] == task.as_str())
    })
    .await;
    // The first full report comes after about 3 s.
    wait_for("machine statistics", Duration::from_secs(8), || async {
        worker(&client, "host:test-worker")
            .await
            .is_some_and(|w| w["machine_stats"]["memory_used"].as_f64().is_some())
    })
    .await;
    let w = worker(&client, "host:test-worker").await.expect("worker");
    assert_eq!(w["tags"], json!(["gpu-less"]));
    assert_eq!(w["queues"][0]["id"], queue.as_str());
    let t = client
        .call("tasks.get_by_id", json!({"task": task}))
        .await
        .expect("task");
    assert_eq!(t["task"]["last_worker"], "host:test-worker");

    reporter.set_task(None, None);
    wait_for("the task cleared", Duration::from_secs(5), || async {
        worker(&client, "host:test-worker")
            .await
            .is_some_and(|w| w.get("task").is_none())
    })
    .await;
    reporter.stop().await;
}
