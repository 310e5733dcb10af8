//! Slurm glue: run queued ClearML tasks as `sbatch` jobs on a cluster Slurm already runs.
//!
//! Two halves, both in the `clearml-agent` binary:
//!
//! * The **glue** ([`run_glue`], `clearml-agent slurm --queue Q --template F`) registers as a
//!   worker, pulls tasks in queue order while fewer than `--max-jobs` of its jobs are in
//!   flight, renders the queue's template ([`template`]) and submits it. It marks the task
//!   `in_progress`, records the job id in the task's `runtime` (`slurm_job_id`) and the
//!   job's comment (`clearml-agent:<worker>:<task>`), and keeps watching: a pending job's
//!   reason goes to the status message, an abort cancels the job (`scancel`, status
//!   `stopped`), a job that ends while its task is still running fails the task with Slurm's
//!   state and reason. Everything it knows is in Slurm and on the server, so a glue stopped
//!   with SIGTERM leaves its jobs running and finds them again (by comment) when it restarts.
//! * The **job side** ([`run_job`], the hidden `clearml-agent slurm job`): the submitted script
//!   keeps the template's `#SBATCH` header and replaces the body by one line that runs the
//!   rendered body under this supervisor. The supervisor ships the body's whole output (module
//!   loads and setup lines as well as the task's) to the task's console, watches for an abort,
//!   and sets the final status from the body's exit code, with no help from the glue. The
//!   body's `${CLEARML_AGENT_EXECUTE}` is `clearml-agent execute --disable-monitoring --id T`,
//!   which prepares the task in a build folder of its own (`<venvs_dir>.slurm/<job id>`, removed
//!   afterwards) and becomes the task; the vcs and venv caches stay shared, which their locks
//!   allow.
//!
//! Nothing here needs accounting (`sacct`): `squeue --states=all` still lists a job for
//! `MinJobAge` seconds after it ended, which is how its end state is read.

mod glue;
mod job;
pub mod slurm;
pub mod template;

pub use glue::{GlueOptions, run_glue};
pub use job::{JobOptions, run_job};

use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error(transparent)]
    Api(#[from] clearml_api::ApiError),
    #[error(transparent)]
    Config(#[from] clearml_config::ConfigError),
    #[error(transparent)]
    Template(#[from] template::TemplateError),
    #[error("{0}")]
    Slurm(String),
    #[error("{0}")]
    Usage(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// What the CLI shows a person (the daemon's trait); this crate never prints by itself.
pub use clearml_daemon::Console;

/// The comment every job of worker `worker` carries, before the task id.
pub fn comment_prefix(worker: &str) -> String {
    format!("clearml-agent:{worker}:")
}

/// Sends one line to a task's console.
pub(crate) async fn console_line(
    client: &clearml_api::Client,
    task: &str,
    worker: &str,
    level: &str,
    msg: &str,
) {
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let event = json!({"type": "log", "task": task, "level": level, "worker": worker,
                       "msg": msg, "timestamp": ts});
    if let Err(e) = client.call_lines("events.add_batch", &[event]).await {
        tracing::warn!("cannot send a console line to task {task}: {e}");
    }
}

/// A task's status and the fields the glue reads.
pub(crate) async fn task_state(
    client: &clearml_api::Client,
    task: &str,
) -> Result<Option<Value>, clearml_api::ApiError> {
    let r = client
        .call(
            "tasks.get_all",
            json!({"id": [task], "only_fields": ["id", "status", "status_message", "runtime"],
                   "search_hidden": true}),
        )
        .await?;
    Ok(r.get("tasks")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .cloned())
}

pub(crate) fn text<'v>(v: &'v Value, key: &str) -> &'v str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}
