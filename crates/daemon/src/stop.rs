//! `daemon --stop`: which agents a person may stop, and stopping them.
//!
//! The pid files live in the shared temp folder, where anyone can write. A file is trusted only
//! when all of these hold: the file belongs to the caller, the process it names belongs to the
//! caller, that process runs this program's binary (`/proc/PID/exe`) as `daemon`, and it
//! started before the file was written (a pid reused by a newer process fails this). Anything
//! else is reported as skipped and never signalled.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::identity::{Running, running_agents};
use crate::procinfo;

/// A pid file that was not trusted, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub pid: u32,
    pub worker_id: String,
    pub why: String,
}

/// The agents `--stop` acts on, and the files it refused to trust.
#[derive(Clone, Debug, Default)]
pub struct StopPlan {
    pub targets: Vec<Running>,
    pub skipped: Vec<Skipped>,
}

/// What `--stop` stops: with `ids`, the agents with those worker ids; without, every agent whose
/// worker id is `<worker_name>:...` or equals `configured_id`. Only this user's agents, each
/// checked as the module documentation says.
pub fn plan_stop(
    dir: &Path,
    ids: &[String],
    worker_name: &str,
    configured_id: Option<&str>,
) -> StopPlan {
    let prefix = format!("{worker_name}:");
    let mut plan = StopPlan::default();
    for r in running_agents(dir) {
        if r.pid == std::process::id() {
            continue;
        }
        let wanted = if ids.is_empty() {
            r.worker_id.starts_with(&prefix) || Some(r.worker_id.as_str()) == configured_id
        } else {
            ids.contains(&r.worker_id)
        };
        if !wanted {
            continue;
        }
        match trust(dir, &r) {
            Ok(()) => plan.targets.push(r),
            Err(why) => plan.skipped.push(Skipped {
                pid: r.pid,
                worker_id: r.worker_id.clone(),
                why,
            }),
        }
    }
    plan.targets.sort_by_key(|r| r.slot);
    plan
}

fn pid_file_of(dir: &Path, pid: u32) -> Option<PathBuf> {
    let prefix = format!(".clearmlagent_{pid}_");
    std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        (name.starts_with(&prefix) && name.ends_with(".tmp")).then(|| e.path())
    })
}

/// Why a pid file is not to be trusted, if it is not.
fn trust(dir: &Path, r: &Running) -> Result<(), String> {
    let me = procinfo::my_uid();
    let pid = i32::try_from(r.pid).map_err(|_| "not a pid".to_string())?;
    let file = pid_file_of(dir, r.pid).ok_or("its pid file is gone")?;
    let meta = std::fs::symlink_metadata(&file).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("its pid file is not a regular file".into());
    }
    if meta.uid() != me {
        return Err(format!("its pid file belongs to user id {}", meta.uid()));
    }
    match procinfo::uid_of(pid) {
        Some(uid) if uid == me => {}
        Some(uid) => return Err(format!("the process belongs to user id {uid}")),
        None => return Err("the process is gone".into()),
    }
    let exe = procinfo::exe_of(pid).ok_or("cannot read the process's binary")?;
    if !procinfo::is_agent_binary(&exe) {
        return Err(format!(
            "the process runs {}, not clearml-agent",
            exe.display()
        ));
    }
    if !procinfo::cmdline_of(pid).iter().any(|a| a == "daemon") {
        return Err("the process is not a clearml-agent daemon".into());
    }
    let written = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .ok_or("its pid file has no time")?;
    let started = started_at(pid).ok_or("cannot read when the process started")?;
    // The boot time is in whole seconds, so a start may read up to 1 s early, never late.
    if started > written + Duration::from_millis(100) {
        return Err("the process started after its pid file was written (a reused pid)".into());
    }
    Ok(())
}

/// When a process started, as time since the epoch.
fn started_at(pid: i32) -> Option<Duration> {
    let ticks = procinfo::start_ticks(pid)?;
    // USER_HZ, the unit of `/proc` times, is 100 on every architecture Linux runs on here.
    let hz = 100;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(btime) + Duration::from_millis(ticks * 1000 / hz))
}

/// SIGTERM one agent, wait up to `grace` for it to go, then SIGKILL. The process is checked
/// again just before each signal (same start time), so a pid reused meanwhile is left alone.
pub fn stop_agent(agent: &Running, grace: Duration) {
    let Ok(raw) = i32::try_from(agent.pid) else {
        return;
    };
    let Some(start) = procinfo::start_ticks(raw) else {
        return;
    };
    let same = || procinfo::start_ticks(raw) == Some(start) && crate::process::is_alive(raw);
    let pid = Pid::from_raw(raw);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline && same() {
        std::thread::sleep(Duration::from_millis(100));
    }
    if same() {
        let _ = kill(pid, Signal::SIGKILL);
    }
}

/// `--stop --wait`: SIGUSR1 one agent (it finishes its running task, takes nothing new and
/// exits), then wait for it to be gone, however long the task takes.
pub fn drain_agent(agent: &Running) {
    let Ok(raw) = i32::try_from(agent.pid) else {
        return;
    };
    let Some(start) = procinfo::start_ticks(raw) else {
        return;
    };
    let same = || procinfo::start_ticks(raw) == Some(start) && crate::process::is_alive(raw);
    let _ = kill(Pid::from_raw(raw), Signal::SIGUSR1);
    while same() {
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
fn now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn pid_file(dir: &Path, pid: u32, worker: &str) -> PathBuf {
        let p = dir.join(format!(".clearmlagent_{pid}_1.tmp"));
        std::fs::write(&p, format!("{worker}\n0")).unwrap();
        p
    }

    #[test]
    fn a_pid_file_naming_another_program_is_not_trusted() {
        let d = tempfile::tempdir().unwrap();
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        pid_file(d.path(), sleeper.id(), "box:0");
        let plan = plan_stop(d.path(), &[], "box", None);
        assert!(plan.targets.is_empty(), "{plan:?}");
        assert_eq!(plan.skipped.len(), 1);
        assert!(
            plan.skipped[0].why.contains("not clearml-agent"),
            "{plan:?}"
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }

    #[test]
    fn started_at_is_in_the_past() {
        let me = std::process::id() as i32;
        let s = started_at(me).unwrap();
        assert!(s <= now() + Duration::from_secs(1));
        assert!(s + Duration::from_secs(3600) > now());
    }

    #[test]
    fn a_pid_file_of_another_user_is_not_trusted() {
        if procinfo::my_uid() != 0 {
            // Only root can give a file away; the check itself is the same code.
            return;
        }
        let d = tempfile::tempdir().unwrap();
        // This test process stands in for the agent: right binary check aside, the owner
        // check comes first.
        let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
        let p = pid_file(d.path(), sleeper.id(), "box:0");
        std::os::unix::fs::chown(&p, Some(65534), Some(65534)).unwrap();
        let plan = plan_stop(d.path(), &[], "box", None);
        assert!(plan.targets.is_empty());
        assert!(
            plan.skipped[0].why.contains("belongs to user id 65534"),
            "{plan:?}"
        );
        let _ = sleeper.kill();
        let _ = sleeper.wait();
    }
}
