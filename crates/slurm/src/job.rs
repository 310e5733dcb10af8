//! The job side: runs the rendered template body inside the Slurm job, ships its whole output
//! to the task's console, acts on an abort, and sets the final status.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_api::{ApiError, Client, ClientConfig};
use clearml_config::Config;
use clearml_daemon::{DaemonSettings, TaskProcess, kill_tree};
use clearml_report::{Level, LogShipper, ShipperOptions};
use serde_json::json;

use crate::{SlurmError, task_state, text};

/// Writes the job's output where Slurm's output file gets it (the CLI's stdout).
pub type Echo = Box<dyn Fn(&[u8]) + Send + Sync>;

/// `clearml-agent slurm job`'s command line.
pub struct JobOptions {
    pub task: String,
    /// The glue's worker id; the job reports as `<worker>:job<id>`.
    pub worker_id: String,
    /// The body's interpreter and script.
    pub command: Vec<String>,
    /// A file to delete when the job ends (the body the job script wrote).
    pub remove: Option<PathBuf>,
    pub echo: Option<Echo>,
}

enum End {
    Exited(i32),
    Aborted,
    /// Slurm (scancel, time limit, node shutdown) sent us SIGTERM.
    Terminated,
    /// The task was reset, re-enqueued, or ended by someone else.
    Taken(String),
}

/// Runs the body; returns the exit code for Slurm.
pub async fn run_job(config: &Config, opts: JobOptions) -> Result<i32, SlurmError> {
    let env = config.env();
    let job_id = env
        .get("SLURM_JOB_ID")
        .map(str::to_string)
        .unwrap_or_else(|| format!("pid{}", std::process::id()));
    let node = env.get("SLURMD_NODENAME").unwrap_or("?").to_string();
    let worker = format!("{}:job{job_id}", opts.worker_id);
    let mut cc = ClientConfig::from_config(config)?;
    cc.worker = Some(worker.clone());
    let client = Arc::new(Client::new(cc.clone())?);
    let mut quick = cc;
    quick.retry_for = Duration::from_secs(3);
    let ship_client = Arc::new(Client::new(quick)?);
    let settings = DaemonSettings::from_config(config, None)?;
    let task = opts.task.clone();

    // Listen for Slurm's SIGTERM before anything else runs.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|source| SlurmError::Io {
            what: "cannot listen for SIGTERM".into(),
            source,
        })?;

    // Aborted (or taken elsewhere) while the job waited: run nothing, and do not undo it.
    if let Some(end) = check_abort(&client, &task).await {
        if matches!(end, End::Aborted) {
            let current = task_state(&client, &task).await.ok().flatten();
            finish(
                &client,
                &task,
                "tasks.stopped",
                "task was stopped by tasks.stop",
                &worker,
                current.as_ref(),
            )
            .await;
        }
        return Ok(0);
    }
    client
        .call(
            "tasks.started",
            json!({"task": task, "force": true, "status_reason": "slurm job started",
                   "status_message": format!("running as Slurm job {job_id} on {node}")}),
        )
        .await?;
    let mut shipper_opts = ShipperOptions::new(settings.monitor.spool_dir.clone());
    shipper_opts.flush_interval = Duration::from_millis(300);
    let shipper = LogShipper::start(ship_client, task.clone(), worker.clone(), shipper_opts);
    shipper.line(
        Level::Info,
        &format!("Slurm job {job_id} started on node {node} (worker {worker})"),
    );

    let agent = config.agent()?;
    let work_root = PathBuf::from(format!("{}.slurm", agent.venvs_dir.display())).join(&job_id);
    std::fs::create_dir_all(&work_root).map_err(|source| SlurmError::Io {
        what: format!("cannot create {}", work_root.display()),
        source,
    })?;
    let Some((program, args)) = opts.command.split_first() else {
        return Err(SlurmError::Usage("no command to run in the job".into()));
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("CLEARML_AGENT_WORK_ROOT", &work_root)
        .env("CLEARML_WORKER_ID", &worker)
        .env("CLEARML_TASK_ID", &task);

    let mut process = match TaskProcess::spawn(cmd) {
        Ok(p) => p,
        Err(e) => {
            let reason = format!("cannot start the job's script ({program}): {e}");
            shipper.line(Level::Error, &reason);
            shipper.finish(Duration::from_secs(30)).await;
            let _ = client
                .call(
                    "tasks.failed",
                    json!({"task": task, "force": true, "status_reason": reason}),
                )
                .await;
            return Ok(1);
        }
    };
    let mut output = process.take_output();
    let mut buf = Vec::new();
    let forward = |bytes: &[u8]| {
        shipper.push_bytes(Level::Info, bytes);
        if let Some(e) = &opts.echo {
            e(bytes);
        }
    };
    let poll = settings.monitor.abort_poll.max(Duration::from_millis(500));
    let mut next_poll = Instant::now() + poll;
    let mut last_ping = Instant::now();
    let mut end: Option<End> = None;
    let mut terminated = false;
    while end.is_none() {
        tokio::select! {
            chunk = async {
                match output.as_mut() {
                    Some(o) => o.next_chunk(&mut buf).await,
                    None => std::future::pending().await,
                }
            } => match chunk {
                Some(n) => forward(&buf[..n]),
                None => output = None,
            },
            status = process.child.wait() => {
                let code = match status {
                    Ok(s) => {
                        use std::os::unix::process::ExitStatusExt as _;
                        s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(1))
                    }
                    Err(_) => -1,
                };
                end = Some(End::Exited(code));
            }
            _ = term.recv() => {
                terminated = true;
                end = Some(End::Terminated);
            }
            _ = tokio::time::sleep_until(next_poll.into()) => {
                next_poll = Instant::now() + poll;
                // The server stops tasks that stay silent too long; a quiet task still lives.
                if last_ping.elapsed() >= settings.monitor.ping_interval {
                    last_ping = Instant::now();
                    let _ = client.call("tasks.ping", json!({"task": task})).await;
                }
                if let Some(e) = check_abort(&client, &task).await {
                    end = Some(e);
                }
            }
        }
    }
    // Slurm signals every process of the job at once: the body may exit first.
    if !terminated
        && tokio::time::timeout(Duration::from_millis(300), term.recv())
            .await
            .is_ok()
    {
        terminated = true;
    }
    let mut end = end.unwrap_or(End::Exited(-1));
    if terminated && matches!(end, End::Exited(_)) {
        end = End::Terminated;
    }
    kill_tree(&mut process, settings.monitor.kill_grace).await;
    if let Some(mut o) = output {
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Ok(Some(n)) = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            o.next_chunk(&mut buf),
        )
        .await
        {
            forward(&buf[..n]);
        }
    }
    let current = task_state(&client, &task).await.ok().flatten();
    let aborted_meanwhile = current.as_ref().is_some_and(|t| {
        text(t, "status") == "stopped"
            || (text(t, "status") == "in_progress"
                && text(t, "status_message").contains("stopping"))
    });
    let (endpoint, reason, code) = match &end {
        End::Exited(0) => ("tasks.completed", "worker execution done".to_string(), 0),
        End::Exited(n) => (
            "tasks.failed",
            format!("worker execution exit code {n} (Slurm job {job_id})"),
            *n,
        ),
        End::Aborted => ("tasks.stopped", "task was stopped by tasks.stop".into(), 0),
        End::Terminated if aborted_meanwhile => {
            ("tasks.stopped", "task was stopped by tasks.stop".into(), 0)
        }
        End::Terminated => (
            "tasks.failed",
            format!(
                "Slurm job {job_id} was terminated (scancel, time limit or node shutdown) \
                 before the task finished"
            ),
            143,
        ),
        End::Taken(why) => ("", why.clone(), 0),
    };
    let line = match &end {
        End::Exited(0) => "Process completed successfully".to_string(),
        End::Exited(n) => format!("Process failed, exit code {n}"),
        End::Aborted => "User aborted: the job's processes were stopped".to_string(),
        _ => reason.clone(),
    };
    shipper.line(Level::Info, &line);
    // Lines first, then the status.
    shipper.finish(Duration::from_secs(20)).await;
    if !endpoint.is_empty() {
        finish(&client, &task, endpoint, &reason, &worker, current.as_ref()).await;
    }
    let _ = std::fs::remove_dir_all(&work_root);
    if let Some(f) = &opts.remove {
        let _ = std::fs::remove_file(f);
    }
    Ok(code)
}

