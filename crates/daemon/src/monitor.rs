//! Babysitting one task process: ship its console, ping the task, watch for an abort, and
//! decide the final status from how it ended.
//!
//! The watchers run as their own tokio tasks and talk to the loop through channels, so a slow
//! or unreachable server never delays reading the task's output (the pipe would fill and the
//! task would block) and an abort is acted on as soon as it is seen. Final status calls are
//! retried through a server outage: a task that finished must not stay `in_progress`.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_api::{ApiError, Client};
use clearml_report::{Level, LogShipper, ShipperOptions};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::process::{TaskProcess, kill_tree};

/// How the runner behaves; see [`crate::DaemonSettings`] for where each comes from.
#[derive(Clone, Debug)]
pub struct MonitorSettings {
    /// How often the task's status is read to notice an abort.
    pub abort_poll: Duration,
    /// `agent.task_ping_interval_sec`.
    pub ping_interval: Duration,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
    /// Where console lines wait while the server is unreachable.
    pub spool_dir: PathBuf,
    /// Echo the task's console to our stdout (`--foreground`, `execute`).
    pub echo: bool,
    /// Also append the console to this file (`execute --log-file`).
    pub log_file: Option<PathBuf>,
    /// How long to keep delivering console lines and the final status after the task ended.
    pub final_delivery: Duration,
    /// Let a server that advertises `task_long_poll` in `server.info` (ours) answer the
    /// status watch as soon as the task changes, instead of polling every `abort_poll`
    /// (`CLEARML_AGENT_NO_LONG_POLL=1` turns it off).
    pub status_push: bool,
}

/// The longest a status watch waits on the server (a ping is due after it at the latest).
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// Why the task process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It exited by itself with this code (a signal `n` is `-n`).
    Exited(i32),
    /// Aborted from the server (`tasks.stop`).
    Aborted,
    /// The server moved the task elsewhere (reset, enqueued, completed, failed, deleted).
    Taken(String),
    /// The agent is shutting down (SIGTERM / Ctrl-C).
    Interrupted,
    /// The process could not start.
    SpawnFailed(String),
}

/// What the runner reports back.
#[derive(Clone, Debug)]
pub struct TaskResult {
    pub ending: Ending,
    /// The status we set (or found), e.g. `completed`.
    pub status: Option<String>,
    /// Lines that could not be delivered before the deadline (kept in the spool).
    pub undelivered: u64,
}

/// Messages from the watchers.
enum Signal {
    Stop(Ending),
}

