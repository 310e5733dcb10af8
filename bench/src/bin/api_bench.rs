//! API throughput and latency of the embedded server under N simulated workers.
//!
//! Each worker loops over the calls an idle-then-busy agent makes: `queues.get_next_task`,
//! `workers.status_report` (with its current task) and `events.add_batch` (a json-lines batch
//! of log lines), as fast as the server answers. A feeder keeps enqueuing tasks so pops find
//! work. Prints calls/s and p50/p99 latency per worker count.
//!
//! Two modes per worker count:
//! - closed loop ("max"): every worker sends its next call as soon as the last one answered, so
//!   the rate is the most the server (and the load generator, on the same cores) can do; with
//!   N workers in flight, latency is about N / rate by Little's law;
//! - open loop ("at R/s"): the workers together offer R calls/s on a fixed schedule (each worker
//!   one call every N/R s), and latency is measured from the scheduled time, so a server that
//!   falls behind shows it in p99 instead of hiding it (no coordinated omission). This is how
//!   real agents load a server: each polls on its own clock.
//!
//! Usage: api-bench [--workers 1,100,1000] [--seconds 10] [--rate 5000] [--url http://host:port --key K --secret S]
//! Without --url it starts an in-process server on a free loopback port with a temp data dir.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Target {
    base: String,
    token: String,
    queue: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut workers = vec![1usize, 100, 1000];
    let mut seconds = 10u64;
    let mut rate = 5000f64;
    let mut url = None;
    let mut key = "bench".to_string();
    let mut secret = "bench-secret".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--workers" => {
                workers = value()?
                    .split(',')
                    .map(|s| s.trim().parse::<usize>())
                    .collect::<Result<_, _>>()
                    .context("--workers takes numbers like 1,100,1000")?
            }
            "--seconds" => seconds = value()?.parse().context("--seconds takes a number")?,
            "--rate" => rate = value()?.parse().context("--rate takes calls per second")?,
            "--url" => url = Some(value()?),
            "--key" => key = value()?,
            "--secret" => secret = value()?,
            "-h" | "--help" => {
                println!(
                    "api-bench [--workers 1,100,1000] [--seconds 10] [--url URL --key K --secret S]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }

    let _dir;
    let _server;
    let base = match url {
        Some(u) => u,
        None => {
            let dir = tempfile::tempdir()?;
            let mut config = clearml_server::ServerConfig::new(dir.path().to_path_buf());
            config.port = 0;
            config.files_port = 0;
            config.credential = Some(clearml_server::Credential {
                access_key: key.clone(),
                secret_key: secret.clone(),
            });
            let server = clearml_server::Server::start(config).await?;
            let base = format!("http://{}", server.api_addr());
            _dir = dir;
            _server = server;
            base
        }
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(2000)
        .build()?;
    let login: Value = http
        .get(format!("{base}/auth.login"))
        .basic_auth(&key, Some(&secret))
        .send()
        .await?
        .json()
        .await?;
    let token = login["data"]["token"]
        .as_str()
        .context("login failed")?
        .to_string();
    let target = Arc::new(Target {
        queue: String::new(),
        base: base.clone(),
        token,
    });
    let queue = call(&http, &target, "queues.get_default", json!({})).await?["id"]
        .as_str()
        .context("no default queue")?
        .to_string();
    let target = Arc::new(Target {
        queue,
        base: target.base.clone(),
        token: target.token.clone(),
    });

    println!(
        "server: {base}  machine: {} cores",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:>8} {:>12} {:>10} {:>10} {:>9} {:>9} {:>9}",
        "workers", "load", "calls", "calls/s", "p50 ms", "p99 ms", "errors"
    );
    for n in workers {
        for offered in [None, Some(rate)] {
            let r = run(&http, &target, n, Duration::from_secs(seconds), offered).await?;
            let load = match offered {
                None => "max".to_string(),
                Some(r) => format!("at {r:.0}/s"),
            };
            println!(
                "{:>8} {:>12} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9}",
                n, load, r.calls, r.rate, r.p50_ms, r.p99_ms, r.errors
            );
        }
    }
    Ok(())
}

struct Outcome {
    calls: usize,
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: usize,
}

async fn call(
    http: &reqwest::Client,
    t: &Target,
    endpoint: &str,
    body: Value,
) -> anyhow::Result<Value> {
    let env: Value = http
        .post(format!("{}/{endpoint}", t.base))
        .bearer_auth(&t.token)
        .json(&body)
        .send()
        .await?
        .json()
        .await?;
    if env["meta"]["result_code"] != 200 {
        bail!("{endpoint}: {}", env["meta"]["result_msg"]);
    }
    Ok(env["data"].clone())
}

async fn run(
    http: &reqwest::Client,
    t: &Arc<Target>,
    n: usize,
    duration: Duration,
    offered: Option<f64>,
) -> anyhow::Result<Outcome> {
    let stop = Arc::new(AtomicBool::new(false));
    // One task per worker to report on and log to, and a feeder that keeps the queue non-empty.
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let d = call(
            http,
            t,
            "tasks.create",
            json!({"name": format!("bench task {i}")}),
        )
        .await?;
        tasks.push(d["id"].as_str().context("task id")?.to_string());
    }
    let feeder = {
        let (http, t, stop) = (http.clone(), t.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let created =
                    call(&http, &t, "tasks.create", json!({"name": "bench queued"})).await;
                if let Ok(d) = created
                    && let Some(id) = d["id"].as_str()
                {
                    let body = json!({"task": id, "queue": t.queue});
                    let _ = call(&http, &t, "tasks.enqueue", body).await;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let started = Instant::now();
    let mut handles = Vec::with_capacity(n);
    for (i, task) in tasks.into_iter().enumerate() {
        let (http, t, stop) = (http.clone(), t.clone(), stop.clone());
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            let worker = format!("bench-worker:{i}");
            let mut step = 0usize;
            // Open loop: this worker's share of the offered rate, phase-shifted per worker.
            let interval = offered.map(|r| Duration::from_secs_f64(n as f64 / r.max(1.0)));
            let first = started + interval.map_or(Duration::ZERO, |iv| iv.mul_f64(i as f64 / n as f64));
            while !stop.load(Ordering::Relaxed) {
                let t0 = match interval {
                    Some(iv) => {
                        let due = first + iv * step as u32;
                        tokio::time::sleep_until(due.into()).await;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        due
                    }
                    None => Instant::now(),
                };
                let result = match step % 3 {
                    0 => call(&http, &t, "queues.get_next_task", json!({"queue": t.queue})).await.map(|_| ()),
                    1 => call(
                        &http,
                        &t,
                        "workers.status_report",
                        json!({"worker": worker, "timestamp": 1, "task": task, "queue": t.queue}),
                    )
                    .await
                    .map(|_| ()),
                    _ => {
                        let lines: Vec<String> = (0..5)
                            .map(|k| {
                                json!({"type": "log", "task": task, "level": "info", "worker": worker,
                                       "msg": format!("line {step}.{k}"), "timestamp": 1})
                                .to_string()
                            })
                            .collect();
                        http.post(format!("{}/events.add_batch", t.base))
                            .bearer_auth(&t.token)
                            .header("content-type", "application/json-lines")
                            .body(lines.join("\n"))
                            .send()
                            .await
                            .map_err(anyhow::Error::from)
                            .and_then(|r| {
                                if r.status().is_success() { Ok(()) } else { bail!("add_batch: {}", r.status()) }
                            })
                    }
                };
                latencies.push(t0.elapsed());
                if result.is_err() {
                    errors += 1;
                }
                step += 1;
            }
            (latencies, errors)
        }));
    }
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.await?;
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = feeder.await;
    all.sort();
    let pct = |p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all[i].as_secs_f64() * 1000.0
    };
    Ok(Outcome {
        calls: all.len(),
        rate: all.len() as f64 / elapsed,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        errors,
    })
}
