//! `daemon`: register, pull tasks in queue-priority order, run them one at a time, report,
//! and unregister on the way out.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clearml_api::{Client, ClientConfig};
use clearml_config::Config;
use clearml_report::{Level, StatusReporter};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::identity::{self, IdentityInput};
use crate::monitor::{self, Ending};
use crate::queues::{self, Queue};
use crate::settings::DaemonSettings;
use crate::slot_state::{self, SlotState};
use crate::{Console, DaemonError};

/// The daemon's command line.
#[derive(Clone, Debug, Default)]
pub struct DaemonOptions {
    pub queues: Vec<String>,
    pub create_queue: bool,
    pub order_fairness: bool,
    pub polling_interval: Option<f64>,
    pub foreground: bool,
    pub cpu_only: bool,
    pub gpus: Option<String>,
    pub child_report_tags: Vec<String>,
    /// `--config-file`, passed on to each task's process.
    pub config_file: Option<PathBuf>,
    pub debug: bool,
    /// `--docker [IMAGE [ARGS...]]`: each task runs in a container (see `docker_mode`).
    pub docker: Option<crate::DockerMode>,
    /// Variables for each task's process (`-O`, `--log-level`, `--git-user`, `--git-pass`).
    pub extra_env: Vec<(String, String)>,
    /// `--uptime` / `--downtime` as given (`None`: `agent.uptime`/`agent.downtime`), see
    /// `schedule`.
    pub uptime: Option<Vec<String>>,
    pub downtime: Option<Vec<String>>,
    /// `--services-mode [N]`: run up to N tasks at once (0: no limit), see `services`.
    pub services_mode: Option<usize>,
    /// `--dynamic-gpus`: the GPU pool shared between the queues' tasks (see `gpus`).
    pub dynamic_gpus: Option<crate::gpus::DynamicGpus>,
    /// `--use-owner-token`: each task runs with its owner's identity (see `owner`).
    pub use_owner_token: bool,
}

/// Longest single long-poll; short enough that a shutdown never waits long for it.
const LONG_POLL: Duration = Duration::from_secs(2);

