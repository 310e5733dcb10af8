//! The worker status reporter: `workers.status_report` with machine statistics every period,
//! and at once when the worker's task changes.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clearml_api::{ApiError, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::stats::StatsSampler;

const SAMPLE_EVERY: Duration = Duration::from_millis(500);
/// The first full report comes soon after start, so a new worker shows its stats quickly.
const FIRST_REPORT_AFTER: Duration = Duration::from_secs(3);
/// One report may not hold up sampling and task changes for longer than this.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`StatusReporter::stop`] waits for a report in flight.
const STOP_GRACE: Duration = Duration::from_secs(2);

enum Command {
    SetTask(Option<String>, Option<String>),
    Daemon(bool),
    Stop,
}

/// Reports a worker's status in the background; see [`StatusReporter::start`].
pub struct StatusReporter {
    commands: mpsc::UnboundedSender<Command>,
    handle: JoinHandle<()>,
}

impl StatusReporter {
    /// Starts reporting `worker_id` (listening on the queue ids `queues`, with `tags`):
    /// samples every 0.5 s, reports after 3 s and then every `period` (30 s in the Python
    /// agent; `CLEARML_AGENT_STATUS_REPORT_FREQ_SEC` is the caller's to apply). Reports say
    /// `is_daemon: true` until [`StatusReporter::set_daemon`] says otherwise. Must be called
    /// inside a Tokio runtime. Failed reports are only logged.
    pub fn start(
        client: Arc<Client>,
        worker_id: String,
        queues: Vec<String>,
        period: Duration,
        tags: Vec<String>,
    ) -> StatusReporter {
        let (commands, rx) = mpsc::unbounded_channel();
        let reporter = Reporter {
            client,
            worker: worker_id,
            queues,
            tags,
            task: None,
            queue: None,
            is_daemon: true,
            failing: false,
        };
        let handle = tokio::spawn(reporter.run(rx, period.max(SAMPLE_EVERY)));
        StatusReporter { commands, handle }
    }

    /// Registers `worker_id` with its queues (`workers.register`), then starts reporting it
    /// as [`StatusReporter::start`] does. The reporter starts even when the registration
    /// failed (a server blip must not stop a worker); the error is the caller's to show.
    pub async fn register(
        client: Arc<Client>,
        worker_id: String,
        queues: Vec<String>,
        period: Duration,
        tags: Vec<String>,
    ) -> (StatusReporter, Result<(), ApiError>) {
        let registered = client
            .call(
                "workers.register",
                json!({"worker": worker_id, "queues": queues}),
            )
            .await
            .map(drop);
        let reporter = StatusReporter::start(client, worker_id, queues, period, tags);
        (reporter, registered)
    }

    /// The task the worker runs now (and the queue it came from); a change is reported at
    /// once, without machine statistics.
    pub fn set_task(&self, task: Option<String>, queue: Option<String>) {
        let _ = self.commands.send(Command::SetTask(task, queue));
    }

    /// The `is_daemon` flag of later reports (false for `execute` runs).
    pub fn set_daemon(&self, is_daemon: bool) {
        let _ = self.commands.send(Command::Daemon(is_daemon));
    }

    /// Stops reporting (a report in flight gets a moment to finish).
    pub async fn stop(self) {
        let StatusReporter {
            commands,
            mut handle,
        } = self;
        let _ = commands.send(Command::Stop);
        if tokio::time::timeout(STOP_GRACE, &mut handle).await.is_err() {
            handle.abort();
        }
    }
}

struct Reporter {
    client: Arc<Client>,
    worker: String,
    queues: Vec<String>,
    tags: Vec<String>,
    task: Option<String>,
    queue: Option<String>,
    is_daemon: bool,
    /// The last report failed (warn once per outage).
    failing: bool,
}

impl Reporter {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>, period: Duration) {
        let disk = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        let mut sampler = match tokio::task::spawn_blocking(move || StatsSampler::new(disk)).await {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("no machine statistics: {e}");
                None
            }
        };
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut next_report = Instant::now() + FIRST_REPORT_AFTER;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Some(s) = sampler.as_mut() {
                        s.sample();
                    }
                    if Instant::now() >= next_report {
                        let stats = sampler.as_mut().map(StatsSampler::report);
                        self.send(stats).await;
                        next_report = Instant::now() + period;
                    }
                }
                command = rx.recv() => match command {
                    Some(Command::SetTask(task, queue)) => {
                        if (&task, &queue) != (&self.task, &self.queue) {
                            self.task = task;
                            self.queue = queue;
                            self.send(None).await;
                        }
                    }
                    Some(Command::Daemon(d)) => self.is_daemon = d,
                    Some(Command::Stop) | None => return,
                },
            }
        }
    }

    async fn send(&mut self, machine_stats: Option<Value>) {
        let mut body = json!({
            "worker": self.worker,
            "timestamp": now_ms(),
            "tags": self.tags,
            "is_daemon": self.is_daemon,
        });
        if !self.queues.is_empty() {
            body["queues"] = json!(self.queues);
        }
        if let Some(t) = &self.task {
            body["task"] = json!(t);
        }
        if let Some(q) = &self.queue {
            body["queue"] = json!(q);
        }
        if let Some(s) = machine_stats {
            body["machine_stats"] = s;
        }
        let outcome = tokio::time::timeout(
            SEND_TIMEOUT,
            self.client.call("workers.status_report", body),
        )
        .await;
        let error = match outcome {
            Ok(Ok(_)) => {
                if self.failing {
                    tracing::info!("worker status reports are delivered again");
                }
                self.failing = false;
                return;
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {SEND_TIMEOUT:?}"),
        };
        if self.failing {
            tracing::debug!("worker status report failed: {error}");
        } else {
            tracing::warn!("worker status report failed: {error}");
            self.failing = true;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