/// Runs `cmd` for `task` and sets the final status. `shutdown` turning true interrupts it.
pub async fn run_task(
    client: Arc<Client>,
    worker_id: &str,
    task: &str,
    cmd: Command,
    settings: &MonitorSettings,
    mut shutdown: watch::Receiver<bool>,
    shipper: LogShipper,
) -> TaskResult {
    let mut process = match TaskProcess::spawn(cmd) {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("cannot start the task process: {e}");
            shipper.line(Level::Error, &reason);
            let status = finish_status(
                &client,
                worker_id,
                task,
                &Ending::SpawnFailed(reason.clone()),
            )
            .await;
            let summary = shipper.finish(settings.final_delivery).await;
            return TaskResult {
                ending: Ending::SpawnFailed(reason),
                status,
                undelivered: summary.undelivered_lines,
            };
        }
    };
    let mut output = process.take_output();
    let mut log_file = settings.log_file.as_ref().and_then(|p| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });

    let (tx, mut rx) = mpsc::channel::<Signal>(4);
    let watcher = tokio::spawn(watch_task(
        client.clone(),
        task.to_string(),
        settings.abort_poll,
        settings.ping_interval,
        settings.status_push,
        tx,
    ));

    let mut buf = Vec::new();
    let mut ending: Option<Ending> = None;
    let mut exit: Option<i32> = None;
    // Pump output until the process exits or something stops it.
    while ending.is_none() && exit.is_none() {
        tokio::select! {
            chunk = async {
                match output.as_mut() {
                    Some(o) => o.next_chunk(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => {
                match chunk {
                    Some(n) => forward(&shipper, &buf[..n], settings.echo, &mut log_file),
                    None => output = None,
                }
            }
            status = process.child.wait() => {
                exit = Some(match status {
                    Ok(s) => exit_code(s),
                    Err(_) => -1,
                });
            }
            Some(Signal::Stop(e)) = rx.recv() => ending = Some(e),
            _ = shutdown.changed() => {
                if *shutdown.borrow() {
                    ending = Some(Ending::Interrupted);
                }
            }
        }
    }
    watcher.abort();
    match &ending {
        Some(Ending::Aborted) => {
            shipper.line(
                Level::Error,
                "User aborted: stopping task (3) task was stopped by tasks.stop",
            );
        }
        Some(Ending::Interrupted) => {
            shipper.line(Level::Error, "Agent shutting down: stopping task");
        }
        Some(Ending::Taken(why)) => {
            shipper.line(Level::Warning, &format!("Task {why}: stopping its process"));
        }
        _ => {}
    }
    // Whatever ended it, nothing of the task may outlive it: background helpers that still
    // hold the pipe would otherwise keep it open forever.
    kill_tree(&mut process, settings.kill_grace).await;
    if exit.is_none()
        && let Ok(s) = process.child.try_wait()
    {
        exit = s.map(exit_code);
    }
    // Drain what the process wrote before it went.
    if let Some(mut o) = output {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(n)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            o.next_chunk(&mut buf),
        )
        .await
        {
            forward(&shipper, &buf[..n], settings.echo, &mut log_file);
        }
    }
    let ending = ending.unwrap_or(Ending::Exited(exit.unwrap_or(-1)));
    match &ending {
        Ending::Exited(0) => shipper.line(Level::Info, "Process completed successfully"),
        Ending::Exited(254) | Ending::Exited(-2) => {
            shipper.line(Level::Info, "Process terminated by user")
        }
        Ending::Exited(n) => shipper.line(Level::Info, &format!("Process failed, exit code {n}")),
        Ending::Aborted => shipper.line(Level::Info, "Process aborted by user"),
        _ => {}
    }
    // Lines first, then the status: a client that waits for `completed` and then reads the
    // log must find every line.
    let summary = shipper.finish(settings.final_delivery).await;
    let status = finish_status(&client, worker_id, task, &ending).await;
    TaskResult {
        ending,
        status,
        undelivered: summary.undelivered_lines,
    }
}

fn forward(shipper: &LogShipper, bytes: &[u8], echo: bool, log_file: &mut Option<std::fs::File>) {
    use std::io::Write as _;
    shipper.push_bytes(Level::Debug, bytes);
    if echo {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }
    if let Some(f) = log_file.as_mut() {
        let _ = f.write_all(bytes);
    }
}

fn exit_code(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    s.code().unwrap_or_else(|| -s.signal().unwrap_or(1))
}

/// Whether the server answers a status watch when the task changes (`server.info`).
async fn server_pushes_status(client: &Client) -> bool {
    client
        .call("server.info", json!({}))
        .await
        .ok()
        .and_then(|r| r.get("task_long_poll").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// Watches the task's status for an abort and pings it, until the runner stops listening.
///
/// With a server that pushes (see [`MonitorSettings::status_push`]) each read carries the
/// status last seen and the server holds it until the status changes (or `STATUS_WAIT`), so
/// an abort is seen as soon as it is made; otherwise the status is read every `poll`.
async fn watch_task(
    client: Arc<Client>,
    task: String,
    poll: Duration,
    ping_every: Duration,
    push: bool,
    tx: mpsc::Sender<Signal>,
) {
    let push = push && server_pushes_status(&client).await;
    let wait = STATUS_WAIT.min(ping_every).max(Duration::from_millis(100));
    let mut last_ping = Instant::now();
    let mut created_seen = 0;
    // The status and message of the last read, for the server to wait on.
    let mut seen: Option<Value> = None;
    // Polling reads after a pause; a push watch reads at once and then waits on the server.
    let mut pause = !push;
    loop {
        if pause {
            tokio::time::sleep(poll).await;
        }
        if last_ping.elapsed() >= ping_every {
            last_ping = Instant::now();
            let _ = client.call("tasks.ping", json!({"task": task})).await;
        }
        let mut body = json!({"id": [task], "only_fields": ["id", "status", "status_message"],
                              "search_hidden": true});
        if let Some(w) = &seen {
            body["wait_ms"] = json!(wait.as_millis() as u64);
            body["wait_while"] = w.clone();
        }
        let r = client.call("tasks.get_all", body).await;
        let Ok(r) = r else {
            // Unreachable or refused: keep running; the task is not ours to stop.
            seen = None;
            pause = true;
            continue;
        };
        let Some(t) = r
            .get("tasks")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
        else {
            let _ = tx
                .send(Signal::Stop(Ending::Taken("was deleted".into())))
                .await;
            return;
        };
        let status = t.get("status").and_then(Value::as_str).unwrap_or_default();
        let message = t
            .get("status_message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let stop = match status {
            "in_progress" if message.contains("stopping") => Some(Ending::Aborted),
            "stopped" => Some(Ending::Aborted),
            "closed" | "failed" | "published" | "queued" | "completed" => {
                Some(Ending::Taken(format!("status changed to {status}")))
            }
            "created" => {
                created_seen += 1;
                (created_seen >= 2).then(|| Ending::Taken("was reset".into()))
            }
            _ => {
                created_seen = 0;
                None
            }
        };
        if let Some(e) = stop {
            let _ = tx.send(Signal::Stop(e)).await;
            return;
        }
        // A reset is confirmed by a second read after `poll`, not by a wait.
        seen = (push && status != "created").then(|| {
            json!({"status": t.get("status").cloned().unwrap_or(Value::Null),
                   "status_message": t.get("status_message").cloned().unwrap_or(Value::Null)})
        });
        pause = seen.is_none();
    }
}

/// Sets the status an ending calls for; returns the status the task ends up with.
async fn finish_status(
    client: &Client,
    worker_id: &str,
    task: &str,
    ending: &Ending,
) -> Option<String> {
    let message = format!("Changed by clearml-agent {worker_id}");
    let (endpoint, reason) = match ending {
        Ending::Exited(0) => ("tasks.completed", "worker execution done".to_string()),
        Ending::Exited(254) | Ending::Exited(-2) => ("tasks.stopped", "user abort".to_string()),
        Ending::Interrupted => ("tasks.stopped", "user abort".to_string()),
        Ending::Aborted => (
            "tasks.stopped",
            "task was stopped by tasks.stop".to_string(),
        ),
        Ending::Exited(n) => ("tasks.failed", format!("worker execution exit code {n}")),
        Ending::SpawnFailed(why) => ("tasks.failed", why.clone()),
        Ending::Taken(_) => return current_status(client, task).await,
    };
    // A task that already ended keeps its status: the setup step reports its own failure
    // reason, and an abort may have stopped it. Only a clean exit overrides an ending.
    let current = current_status(client, task).await;
    let keep = match current.as_deref() {
        Some("stopped") => true,
        Some("failed" | "completed" | "published") => endpoint != "tasks.completed",
        _ => false,
    };
    if keep {
        return current;
    }
    let body = json!({"task": task, "status_reason": reason, "status_message": message,
                      "force": false});
    let target = endpoint.trim_start_matches("tasks.").to_string();
    let started = Instant::now();
    loop {
        match client.call(endpoint, body.clone()).await {
            Ok(_) => return Some(target),
            Err(ApiError::Unreachable { .. }) if started.elapsed() < Duration::from_secs(600) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::warn!("{endpoint} for task {task} failed: {e}");
                // Force is the last resort for a task the server thinks is elsewhere.
                let mut forced = body.clone();
                forced["force"] = json!(true);
                return match client.call(endpoint, forced).await {
                    Ok(_) => Some(target),
                    Err(_) => current_status(client, task).await,
                };
            }
        }
    }
}

async fn current_status(client: &Client, task: &str) -> Option<String> {
    let r = client
        .call(
            "tasks.get_all",
            json!({"id": [task], "only_fields": ["id", "status"], "search_hidden": true}),
        )
        .await
        .ok()?;
    r.get("tasks")?
        .as_array()?
        .first()?
        .get("status")?
        .as_str()
        .map(str::to_string)
}

/// A client that gives up after 3 s. For the log shipper, which retries forever by itself (so
/// it resends soon after the server is back instead of sitting in a long internal retry), and
/// for the last `workers.unregister`, which must not hold up a shutdown while the server is
/// down. Made once per agent: each client logs in.
pub fn quick_client(client: &Arc<Client>) -> Arc<Client> {
    let mut quick = client.config().clone();
    quick.retry_for = Duration::from_secs(3);
    Client::new(quick)
        .map(Arc::new)
        .unwrap_or_else(|_| client.clone())
}

/// The shipper every run of a task uses; `client` comes from [`quick_client`].
pub fn start_shipper(
    client: Arc<Client>,
    task: &str,
    worker_id: &str,
    spool_dir: PathBuf,
) -> LogShipper {
    let mut opts = ShipperOptions::new(spool_dir);
    opts.flush_interval = Duration::from_millis(300);
    LogShipper::start(client, task.to_string(), worker_id.to_string(), opts)
}
