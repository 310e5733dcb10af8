//! Services mode (`daemon --services-mode [N]`): many long-lived tasks at once.
//!
//! The daemon keeps pulling while its tasks run, up to N at a time (no N: no limit). Each task
//! runs exactly as a single task would ([`crate::daemon`]'s runner: own process group, console
//! shipping, abort polling, final status), but under its own worker id
//! `<daemon worker id>:service:<task id>`, registered and reporting for as long as the task
//! runs, and in its own work folder `<work root>.service.<task id>` (removed afterwards). The
//! daemon itself is CPU-only. SIGTERM reaches every runner through the shared shutdown
//! signal: each kills its task and marks it stopped, and the daemon waits for all of them.
//!
//! The runners are futures polled by the daemon's own task (not spawned), so they share its
//! borrowed console; a queue poll in flight is never dropped while a task finishes, so no
//! popped task is lost.

use std::path::PathBuf;
use std::pin::pin;
use std::time::Duration;

use clearml_report::StatusReporter;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use serde_json::json;
use tokio::sync::watch;

use crate::Console;
use crate::daemon::Runner;
use crate::queues::Queue;
use crate::slot_state::SlotState;

/// The worker id a service task runs under.
pub fn service_worker_id(daemon_id: &str, task: &str) -> String {
    format!("{daemon_id}:service:{task}")
}

/// The work folder of one service task.
pub fn service_work_root(work_root: &std::path::Path, task: &str) -> PathBuf {
    PathBuf::from(format!("{}.service.{task}", work_root.display()))
}

/// Whether another task may start with `running` tasks running (`max` 0: no limit).
pub fn has_room(max: usize, running: usize) -> bool {
    max == 0 || running < max
}

/// What the services loop needs from the daemon.
pub(crate) struct Services<'a> {
    pub runner: &'a Runner,
    pub queues: &'a [Queue],
    pub max: usize,
    pub status_report: Duration,
    pub child_report_tags: Vec<String>,
    /// `--dynamic-gpus`: the pool, each queue's share (same order as `queues`) and the worker
    /// name the tasks' ids are made from.
    pub gpus: Option<(
        &'a crate::gpus::Allocator,
        &'a [crate::gpus::QueueGpus],
        String,
    )>,
    /// `--uptime`/`--downtime`: outside the window no new task starts (running ones go on).
    pub schedule: Option<&'a crate::schedule::Schedule>,
}

