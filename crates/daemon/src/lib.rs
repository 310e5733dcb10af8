//! The agent's work: pull tasks from queues, run each in its own process group, stream its
//! console, notice aborts, and set the final status.
//!
//! Two processes per task, as with the Python agent. The daemon (or a monitored `execute`)
//! stays in charge: it claims the task, starts `clearml-agent execute --disable-monitoring`
//! in a new process group, ships that group's merged output, polls for an abort and decides
//! the final status from the exit code. The child prepares the task (clone, diff,
//! environment; see [`prepare`]) and then *becomes* the task with `exec`, so the exit code the
//! daemon sees is the task's own and an abort kills git, uv and the task alike.
//!
//! With our embedded server the daemon long-polls `queues.get_next_task` over all its queues
//! at once (an extension the server advertises in `server.info`), so a task starts as soon as
//! it is enqueued; with any other server it polls every `--polling-interval` seconds. In the
//! same way the abort watch holds a `tasks.get_all` open on our server (`task_long_poll`), which
//! answers as soon as the task's status changes, and polls every 0.5 s elsewhere.
//! `--debug` prints where the time of a task's start went (`timing`).
//!
//! Hardening: a daemon killed with SIGKILL takes its task's first process with it, and the next
//! daemon with the same work folders kills the rest and fails the task (`slot_state`); the
//! working folder and the entry point stay inside the repository once symlinks are resolved
//! (`contain`); `--stop` signals only this user's agents, checked in `/proc` (`stop`).
//!
//! Breadth of the daemon (issue 12), each in its own module with a small hook in the loop:
//! `services` runs several tasks at once (`--services-mode`, and `--dynamic-gpus` with the GPU
//! pool of `gpus`), each under its own worker id; `schedule` holds uptime/downtime windows and
//! the queues' `force_workers` tags; SIGUSR1 (`--stop --wait`, [`drain_agent`]) lets the running
//! task finish and takes nothing new; `agent.reload_config` re-reads the configuration between
//! tasks.
//!
//! Docker mode (`--docker`) keeps the same two processes: the child checks the code out on the
//! host and runs the task's container attached, and our own binary, mounted into the
//! container, builds the environment there and becomes the task (see `docker_mode`).

mod contain;
mod daemon;
mod docker_mode;
mod execute;
mod gpus;
mod identity;
mod inner_config;
mod monitor;
mod owner;
mod prepare;
mod prepare_cache;
mod process;
mod procinfo;
mod queues;
mod schedule;
mod services;
mod settings;
mod slot_state;
mod stop;
mod task;
pub mod timing;

pub use daemon::{DaemonOptions, run_daemon};
pub use docker_mode::{DockerMode, build_in_docker, cleanup_predecessors};
pub use execute::{
    BuildOptions, ExecuteOptions, STANDALONE_VAR, build_environment, execute_child,
    execute_monitored, list_workers,
};
pub use gpus::{Allocator, DynamicGpus, GpuSpecError, QueueGpus, parse_pool, parse_queues};
pub use identity::{Identity, IdentityInput, Running, claim, running_agents, worker_id_for};
pub use inner_config::{inner_config, inner_config_text};
pub use monitor::{Ending, MonitorSettings, TaskResult};
pub use prepare::{
    Code, Environment, PrepareError, PrepareOptions, PrepareSettings, Prepared, command_line,
    prepare_code, prepare_environment, repo_folder_name, task_variables, venv_variables,
};
pub use process::{TaskProcess, is_alive, kill_tree, tree_of};
pub use queues::Queue;
pub use schedule::{Decision, Schedule, ScheduleError, schedule_for};
pub use services::{has_room, service_work_root, service_worker_id};
pub use settings::DaemonSettings;
pub use slot_state::die_with_parent;
pub use stop::{Skipped, StopPlan, drain_agent, plan_stop, stop_agent};
pub use task::{ExecutionInfo, Interpreter, TaskError};

/// What the CLI shows a person: the workspace's one progress trait (crate
/// `clearml-progress`). The daemon never prints by itself; in the task process (`execute
/// --disable-monitoring`) the console's lines are the task's console log.
pub use clearml_progress::Reporter as Console;
pub use clearml_progress::{NullReporter, Step};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Api(#[from] clearml_api::ApiError),
    #[error(transparent)]
    Config(#[from] clearml_config::ConfigError),
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error(transparent)]
    Prepare(#[from] prepare::PrepareError),
    #[error("{0}")]
    Queue(String),
    #[error("{0}")]
    Task(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}
