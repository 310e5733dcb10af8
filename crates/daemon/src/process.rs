//! Running a task's process tree: one process group, stdout and stderr merged into one pipe
//! (so lines keep the order the task wrote them in), and a kill that leaves nothing behind.
//!
//! A task may start helpers of its own, and some put themselves in a new process group or
//! session. The kill therefore signals the group *and* every descendant found in `/proc`
//! (collected before the first signal, while parent links are intact), first with SIGTERM, then,
//! after the grace period, with SIGKILL.

use std::collections::BTreeSet;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;

/// A started task process.
pub struct TaskProcess {
    pub child: tokio::process::Child,
    pub pid: u32,
    output: Option<tokio::net::unix::pipe::Receiver>,
}

impl TaskProcess {
    /// Starts `cmd` in a new process group with stdin closed and stdout+stderr on one pipe.
    pub fn spawn(mut cmd: Command) -> io::Result<TaskProcess> {
        let (reader, writer) = io::pipe()?;
        cmd.stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0);
        // For the `--debug` timing line of an `execute` child (crate::timing).
        cmd.env(crate::timing::SPAWNED_AT_VAR, crate::timing::spawn_stamp());
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        let child = cmd.spawn()?;
        // The command holds the pipe's write ends; drop it so the reader sees end-of-file
        // when the task's tree has exited.
        drop(cmd);
        let pid = child.id().unwrap_or(0);
        let output = tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))?;
        Ok(TaskProcess {
            child,
            pid,
            output: Some(output),
        })
    }

    /// The merged output, to be read to its end.
    pub fn take_output(&mut self) -> Option<OutputReader> {
        self.output.take().map(|r| OutputReader { inner: r })
    }
}

/// Reads the task's merged output in chunks.
pub struct OutputReader {
    inner: tokio::net::unix::pipe::Receiver,
}

impl OutputReader {
    /// The next chunk, or `None` at end of output.
    pub async fn next_chunk(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        buf.resize(64 * 1024, 0);
        match self.inner.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        }
    }
}

/// One row of the process table.
#[derive(Clone, Copy, Debug)]
struct ProcRow {
    pid: i32,
    ppid: i32,
    pgid: i32,
}

fn process_table() -> Vec<ProcRow> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut rows = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // state ppid pgrp ...
        let (Some(ppid), Some(pgid)) = (
            f.get(1).and_then(|s| s.parse().ok()),
            f.get(2).and_then(|s| s.parse().ok()),
        ) else {
            continue;
        };
        if f.first() == Some(&"Z") {
            continue;
        }
        rows.push(ProcRow { pid, ppid, pgid });
    }
    rows
}

/// Every live process under `root` (by parent links) or in its process group.
pub fn tree_of(root: u32) -> BTreeSet<i32> {
    let root = root as i32;
    let rows = process_table();
    let mut found: BTreeSet<i32> = BTreeSet::new();
    if rows.iter().any(|r| r.pid == root) {
        found.insert(root);
    }
    for r in &rows {
        if r.pgid == root {
            found.insert(r.pid);
        }
    }
    loop {
        let before = found.len();
        for r in &rows {
            if found.contains(&r.ppid) {
                found.insert(r.pid);
            }
        }
        if found.len() == before {
            break;
        }
    }
    found
}

fn signal_all(group: u32, pids: &BTreeSet<i32>, sig: Signal) {
    let _ = killpg(Pid::from_raw(group as i32), sig);
    for p in pids {
        let _ = kill(Pid::from_raw(*p), sig);
    }
}

/// SIGTERM the task's tree, wait up to `grace` for it to go, then SIGKILL what is left.
/// Returns when no process of the tree is alive (giving up 5 s after the SIGKILL).
pub async fn kill_tree(proc_: &mut TaskProcess, grace: Duration) {
    let group = proc_.pid;
    if group == 0 {
        return;
    }
    let mut pids = tree_of(group);
    signal_all(group, &pids, Signal::SIGTERM);
    let deadline = Instant::now() + grace;
    // After SIGKILL a process still takes a moment to go; keep looking (and killing what
    // appears) for this long, so that on return the tree is really gone.
    let give_up = deadline + Duration::from_secs(5);
    loop {
        // Reap the direct child so it does not linger as a zombie.
        let _ = proc_.child.try_wait();
        let now: BTreeSet<i32> = tree_of(group);
        pids.extend(now.iter().copied());
        let alive: BTreeSet<i32> = pids
            .iter()
            .copied()
            .filter(|p| is_alive(*p) && *p != std::process::id() as i32)
            .collect();
        if alive.is_empty() || Instant::now() >= give_up {
            break;
        }
        if Instant::now() >= deadline {
            signal_all(group, &alive, Signal::SIGKILL);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A process that exists and is not a zombie (an exited process its parent has not reaped).
pub fn is_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn merged_output_in_order() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; echo three"]);
        let mut p = TaskProcess::spawn(cmd).unwrap();
        let mut out = p.take_output().unwrap();
        let mut all = Vec::new();
        let mut buf = Vec::new();
        while let Some(n) = out.next_chunk(&mut buf).await {
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(String::from_utf8_lossy(&all), "one\ntwo\nthree\n");
        assert!(p.child.wait().await.unwrap().success());
    }

    #[tokio::test]
    async fn kill_tree_leaves_nothing_even_with_new_sessions() {
        let mut cmd = Command::new("sh");
        // A grandchild that ignores SIGTERM, and one that leaves the process group.
        cmd.args([
            "-c",
            "trap '' TERM; (trap '' TERM; sleep 300) & setsid sleep 300 & sleep 300",
        ]);
        let mut p = TaskProcess::spawn(cmd).unwrap();
        // The shell, its subshell's sleep and the setsid'd sleep (the machine may be busy).
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut before = tree_of(p.pid);
        while before.len() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            before = tree_of(p.pid);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        before.extend(tree_of(p.pid));
        assert!(before.len() >= 3, "{before:?}");
        let started = Instant::now();
        kill_tree(&mut p, Duration::from_millis(300)).await;
        assert!(started.elapsed() < Duration::from_secs(8));
        for pid in before {
            assert!(!is_alive(pid), "pid {pid} survived");
        }
    }
}