impl Services<'_> {
    /// Pulls and runs tasks until `shutdown` (or `drain`: then running tasks finish first).
    /// `next` asks the given queues (indices into `queues`) once, starting at the first.
    pub(crate) async fn run<F, Fut>(
        &self,
        mut shutdown: watch::Receiver<bool>,
        mut drain: watch::Receiver<bool>,
        console: &dyn Console,
        next: F,
    ) -> bool
    where
        F: Fn(Vec<usize>) -> Fut,
        Fut: std::future::Future<Output = Option<(String, usize)>>,
    {
        let mut running = FuturesUnordered::new();
        let mut interrupted = false;
        let stopping =
            |s: &watch::Receiver<bool>, d: &watch::Receiver<bool>| *s.borrow() || *d.borrow();
        while !stopping(&shutdown, &drain) {
            // With --dynamic-gpus only the queues whose minimum the free GPUs meet.
            let eligible: Vec<usize> = match &self.gpus {
                None => (0..self.queues.len()).collect(),
                Some((pool, shares, _)) => {
                    let free = pool.free();
                    (0..self.queues.len())
                        .filter(|i| shares.get(*i).is_some_and(|q| q.min <= free))
                        .collect()
                }
            };
            let idle = match self.schedule {
                Some(schedule) => {
                    let ids: Vec<String> = self.queues.iter().map(|q| q.id.clone()).collect();
                    let tags = crate::schedule::queue_tags(&self.runner.client, &ids).await;
                    crate::Schedule::decide(schedule.active_now(), &tags) == crate::Decision::Idle
                }
                None => false,
            };
            if idle {
                let pause = tokio::time::sleep(Duration::from_secs(30));
                tokio::select! {
                    Some(i) = running.next(), if !running.is_empty() => interrupted |= i,
                    _ = pause => {}
                    _ = shutdown.changed() => {}
                    _ = drain.changed() => {}
                }
                continue;
            }
            if !has_room(self.max, running.len()) || eligible.is_empty() {
                tokio::select! {
                    Some(i) = running.next() => interrupted |= i,
                    _ = shutdown.changed() => {}
                    _ = drain.changed() => {}
                }
                continue;
            }
            let mut poll = pin!(next(eligible));
            let picked = loop {
                tokio::select! {
                    r = &mut poll => break r,
                    Some(i) = running.next(), if !running.is_empty() => interrupted |= i,
                    _ = shutdown.changed() => {
                        // Let a poll in flight answer so its task can go back to the queue.
                        break tokio::time::timeout(Duration::from_secs(3), &mut poll).await.ok().flatten();
                    }
                    _ = drain.changed() => {
                        break tokio::time::timeout(Duration::from_secs(3), &mut poll).await.ok().flatten();
                    }
                }
            };
            let Some((task, idx)) = picked else {
                continue;
            };
            if stopping(&shutdown, &drain) {
                crate::daemon::give_back(&self.runner.client, &self.queues[idx], &task).await;
                break;
            }
            let gpus = match &self.gpus {
                None => None,
                Some((pool, shares, _)) => {
                    let share = &shares[idx];
                    match pool.take(share.min, share.max) {
                        Some(g) => Some(g),
                        None => {
                            crate::daemon::give_back(&self.runner.client, &self.queues[idx], &task)
                                .await;
                            continue;
                        }
                    }
                }
            };
            running.push(self.one(task, idx, shutdown.clone(), console, gpus));
        }
        // SIGTERM: each runner sees the shutdown and stops its task; drain: they finish.
        while let Some(i) = running.next().await {
            interrupted |= i;
        }
        interrupted
    }

    /// Runs one task under its service worker id; true when it was interrupted.
    async fn one(
        &self,
        task: String,
        idx: usize,
        shutdown: watch::Receiver<bool>,
        console: &dyn Console,
        gpus: Option<Vec<String>>,
    ) -> bool {
        let base = self.runner;
        let (worker_id, visible) = match (&gpus, &self.gpus) {
            (Some(g), Some((_, _, name))) => {
                let visible = g.join(",");
                let id = crate::identity::worker_id_for(
                    &crate::identity::IdentityInput {
                        configured_id: None,
                        worker_name: name.clone(),
                        visible_devices: Some(visible.clone()),
                        dir: std::env::temp_dir(),
                    },
                    0,
                );
                console.line(&format!("Task {task} gets GPUs {visible}"));
                (id, Some(visible))
            }
            _ => (
                service_worker_id(&base.worker_id, &task),
                base.visible.clone(),
            ),
        };
        let work_root = service_work_root(&base.work_root, &task);
        if let Err(e) = std::fs::create_dir_all(&work_root)
            .and_then(|()| crate::slot_state::claim_service_folder(&work_root))
        {
            console.line(&format!(
                "Warning: cannot create {}: {e}",
                work_root.display()
            ));
        }
        let queue = &self.queues[idx];
        let (reporter, _) = StatusReporter::register(
            base.client.clone(),
            worker_id.clone(),
            vec![queue.id.clone()],
            self.status_report,
            self.child_report_tags.clone(),
        )
        .await;
        reporter.set_task(Some(task.clone()), Some(queue.id.clone()));
        let runner = Runner {
            client: base.client.clone(),
            ship_client: base.ship_client.clone(),
            worker_id: worker_id.clone(),
            settings: base.settings.clone(),
            state: SlotState::new(&work_root),
            work_root: work_root.clone(),
            visible,
            opts: base.opts.clone(),
        };
        let result = runner.run_one(&task, queue, shutdown, console).await;
        reporter.stop().await;
        let _ = base
            .ship_client
            .call("workers.unregister", json!({"worker": worker_id}))
            .await;
        let _ = std::fs::remove_dir_all(&work_root);
        if let (Some(g), Some((pool, _, _))) = (&gpus, &self.gpus) {
            pool.give_back(g);
        }
        result.ending == crate::monitor::Ending::Interrupted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_folders_and_limits() {
        assert_eq!(service_worker_id("box:cpu:0", "t1"), "box:cpu:0:service:t1");
        assert_eq!(
            service_work_root(std::path::Path::new("/v/venvs"), "t1"),
            PathBuf::from("/v/venvs.service.t1")
        );
        assert!(has_room(0, 1000));
        assert!(has_room(2, 1));
        assert!(!has_room(2, 2));
    }
}
