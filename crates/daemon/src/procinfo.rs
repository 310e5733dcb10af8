//! Facts about a process read from `/proc`: who owns it, when it started, which binary it runs
//! and its environment. Used to decide whether a pid named in a file is really the process
//! the file meant (pids are reused) before anything is signalled.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// The caller's effective user id.
pub fn my_uid() -> u32 {
    // `/proc/self` belongs to the effective user (read this way, no libc call is needed).
    std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid())
}

/// The owner of a live process.
pub fn uid_of(pid: i32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces and `)`).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When the process started, in clock ticks since boot (field 22 of `stat`). Two processes
/// with one pid never share it, so (pid, start) names one process for the machine's uptime.
pub fn start_ticks(pid: i32) -> Option<u64> {
    // Field 22 overall; the slice starts at field 3 (state).
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The process group of a live process.
pub fn pgid_of(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

/// The binary a process runs (`/proc/PID/exe`; readable for one's own processes only), without
/// the ` (deleted)` the kernel appends once the file was replaced (an upgrade).
pub fn exe_of(pid: i32) -> Option<PathBuf> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy();
    Some(match text.strip_suffix(" (deleted)") {
        Some(t) => PathBuf::from(t),
        None => link,
    })
}

/// The arguments of a process.
pub fn cmdline_of(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the process's environment holds exactly `entry` (`NAME=value`).
pub fn environ_has(pid: i32, entry: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| b.split(|&c| c == 0).any(|e| e == entry.as_bytes()))
        .unwrap_or(false)
}

/// Every pid in `/proc`.
pub fn all_pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Whether `exe` is a build of this program: the same file as the running binary, or a file
/// named like it (`clearml-agent`).
pub fn is_agent_binary(exe: &Path) -> bool {
    let me = std::env::current_exe().ok();
    let mine = me.as_deref().map(|p| {
        let t = p.to_string_lossy();
        PathBuf::from(t.strip_suffix(" (deleted)").unwrap_or(&t))
    });
    if mine.as_deref() == Some(exe) {
        return true;
    }
    let name = exe.file_name().map(|n| n.to_string_lossy().into_owned());
    let my_name = mine
        .as_deref()
        .and_then(Path::file_name)
        .map(|n| n.to_string_lossy().into_owned());
    name.as_deref() == Some("clearml-agent") || (name.is_some() && name == my_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_about_this_process() {
        let me = std::process::id() as i32;
        assert_eq!(uid_of(me), Some(my_uid()));
        assert!(start_ticks(me).is_some());
        let exe = exe_of(me).unwrap();
        assert!(is_agent_binary(&exe));
        assert!(!is_agent_binary(Path::new("/bin/sleep")));
        assert!(!cmdline_of(me).is_empty());
        assert_eq!(pgid_of(me), Some(nix::unistd::getpgrp().as_raw()));
    }
}