async fn check_abort(client: &Client, task: &str) -> Option<End> {
    let t = match task_state(client, task).await {
        Ok(Some(t)) => t,
        Ok(None) => return Some(End::Taken("the task was deleted".into())),
        Err(_) => return None,
    };
    match text(&t, "status") {
        "stopped" => Some(End::Aborted),
        "in_progress" if text(&t, "status_message").contains("stopping") => Some(End::Aborted),
        s @ ("queued" | "created" | "completed" | "failed" | "published" | "closed") => {
            Some(End::Taken(format!("the task's status changed to {s}")))
        }
        _ => None,
    }
}

/// Sets the final status unless the task already ended on its own terms: a failure the
/// preparation reported, or an abort, stays; only a clean exit overrides an ending.
async fn finish(
    client: &Client,
    task: &str,
    endpoint: &str,
    reason: &str,
    worker: &str,
    current: Option<&serde_json::Value>,
) {
    let status = current.map(|t| text(t, "status")).unwrap_or_default();
    let keep = match status {
        "stopped" => true,
        "failed" | "completed" | "published" => endpoint != "tasks.completed",
        _ => false,
    };
    if keep {
        return;
    }
    let body = json!({"task": task, "force": true, "status_reason": reason,
                      "status_message": format!("Changed by clearml-agent {worker}")});
    let started = Instant::now();
    loop {
        match client.call(endpoint, body.clone()).await {
            Err(ApiError::Unreachable { .. }) if started.elapsed() < Duration::from_secs(300) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                tracing::warn!("{endpoint} for task {task} failed: {e}");
                return;
            }
            Ok(_) => return,
        }
    }
}
