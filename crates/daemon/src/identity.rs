//! Worker ids and slots, as the Python agent names them (`host:0`, `host:cpu:0`,
//! `host:gpu0,1`, or the configured id verbatim).
//!
//! Agents on one machine find each other through small pid files in the temp folder
//! (`.clearmlagent_<pid>_<n>.tmp` holding `"<worker id>\n<slot>"`, the Python agent's format, so
//! mixed fleets see each other). A slot is the lowest number no live agent holds; it also
//! suffixes the venvs folder so two agents never build into one environment. Claiming runs
//! under an exclusive file lock, so two agents starting together cannot take one slot.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("Instance with the same WORKER_ID [{0}] is already running (pid {1})")]
    Duplicate(String, u32),
    #[error("cannot use {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the id is made from.
#[derive(Clone, Debug)]
pub struct IdentityInput {
    /// `agent.worker_id` / `CLEARML_WORKER_ID`.
    pub configured_id: Option<String>,
    /// `agent.worker_name`, else the host name.
    pub worker_name: String,
    /// `NVIDIA_VISIBLE_DEVICES`, else `CUDA_VISIBLE_DEVICES`.
    pub visible_devices: Option<String>,
    /// Where the pid files live (the temp folder).
    pub dir: PathBuf,
}

/// A claimed identity; dropping it releases the slot.
#[derive(Debug)]
pub struct Identity {
    pub worker_id: String,
    pub slot: u32,
    pid_file: PathBuf,
}

impl Drop for Identity {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.pid_file);
    }
}

/// A live agent's pid file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub pid: u32,
    pub worker_id: String,
    pub slot: u32,
}

/// Live agents on this machine; files of dead processes are removed on the way.
pub fn running_agents(dir: &Path) -> Vec<Running> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = name
            .strip_prefix(".clearmlagent_")
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('_').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        // A zombie is an agent that has exited; its slot is free.
        if !i32::try_from(pid).is_ok_and(crate::process::is_alive) {
            let _ = fs::remove_file(entry.path());
            continue;
        }
        let Ok(text) = fs::read_to_string(entry.path()) else {
            continue;
        };
        let mut lines = text.lines();
        let worker_id = lines.next().unwrap_or_default().trim().to_string();
        let slot = lines
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        out.push(Running {
            pid,
            worker_id,
            slot,
        });
    }
    out
}

/// Picks the id and slot and writes this process's pid file.
pub fn claim(input: &IdentityInput) -> Result<Identity, IdentityError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| IdentityError::Io { path, source }
    };
    fs::create_dir_all(&input.dir).map_err(io(&input.dir))?;
    let lock_path = input.dir.join(".clearml-agent-rs.slots.lock");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io(&lock_path))?;
    lock.lock().map_err(io(&lock_path))?;

    let others = running_agents(&input.dir);
    let slot = (0..)
        .find(|s| !others.iter().any(|o| o.slot == *s))
        .unwrap_or(0);
    let worker_id = worker_id_for(input, slot);
    if let Some(o) = others.iter().find(|o| o.worker_id == worker_id) {
        return Err(IdentityError::Duplicate(worker_id, o.pid));
    }
    let pid = std::process::id();
    let pid_file = input
        .dir
        .join(format!(".clearmlagent_{pid}_{}.tmp", slot_suffix()));
    let mut f = fs::File::create(&pid_file).map_err(io(&pid_file))?;
    write!(f, "{worker_id}\n{slot}").map_err(io(&pid_file))?;
    drop(lock);
    Ok(Identity {
        worker_id,
        slot,
        pid_file,
    })
}

fn slot_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() % 1_000_000_000)
        .unwrap_or(0)
}

/// The naming rules of the Python agent's daemon.
pub fn worker_id_for(input: &IdentityInput, slot: u32) -> String {
    if let Some(id) = input.configured_id.as_deref().filter(|s| !s.is_empty()) {
        return id.to_string();
    }
    match input.visible_devices.as_deref().map(str::trim) {
        Some("none") => format!("{}:cpu:{slot}", input.worker_name),
        Some(d) if !d.is_empty() => format!("{}:gpu{}", input.worker_name, d.replace(':', ".")),
        _ => format!("{}:{slot}", input.worker_name),
    }
}

/// The host name, as the worker name defaults to.
pub fn host_name() -> String {
    clearml_config::host_name()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(dir: &Path) -> IdentityInput {
        IdentityInput {
            configured_id: None,
            worker_name: "box".into(),
            visible_devices: None,
            dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn naming_rules() {
        let d = tempfile::tempdir().unwrap();
        let mut i = input(d.path());
        assert_eq!(worker_id_for(&i, 0), "box:0");
        i.visible_devices = Some("none".into());
        assert_eq!(worker_id_for(&i, 2), "box:cpu:2");
        i.visible_devices = Some("0,1".into());
        assert_eq!(worker_id_for(&i, 0), "box:gpu0,1");
        i.visible_devices = Some("0:1".into());
        assert_eq!(worker_id_for(&i, 0), "box:gpu0.1");
        i.configured_id = Some("mine".into());
        assert_eq!(worker_id_for(&i, 3), "mine");
    }

    #[test]
    fn slots_are_distinct_and_released() {
        let d = tempfile::tempdir().unwrap();
        let a = claim(&input(d.path())).unwrap();
        // The same process claiming again stands in for a second agent.
        let b = claim(&input(d.path())).unwrap();
        assert_eq!((a.slot, b.slot), (0, 1));
        assert_eq!(b.worker_id, "box:1");
        assert_eq!(running_agents(d.path()).len(), 2);
        drop(a);
        let c = claim(&input(d.path())).unwrap();
        assert_eq!(c.slot, 0);
    }

    #[test]
    fn duplicate_configured_ids_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut i = input(d.path());
        i.configured_id = Some("w1".into());
        let _a = claim(&i).unwrap();
        let e = claim(&i).unwrap_err();
        assert!(e.to_string().contains("already running"), "{e}");
    }

    #[test]
    fn dead_agents_files_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let stale = d.path().join(".clearmlagent_999999999_1.tmp");
        fs::write(&stale, "box:0\n0").unwrap();
        let a = claim(&input(d.path())).unwrap();
        assert_eq!(a.slot, 0);
        assert!(!stale.exists());
    }
}
