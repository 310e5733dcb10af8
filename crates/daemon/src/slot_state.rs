//! What a killed daemon leaves behind, and how the next one cleans it up.
//!
//! A daemon killed with SIGKILL cannot stop its task. Two things limit the damage:
//! - **The task leader dies with it.** The daemon starts each task process with
//!   [`PARENT_VAR`] set to its pid; the child (`execute --disable-monitoring`) calls
//!   [`die_with_parent`] first thing, which asks the kernel (`PR_SET_PDEATHSIG`) for a SIGKILL
//!   when the daemon goes, and exits at once if the daemon is already gone. The setting
//!   survives the `exec` into the task.
//! - **The next daemon kills the rest and fails the task.** While a task runs, its slot's work
//!   folder holds a state file (task id, worker id, the daemon's pid and start time, and a
//!   random marker). Every process of the task's tree carries the marker in its environment
//!   ([`TREE_VAR`]). A daemon starting on this machine with the same work folder looks at the
//!   state files of every slot; one whose daemon is dead (its pid gone, or reused by a process
//!   with another start time) is claimed by renaming it, every process of the caller's user
//!   with the marker, and every member of the process groups they lead, is killed, and the task,
//!   if still `in_progress`, is marked `failed` with a status message that says what happened.
//!
//! Services mode (`services.rs`) gives each task its own folder `<slot folder>.service.<task>`
//! with the same state file and an owner file; the next daemon recovers those tasks the same way
//! and then removes the folders whose owner is dead.
//!
//! A process that clears its environment and leaves the task's process group escapes the
//! marker search; nothing short of a cgroup finds it, and the agent does not require one.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clearml_api::Client;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::procinfo;

/// The environment variable every process of a task's tree inherits (the marker).
pub const TREE_VAR: &str = "CLEARML_AGENT_TASK_TREE";
/// The environment variable naming the daemon (or monitoring `execute`) that started the task.
pub const PARENT_VAR: &str = "CLEARML_AGENT_PARENT_PID";
const FILE_NAME: &str = ".clearml-agent-running-task.json";

/// The state file of one slot's work folder.
pub struct SlotState {
    path: PathBuf,
}

/// A task whose daemon died while it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    pub task: String,
    pub worker: String,
    pub daemon_pid: i32,
    pub marker: String,
}

impl SlotState {
    pub fn new(work_root: &Path) -> SlotState {
        SlotState {
            path: work_root.join(FILE_NAME),
        }
    }

    /// A marker no other task tree carries.
    pub fn marker_for(task: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos:x}-{task}", std::process::id())
    }

    /// Records that this process runs `task` with `marker` (written whole, then renamed).
    pub fn record(&self, task: &str, worker: &str, marker: &str) -> std::io::Result<()> {
        let me = std::process::id() as i32;
        let body = json!({
            "task": task,
            "worker": worker,
            "daemon_pid": me,
            "daemon_start": procinfo::start_ticks(me),
            "marker": marker,
        });
        let tmp = self.path.with_extension(format!("tmp{me}"));
        std::fs::write(&tmp, body.to_string())?;
        std::fs::rename(&tmp, &self.path)
    }

    /// The task ended (or was handed back): nothing to clean up.
    pub fn clear(&self) {
        let _ = std::fs::remove_file(&self.path);
    }

    /// Takes the file when the daemon that wrote it is dead; renaming it first means that of
    /// two daemons starting together only one cleans up.
    fn take_if_orphaned(&self) -> Option<Leftover> {
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::symlink_metadata(&self.path).ok()?;
        if !meta.file_type().is_file() || meta.uid() != procinfo::my_uid() {
            return None;
        }
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&self.path).ok()?).ok()?;
        let pid = v
            .get("daemon_pid")?
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())?;
        if owner_alive(&v) != Some(false) {
            return None;
        }
        let claimed = self
            .path
            .with_extension(format!("recovering{}", std::process::id()));
        std::fs::rename(&self.path, &claimed).ok()?;
        let _ = std::fs::remove_file(&claimed);
        let text = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        Some(Leftover {
            task: text("task")?,
            worker: text("worker").unwrap_or_default(),
            daemon_pid: pid,
            marker: text("marker")?,
        })
    }
}

/// The work folders of every slot of `venvs_dir` (`venvs_dir`, `venvs_dir.1`, ...), and of
/// every services-mode task of those slots (`venvs_dir.service.<task>`,
/// `venvs_dir.1.service.<task>`, see `services.rs`); the flag says which are service folders.
fn slot_folders(venvs_dir: &Path) -> Vec<(PathBuf, bool)> {
    let mut out = vec![(venvs_dir.to_path_buf(), false)];
    let (Some(parent), Some(base)) = (venvs_dir.parent(), venvs_dir.file_name()) else {
        return out;
    };
    let base = base.to_string_lossy().into_owned();
    let is_slot = |n: &str| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit());
    let is_service = |n: &str| {
        n.strip_prefix("service.")
            .is_some_and(|t| !t.is_empty() && !t.contains('/'))
    };
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix(&base).and_then(|r| r.strip_prefix('.')) else {
                continue;
            };
            let service = is_service(rest)
                || rest
                    .split_once('.')
                    .is_some_and(|(slot, tail)| is_slot(slot) && is_service(tail));
            if service || is_slot(rest) {
                out.push((e.path(), service));
            }
        }
    }
    out
}