/// Runs until SIGTERM/SIGINT; returns the process exit code.
pub async fn run_daemon(
    config: &Config,
    opts: DaemonOptions,
    console: &dyn Console,
) -> Result<i32, DaemonError> {
    let agent = config.agent()?;
    let env = config.env();
    let visible = if let Some(d) = &opts.dynamic_gpus {
        Some(d.pool.join(","))
    } else if opts.cpu_only || opts.services_mode.is_some() {
        Some("none".to_string())
    } else {
        opts.gpus.clone().or_else(|| {
            env.first(&["NVIDIA_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"])
                .map(|(_, v)| v.to_string())
        })
    };
    let identity = identity::claim(&IdentityInput {
        configured_id: agent.worker_id.clone(),
        worker_name: agent
            .worker_name
            .clone()
            .unwrap_or_else(identity::host_name),
        visible_devices: visible.clone(),
        dir: std::env::temp_dir(),
    })?;
    let worker_id = identity.worker_id.clone();
    let mut client_config = ClientConfig::from_config(config)?;
    client_config.worker = Some(worker_id.clone());
    let client = Arc::new(Client::new(client_config)?);
    if opts.use_owner_token {
        crate::owner::check_agent_key(&client).await?;
    }
    let queues = queues::resolve(&client, &opts.queues, opts.create_queue).await?;

    let mut settings = DaemonSettings::from_config(config, opts.polling_interval)?;
    settings.monitor.echo = opts.foreground;
    // A second agent on this machine builds in its own folder.
    let work_root = if identity.slot > 0 {
        PathBuf::from(format!("{}.{}", agent.venvs_dir.display(), identity.slot))
    } else {
        agent.venvs_dir.clone()
    };
    std::fs::create_dir_all(&work_root).map_err(|source| DaemonError::Io {
        what: format!("cannot create {}", work_root.display()),
        source,
    })?;

    // What a killed predecessor left running (issue 10 item 5, slot_state.rs).
    for line in slot_state::recover(&client, &agent.venvs_dir, &worker_id).await {
        console.line(&line);
    }
    if let Some(d) = &opts.docker {
        crate::docker_mode::cleanup_predecessors(&client, d, &worker_id, console).await;
    }
    console.line(&format!("Worker \"{worker_id}\" - Listening to queues:"));
    for q in &queues {
        console.line(&format!("  {}  {}", q.id, q.name));
    }
    let queue_ids: Vec<String> = queues.iter().map(|q| q.id.clone()).collect();
    let (reporter, registered) = StatusReporter::register(
        client.clone(),
        worker_id.clone(),
        queue_ids.clone(),
        settings.status_report,
        opts.child_report_tags.clone(),
    )
    .await;
    if let Err(e) = registered {
        console.line(&format!("Warning: could not register the worker: {e}"));
    }
    // --- cache size policy (issue 5, clearml-cachepolicy): every 10 minutes, and before
    // each task below. `console` is borrowed, so the timer's lines come back on a channel.
    let cache_policy = match clearml_cachepolicy::from_config(config) {
        Ok((policy, dirs)) if policy.is_active() => Some((policy, dirs)),
        Ok(_) => None,
        Err(e) => {
            console.line(&format!("Warning: cache size policy disabled: {e}"));
            None
        }
    };
    let (cache_tx, mut cache_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    let cache_tx_task = cache_tx.clone();
    let cache_timer = cache_policy.clone().map(|(policy, dirs)| {
        let every = Duration::from_secs(600);
        let report = move |r: clearml_cachepolicy::Report| {
            if r.is_noteworthy() {
                let _ = cache_tx.send(r.lines());
            }
        };
        let timer = clearml_cachepolicy::run_periodically(policy, dirs, every, report);
        tokio::spawn(timer)
    });
    // --- end cache size policy ---

    let (shutdown_tx, shutdown) = watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = shutdown_tx.send(true);
    });
    // `--stop --wait` sends SIGUSR1: finish the running task, take nothing new, exit.
    let (drain_tx, drain) = watch::channel(false);
    let drain_signal = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut usr1) = signal(SignalKind::user_defined1()) {
            usr1.recv().await;
            let _ = drain_tx.send(true);
        }
    });
    let mut schedule = crate::schedule::schedule_for(config, &opts.uptime, &opts.downtime)?;
    // agent.reload_config: the configuration is read again between tasks (below).
    let mut reload = agent.reload_config;
    if let Some(s) = &schedule {
        console.line(&format!("Schedule: {s}"));
    }
    let mut was_idle = false;
    let long_poll =
        env.get("CLEARML_AGENT_NO_LONG_POLL") != Some("1") && supports_long_poll(&client).await;
    let mut runner = Runner {
        client: client.clone(),
        ship_client: monitor::quick_client(&client),
        worker_id: worker_id.clone(),
        settings,
        state: SlotState::new(&work_root),
        work_root,
        visible,
        opts: opts.clone(),
    };
    let mut start = 0usize;
    let mut interrupted = false;
    // --- services mode (services.rs): many tasks at once instead of the loop below.
    let allocator = opts
        .dynamic_gpus
        .as_ref()
        .map(|d| crate::gpus::Allocator::new(d.pool.clone()));
    if opts.services_mode.is_some() || opts.dynamic_gpus.is_some() {
        let services = crate::services::Services {
            runner: &runner,
            queues: &queues,
            max: opts.services_mode.unwrap_or(0),
            status_report: runner.settings.status_report,
            child_report_tags: opts.child_report_tags.clone(),
            gpus: match (&allocator, &opts.dynamic_gpus) {
                (Some(a), Some(d)) => Some((
                    a,
                    &d.queues[..],
                    agent
                        .worker_name
                        .clone()
                        .unwrap_or_else(identity::host_name),
                )),
                _ => None,
            },
            schedule: schedule.as_ref(),
        };
        let (c, qs, pause) = (&*client, &queues[..], runner.settings.poll_interval);
        let next = |eligible: Vec<usize>| async move {
            // Ask only the eligible queues; answer with the index into all of them.
            let sub: Vec<Queue> = eligible.iter().map(|i| qs[*i].clone()).collect();
            let r = if long_poll {
                next_task_long_poll(c, &sub, 0).await
            } else {
                next_task_polling(c, &sub, 0, console).await
            };
            let r = r.map(|p| p.map(|(task, i)| (task, eligible[i])));
            match r {
                Ok(Some(p)) => Some(p),
                Ok(None) if long_poll => None,
                Ok(None) => {
                    tokio::time::sleep(pause).await;
                    None
                }
                Err(e) => {
                    console.line(&format!("Warning: could not access the task queues: {e}"));
                    tokio::time::sleep(pause).await;
                    None
                }
            }
        };
        interrupted = services
            .run(shutdown.clone(), drain.clone(), console, next)
            .await;
    }

    while opts.services_mode.is_none()
        && opts.dynamic_gpus.is_none()
        && !*shutdown.borrow()
        && !*drain.borrow()
    {
        // --- agent.reload_config: pick up edits of clearml.conf between tasks (the tasks'
        // own processes read it anyway); a file that no longer loads keeps the last settings.
        if reload {
            let fresh = Config::load(&clearml_config::LoadOptions {
                config_file: opts.config_file.clone(),
                env: config.env().clone(),
            });
            match fresh.map_err(DaemonError::from).and_then(|c| {
                let mut s = DaemonSettings::from_config(&c, opts.polling_interval)?;
                s.monitor.echo = opts.foreground;
                let sched = crate::schedule::schedule_for(&c, &opts.uptime, &opts.downtime)?;
                Ok((c.agent()?.reload_config, s, sched))
            }) {
                Ok((again, s, sched)) => {
                    reload = again;
                    runner.settings = s;
                    if sched != schedule {
                        match &sched {
                            Some(x) => console.line(&format!("Schedule (reloaded): {x}")),
                            None => console.line("Schedule removed (reloaded configuration)"),
                        }
                        schedule = sched;
                    }
                }
                Err(e) => console.line(&format!(
                    "Warning: could not reload the configuration, keeping the last one: {e}"
                )),
            }
        }
        // --- uptime/downtime (schedule.rs): outside the window take nothing, keep reporting.
        if let Some(schedule) = &schedule {
            let tags = crate::schedule::queue_tags(&client, &queue_ids).await;
            let idle =
                crate::Schedule::decide(schedule.active_now(), &tags) == crate::Decision::Idle;
            if idle != was_idle {
                console.line(if idle {
                    "Outside the working hours (--uptime/--downtime): taking no new task"
                } else {
                    "Inside the working hours: taking tasks"
                });
                was_idle = idle;
            }
            if idle {
                let (mut s, mut d) = (shutdown.clone(), drain.clone());
                let pause = if reload {
                    runner.settings.poll_interval
                } else {
                    Duration::from_secs(30)
                };
                let _ = tokio::time::timeout(pause, async {
                    tokio::select! { _ = s.changed() => {}, _ = d.changed() => {} }
                })
                .await;
                continue;
            }
        }
        let (c, qs, from) = (&*client, &queues[..], start);
        let next = async move {
            if long_poll {
                next_task_long_poll(c, qs, from).await
            } else {
                next_task_polling(c, qs, from, console).await
            }
        };
        tokio::pin!(next);
        let (mut s, mut d) = (shutdown.clone(), drain.clone());
        let next = tokio::select! {
            r = &mut next => r,
            _ = async { tokio::select! { _ = s.wait_for(|stop| *stop) => {}, _ = d.wait_for(|x| *x) => {} } } => {
                // A poll in flight may already have popped a task: let it answer (briefly) so
                // the task can be given back instead of being lost.
                tokio::time::timeout(LONG_POLL + Duration::from_secs(1), &mut next)
                    .await
                    .unwrap_or(Ok(None))
            }
        };
        let picked = match next {
            Ok(p) => p,
            Err(e) => {
                console.line(&format!("Warning: could not access the task queues: {e}"));
                // Do not spin on a persistent error (a deleted queue, a refused key).
                let mut s = shutdown.clone();
                let _ = tokio::time::timeout(runner.settings.poll_interval, s.changed()).await;
                None
            }
        };
        if *shutdown.borrow() || *drain.borrow() {
            if let Some((task, idx)) = picked {
                give_back(&client, &queues[idx], &task).await;
            }
            break;
        }
        let Some((task, idx)) = picked else {
            if !long_poll {
                if opts.foreground {
                    console.line(&format!(
                        "No tasks in queue(s), sleeping for {:.1} seconds",
                        runner.settings.poll_interval.as_secs_f64()
                    ));
                }
                let mut s = shutdown.clone();
                let _ = tokio::time::timeout(runner.settings.poll_interval, s.changed()).await;
            }
            continue;
        };
        let queue = &queues[idx];
        // --- cache size policy (issue 5): report the timer's evictions, enforce before the task.
        while let Ok(lines) = cache_rx.try_recv() {
            lines.iter().for_each(|l| console.line(l));
        }
        // The check runs beside the task, not before it: a scan of a large cache must not
        // delay the start (entries the task uses are locked, so they are never evicted).
        if let Some((policy, dirs)) = &cache_policy {
            let (policy, dirs, tx) = (policy.clone(), dirs.clone(), cache_tx_task.clone());
            tokio::spawn(async move {
                let r = clearml_cachepolicy::enforce_in_background(policy, dirs).await;
                if r.is_noteworthy() {
                    let _ = tx.send(r.lines());
                }
            });
        }
        // --- end cache size policy ---
        reporter.set_task(Some(task.clone()), Some(queue.id.clone()));
        let result = runner
            .run_one(&task, queue, shutdown.clone(), console)
            .await;
        reporter.set_task(None, None);
        if result.ending == Ending::Interrupted {
            interrupted = true;
        }
        // Priority order starts every pass at the first queue; fairness moves on.
        start = if opts.order_fairness {
            (idx + 1) % queues.len().max(1)
        } else {
            0
        };
    }
    signals.abort();
    drain_signal.abort();
    if let Some(t) = cache_timer {
        t.abort(); // cache size policy timer (issue 5)
    }
    reporter.stop().await;
    let _ = runner
        .ship_client
        .call("workers.unregister", json!({"worker": worker_id}))
        .await;
    console.line(&format!(
        "Worker \"{worker_id}\" stopped{}",
        if interrupted {
            " (the running task was marked stopped)"
        } else {
            ""
        }
    ));
    drop(identity);
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Our embedded server answers `server.info` with `long_poll: true` (the daemon skips the
/// question when `CLEARML_AGENT_NO_LONG_POLL=1`).
async fn supports_long_poll(client: &Client) -> bool {
    client
        .call("server.info", json!({}))
        .await
        .ok()
        .and_then(|r| r.get("long_poll").and_then(Value::as_bool))
        .unwrap_or(false)
}

/// The queues in the order this pass looks at them.
fn rotated(queues: &[Queue], start: usize) -> Vec<(usize, &Queue)> {
    let n = queues.len();
    (0..n)
        .map(|i| ((start + i) % n, &queues[(start + i) % n]))
        .collect()
}

fn task_of(r: &Value) -> Option<String> {
    r.get("entry")
        .and_then(|e| e.get("task"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

async fn next_task_long_poll(
    client: &Client,
    queues: &[Queue],
    start: usize,
) -> Result<Option<(String, usize)>, DaemonError> {
    let order = rotated(queues, start);
    let Some((_, first)) = order.first() else {
        return Ok(None);
    };
    let ids: Vec<&str> = order.iter().map(|(_, q)| q.id.as_str()).collect();
    let r = client
        .call(
            "queues.get_next_task",
            json!({"queue": first.id, "queues": ids, "wait_ms": LONG_POLL.as_millis() as u64}),
        )
        .await?;
    let Some(task) = task_of(&r) else {
        return Ok(None);
    };
    let from = r.get("queue").and_then(Value::as_str).unwrap_or(&first.id);
    let idx = queues.iter().position(|q| q.id == from).unwrap_or(0);
    Ok(Some((task, idx)))
}

async fn next_task_polling(
    client: &Client,
    queues: &[Queue],
    start: usize,
    console: &dyn Console,
) -> Result<Option<(String, usize)>, DaemonError> {
    for (idx, q) in rotated(queues, start) {
        match client
            .call("queues.get_next_task", json!({"queue": q.id}))
            .await
        {
            Ok(r) => {
                if let Some(task) = task_of(&r) {
                    return Ok(Some((task, idx)));
                }
            }
            Err(e) => console.line(&format!(
                "Warning: Could not access task queue [{}/{}], error: {e}",
                q.id, q.name
            )),
        }
    }
    Ok(None)
}

/// A task pulled while shutting down goes back to the head of its queue.
pub(crate) async fn give_back(client: &Client, queue: &Queue, task: &str) {
    let _ = client
        .call("queues.add_task", json!({"queue": queue.id, "task": task}))
        .await;
    let _ = client
        .call(
            "queues.move_task_to_front",
            json!({"queue": queue.id, "task": task}),
        )
        .await;
}

/// Runs tasks for the daemon.
pub(crate) struct Runner {
    pub(crate) client: Arc<Client>,
    /// [`monitor::quick_client`]: log shipping and the last unregister.
    pub(crate) ship_client: Arc<Client>,
    pub(crate) worker_id: String,
    pub(crate) settings: DaemonSettings,
    pub(crate) work_root: PathBuf,
    /// Which task runs, for the next daemon if this one is killed.
    pub(crate) state: SlotState,
    pub(crate) visible: Option<String>,
    pub(crate) opts: DaemonOptions,
}

impl Runner {
    pub(crate) async fn run_one(
        &self,
        task: &str,
        queue: &Queue,
        shutdown: watch::Receiver<bool>,
        console: &dyn Console,
    ) -> monitor::TaskResult {
        console.line(&format!("Running task '{task}'"));
        if let Err(e) = self
            .client
            .call(
                "tasks.started",
                json!({"task": task, "force": true, "status_message": "pulled by agent"}),
            )
            .await
        {
            console.line(&format!("Warning: could not mark task {task} started: {e}"));
        }
        let owner = match self.opts.use_owner_token {
            true => {
                match crate::owner::owner_session(&self.client, &self.ship_client, task).await {
                    Ok(o) => Some(o),
                    Err(reason) => return self.refuse(task, &reason, console).await,
                }
            }
            false => None,
        };
        // With --use-owner-token everything about the task goes through the owner's token.
        let (client, ship_client) = match &owner {
            Some(o) => (o.client.clone(), o.ship_client.clone()),
            None => (self.client.clone(), self.ship_client.clone()),
        };
        let shipper = monitor::start_shipper(
            ship_client,
            task,
            &self.worker_id,
            self.settings.monitor.spool_dir.clone(),
        );
        if let Some(o) = &owner {
            shipper.line(
                Level::Info,
                &format!("running task {task} as its owner {}", o.user),
            );
        }
        shipper.line(
            Level::Info,
            &format!(
                "task {task} pulled from {} by worker {}",
                queue.id, self.worker_id
            ),
        );
        let mut cmd = child_command(
            &self.settings.agent_exe,
            task,
            &self.worker_id,
            self.opts.config_file.as_deref(),
            self.opts.debug,
            &self.work_root,
            self.visible.as_deref(),
        );
        let marker = SlotState::marker_for(task);
        cmd.env(slot_state::TREE_VAR, &marker);
        if let Err(e) = self.state.record(task, &self.worker_id, &marker) {
            console.line(&format!("Warning: cannot record the running task: {e}"));
        }
        cmd.envs(self.opts.extra_env.iter().map(|(k, v)| (k, v)));
        if let Some(o) = &owner {
            cmd.env(clearml_api::AUTH_TOKEN_VAR, &o.token);
        }
        if let Some(d) = &self.opts.docker {
            d.apply(&mut cmd);
        }
        let result = monitor::run_task(
            client,
            &self.worker_id,
            task,
            cmd,
            &self.settings.monitor,
            shutdown,
            shipper,
        )
        .await;
        self.state.clear();
        if let Some(d) = &self.opts.docker {
            d.remove_container(task).await;
        }
        console.line(&format!(
            "Task '{task}' finished: {}",
            result.status.as_deref().unwrap_or("unknown status")
        ));
        if result.undelivered > 0 {
            console.line(&format!(
                "Warning: {} console lines of task {task} could not be delivered yet; they \
                 are kept in {}",
                result.undelivered,
                self.settings.monitor.spool_dir.display()
            ));
        }
        result
    }
}

impl Runner {
    /// `--use-owner-token` and the task's owner cannot be acted as: the task fails with the
    /// reason (in its console and status message) instead of running as the agent.
    async fn refuse(&self, task: &str, reason: &str, console: &dyn Console) -> monitor::TaskResult {
        let message = format!("--use-owner-token: {reason}");
        console.line(&format!("Error: task {task}: {message}"));
        let _ = self
            .ship_client
            .call_lines(
                "events.add_batch",
                &[
                    json!({"type": "log", "task": task, "worker": self.worker_id,
                         "level": "error", "msg": format!("clearml-agent: {message}\n"),
                         "timestamp": chrono::Utc::now().timestamp_millis()}),
                ],
            )
            .await;
        let failed = self
            .client
            .call(
                "tasks.failed",
                json!({"task": task, "force": true,
                       "status_reason": "cannot run the task as its owner",
                       "status_message": message}),
            )
            .await;
        if let Err(e) = &failed {
            console.line(&format!("Warning: could not mark task {task} failed: {e}"));
        }
        monitor::TaskResult {
            ending: monitor::Ending::Exited(1),
            status: Some("failed".into()),
            undelivered: 0,
        }
    }
}

/// `clearml-agent [--config-file F] [-d] execute --disable-monitoring --id T`, with the
/// worker id and the slot's folder in its environment.
pub(crate) fn child_command(
    exe: &std::path::Path,
    task: &str,
    worker_id: &str,
    config_file: Option<&std::path::Path>,
    debug: bool,
    work_root: &std::path::Path,
    visible: Option<&str>,
) -> Command {
    let mut cmd = Command::new(exe);
    if let Some(f) = config_file {
        cmd.arg("--config-file").arg(f);
        cmd.env("CLEARML_CONFIG_FILE", f)
            .env("TRAINS_CONFIG_FILE", f);
    }
    if debug {
        cmd.arg("--debug");
    }
    cmd.args(["execute", "--disable-monitoring", "--id", task]);
    cmd.env("CLEARML_WORKER_ID", worker_id)
        .env("CLEARML_AGENT_WORK_ROOT", work_root)
        .env(
            crate::slot_state::PARENT_VAR,
            std::process::id().to_string(),
        );
    match visible {
        Some("none") => {
            cmd.env("NVIDIA_VISIBLE_DEVICES", "none")
                .env("CUDA_VISIBLE_DEVICES", "none");
        }
        Some("all") => {
            cmd.env("NVIDIA_VISIBLE_DEVICES", "all")
                .env_remove("CUDA_VISIBLE_DEVICES");
        }
        Some(d) => {
            cmd.env("NVIDIA_VISIBLE_DEVICES", d)
                .env("CUDA_VISIBLE_DEVICES", d);
        }
        None => {}
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str) -> Queue {
        Queue {
            id: id.into(),
            name: id.into(),
        }
    }

    #[test]
    fn rotation_keeps_every_queue_once() {
        let qs = vec![q("a"), q("b"), q("c")];
        let names = |s| {
            rotated(&qs, s)
                .into_iter()
                .map(|(i, q)| (i, q.id.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(0),
            vec![(0, "a".into()), (1, "b".into()), (2, "c".into())]
        );
        assert_eq!(
            names(2),
            vec![(2, "c".into()), (0, "a".into()), (1, "b".into())]
        );
        assert!(rotated(&[], 0).is_empty());
    }
}