const OWNER_FILE: &str = ".clearml-agent-service-owner.json";

/// Marks a services-mode task's folder as this process's, so that the next daemon knows
/// whether the folder's owner still lives even when no task state file is in it (the daemon
/// was killed just before the task started or just after it ended).
pub fn claim_service_folder(folder: &Path) -> std::io::Result<()> {
    let me = std::process::id() as i32;
    let body = json!({"daemon_pid": me, "daemon_start": procinfo::start_ticks(me)});
    std::fs::write(folder.join(OWNER_FILE), body.to_string())
}

/// Whether the process named by a state or owner file (`daemon_pid`, `daemon_start`) lives.
fn owner_alive(v: &Value) -> Option<bool> {
    let pid = v
        .get("daemon_pid")?
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())?;
    let start = v.get("daemon_start").and_then(Value::as_u64);
    Some(crate::process::is_alive(pid) && (start.is_none() || procinfo::start_ticks(pid) == start))
}

/// A service folder whose owner is dead and whose task (if any) was taken care of: removed.
/// One with no readable owner file is left alone (its owner may still be creating it) unless
/// `owner_dead` (its task state file was just taken from a dead daemon).
fn remove_dead_service_folder(folder: &Path, owner_dead: bool) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::symlink_metadata(folder) else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != procinfo::my_uid() || folder.join(FILE_NAME).exists() {
        return false;
    }
    let owner: Option<Value> = std::fs::read_to_string(folder.join(OWNER_FILE))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let dead = match owner.as_ref().and_then(owner_alive) {
        Some(alive) => !alive,
        None => owner_dead,
    };
    if !dead {
        return false;
    }
    std::fs::remove_dir_all(folder).is_ok()
}

/// This user's processes carrying `marker`, and every member of the process groups they lead.
pub fn tree_with_marker(marker: &str) -> BTreeSet<i32> {
    let entry = format!("{TREE_VAR}={marker}");
    let me = procinfo::my_uid();
    let own = std::process::id() as i32;
    let pids: Vec<i32> = procinfo::all_pids()
        .into_iter()
        .filter(|&p| p != own && procinfo::uid_of(p) == Some(me))
        .collect();
    let marked: BTreeSet<i32> = pids
        .iter()
        .copied()
        .filter(|&p| procinfo::environ_has(p, &entry) && crate::process::is_alive(p))
        .collect();
    let groups: BTreeSet<i32> = marked
        .iter()
        .copied()
        .filter(|&p| procinfo::pgid_of(p) == Some(p))
        .collect();
    let mut all = marked;
    for p in pids {
        if procinfo::pgid_of(p).is_some_and(|g| groups.contains(&g)) && crate::process::is_alive(p)
        {
            all.insert(p);
        }
    }
    all
}

/// SIGKILLs the tree carrying `marker` until none of it is left (giving up after 5 s);
/// returns how many processes it found.
pub async fn kill_marked_tree(marker: &str) -> usize {
    let mut seen: BTreeSet<i32> = BTreeSet::new();
    let give_up = Instant::now() + Duration::from_secs(5);
    loop {
        let now = tree_with_marker(marker);
        if now.is_empty() || Instant::now() >= give_up {
            return seen.len();
        }
        for p in &now {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        seen.extend(now);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Cleans up after dead daemons that used `venvs_dir`'s slots; returns a line for each task.
pub async fn recover(client: &Client, venvs_dir: &Path, worker_id: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (folder, service) in slot_folders(venvs_dir) {
        let left = SlotState::new(&folder).take_if_orphaned();
        // Removed after its task's processes are gone (they may still write into it).
        let remove_after = |lines: &mut Vec<String>, owner_dead: bool| {
            if service && remove_dead_service_folder(&folder, owner_dead) {
                lines.push(format!(
                    "Removed {} (the services-mode folder of a killed agent)",
                    folder.display()
                ));
            }
        };
        let Some(left) = left else {
            remove_after(&mut lines, false);
            continue;
        };
        let killed = kill_marked_tree(&left.marker).await;
        let message = format!(
            "agent {} (pid {}) was killed while running the task; {worker_id} stopped what was \
             left of it ({killed} processes)",
            left.worker, left.daemon_pid
        );
        let status = client
            .call(
                "tasks.get_all",
                json!({"id": [left.task], "only_fields": ["id", "status"],
                       "search_hidden": true}),
            )
            .await
            .ok()
            .and_then(|r| {
                r.get("tasks")?
                    .as_array()?
                    .first()?
                    .get("status")?
                    .as_str()
                    .map(str::to_string)
            });
        let outcome = if status.as_deref() == Some("in_progress") {
            let _ = client
                .call_lines(
                    "events.add_batch",
                    &[
                        json!({"type": "log", "task": left.task, "worker": worker_id,
                             "level": "error", "msg": format!("clearml-agent: {message}\n"),
                             "timestamp": now_ms()}),
                    ],
                )
                .await;
            match client
                .call(
                    "tasks.failed",
                    json!({"task": left.task, "force": true,
                           "status_reason": "the agent running the task was killed",
                           "status_message": message}),
                )
                .await
            {
                Ok(_) => "marked failed".to_string(),
                Err(e) => format!("could not be marked failed: {e}"),
            }
        } else {
            format!("is {}", status.as_deref().unwrap_or("unknown"))
        };
        lines.push(format!(
            "Task {} of a killed agent (pid {}): stopped {killed} leftover processes; the task {outcome}",
            left.task, left.daemon_pid
        ));
        remove_after(&mut lines, true);
    }
    lines
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// For the task's first process: die with the process that started it. Does nothing unless
/// [`PARENT_VAR`] is set. If that process is already gone, exits at once (status 1); if this
/// process is not its child (a task that runs the agent itself), the setting is undone.
pub fn die_with_parent() {
    let Some(parent) = std::env::var(PARENT_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<i32>().ok())
    else {
        return;
    };
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return;
    }
    if nix::unistd::getppid().as_raw() != parent {
        if crate::process::is_alive(parent) {
            let _ = nix::sys::prctl::set_pdeathsig(None);
        } else {
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[tokio::test]
    async fn a_marked_tree_is_found_and_killed_with_its_group() {
        let marker = SlotState::marker_for("t1");
        let mut cmd = Command::new("sh");
        // A child in the group that drops the marker, and one in a new session keeping it.
        cmd.args([
            "-c",
            "env -u CLEARML_AGENT_TASK_TREE sleep 300 & setsid sleep 300 & sleep 300 & wait",
        ])
        .env(TREE_VAR, &marker)
        .process_group(0);
        use std::os::unix::process::CommandExt as _;
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut found = tree_with_marker(&marker);
        while found.len() < 4 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            found = tree_with_marker(&marker);
        }
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found.contains(&(child.id() as i32)));
        let n = kill_marked_tree(&marker).await;
        let _ = child.wait();
        assert!(n >= 4);
        for p in found {
            assert!(!crate::process::is_alive(p), "{p} survived");
        }
    }

    #[test]
    fn only_a_dead_daemons_file_is_taken() {
        let d = tempfile::tempdir().unwrap();
        let s = SlotState::new(d.path());
        s.record("t1", "w:0", "m").unwrap();
        // Written by this (live) process: not orphaned.
        assert_eq!(s.take_if_orphaned(), None);
        // A dead daemon's file.
        let mut dead = Command::new("true").spawn().unwrap();
        let pid = dead.id();
        dead.wait().unwrap();
        std::fs::write(
            d.path().join(FILE_NAME),
            json!({"task": "t2", "worker": "w:0", "daemon_pid": pid, "daemon_start": 1,
                   "marker": "m2"})
            .to_string(),
        )
        .unwrap();
        let left = s.take_if_orphaned().unwrap();
        assert_eq!((left.task.as_str(), left.marker.as_str()), ("t2", "m2"));
        assert!(!d.path().join(FILE_NAME).exists());
        assert_eq!(s.take_if_orphaned(), None);
    }

    #[test]
    fn only_a_dead_owners_service_folder_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let live = d.path().join("v.service.a");
        let dead = d.path().join("v.service.b");
        let unknown = d.path().join("v.service.c");
        for f in [&live, &dead, &unknown] {
            std::fs::create_dir(f).unwrap();
        }
        claim_service_folder(&live).unwrap();
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = gone.id();
        gone.wait().unwrap();
        std::fs::write(
            dead.join(OWNER_FILE),
            json!({"daemon_pid": pid, "daemon_start": 1}).to_string(),
        )
        .unwrap();
        assert!(!remove_dead_service_folder(&live, false));
        assert!(!remove_dead_service_folder(&unknown, false));
        assert!(remove_dead_service_folder(&dead, false));
        assert!(live.exists() && unknown.exists() && !dead.exists());
        // A task of a live daemon still runs in it: kept whatever the owner file says.
        SlotState::new(&unknown).record("t", "w", "m").unwrap();
        assert!(!remove_dead_service_folder(&unknown, true));
        SlotState::new(&unknown).clear();
        assert!(remove_dead_service_folder(&unknown, true));
    }

    #[test]
    fn every_slot_folder_is_looked_at() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("venvs-builds");
        for n in [
            "venvs-builds",
            "venvs-builds.1",
            "venvs-builds.12",
            "venvs-builds.x",
            "venvs-builds.service.t1",
            "venvs-builds.2.service.t2",
            "venvs-builds.x.service.t3",
        ] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        let mut got = slot_folders(&base);
        got.sort();
        let services: Vec<_> = got.iter().filter(|(_, s)| *s).map(|(p, _)| p).collect();
        assert_eq!(got.len(), 5, "{got:?}");
        assert!(!got.iter().any(|(p, _)| p.ends_with("venvs-builds.x")));
        assert_eq!(services.len(), 2, "{services:?}");
        assert!(
            services
                .iter()
                .all(|p| p.to_string_lossy().contains(".service.t"))
        );
    }
}
