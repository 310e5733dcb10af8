//! Applying the policy: LRU eviction down to the limits.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use crate::Policy;
use crate::scan::{self, Entry, Seen};

/// Why an entry was removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The managed folders held more than `max_used_bytes`.
    MaxUsedBytes,
    /// Its file system had less than `min_free_bytes` free.
    MinFreeBytes,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::MaxUsedBytes => "max_used_bytes",
            Reason::MinFreeBytes => "min_free_bytes",
        }
    }
}

/// One removed entry (or, in a dry run, one that would be).
#[derive(Clone, Debug, PartialEq)]
pub struct Removal {
    pub path: PathBuf,
    pub bytes: u64,
    pub last_used: Option<SystemTime>,
    pub reason: Reason,
}

/// Why an entry that eviction reached was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Someone holds its lock.
    InUse,
    /// Its managed folder's own lock is held.
    FolderLocked,
    /// Used less than [`Policy::min_age`] ago.
    TooYoung,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::InUse => "in use",
            SkipReason::FolderLocked => "folder locked",
            SkipReason::TooYoung => "used recently",
        }
    }
}

/// An entry eviction reached but kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Skip {
    pub path: PathBuf,
    pub reason: SkipReason,
}

/// An entry (or folder) that could not be read or removed.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub path: PathBuf,
    pub error: String,
}

/// Free space of one file system holding managed folders, before and after.
#[derive(Clone, Debug, PartialEq)]
pub struct FreeSpace {
    /// The first managed folder on that file system.
    pub dir: PathBuf,
    pub before: u64,
    pub after: u64,
}

/// What [`enforce`] did.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Report {
    pub dry_run: bool,
    /// Total size of all entries before and after.
    pub used_before: u64,
    pub used_after: u64,
    pub free: Vec<FreeSpace>,
    /// In the order removed (least recently used first).
    pub removed: Vec<Removal>,
    pub skipped: Vec<Skip>,
    pub errors: Vec<Failure>,
    /// Whether the limits hold afterwards (`used <= max_used_bytes`, `free >= min_free_bytes`).
    pub within_limits: bool,
}

impl Report {
    /// Whether it removed something or hit an error: worth a log line.
    pub fn is_noteworthy(&self) -> bool {
        !self.removed.is_empty() || !self.errors.is_empty()
    }

    /// Bytes removed.
    pub fn removed_bytes(&self) -> u64 {
        self.removed.iter().map(|r| r.bytes).sum()
    }

    /// Human-readable lines: one per removal and error, and a summary.
    pub fn lines(&self) -> Vec<String> {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        let mut out: Vec<String> = self
            .removed
            .iter()
            .map(|r| {
                format!(
                    "cache: {verb} {} ({}, {})",
                    r.path.display(),
                    human_bytes(r.bytes),
                    r.reason.as_str()
                )
            })
            .collect();
        out.extend(
            self.errors
                .iter()
                .map(|f| format!("cache: could not remove {}: {}", f.path.display(), f.error)),
        );
        out.push(format!(
            "cache: {verb} {} entries, {}; cache size {} -> {}{}",
            self.removed.len(),
            human_bytes(self.removed_bytes()),
            human_bytes(self.used_before),
            human_bytes(self.used_after),
            if self.within_limits {
                ""
            } else {
                " (still over the limits)"
            }
        ));
        out
    }
}

/// `1.5 GiB`-style size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// One enforcement at a time in this process: the timer and the pre-task check may overlap.
static ENFORCING: Mutex<()> = Mutex::new(());

/// Applies `policy` to the managed folders `dirs` (see the crate docs for the rule). With
/// `dry_run` nothing is removed and the report says what would be.
pub fn enforce(policy: &Policy, dirs: &[PathBuf], dry_run: bool) -> Report {
    let _one = ENFORCING.lock().unwrap_or_else(|p| p.into_inner());
    let mut report = Report {
        dry_run,
        ..Report::default()
    };
    let mut seen = Seen::new();
    let mut all: Vec<Entry> = Vec::new();
    let mut locked_dirs: HashSet<PathBuf> = HashSet::new();
    for dir in dirs {
        let others: Vec<PathBuf> = dirs.iter().filter(|d| *d != dir).cloned().collect();
        match scan::entries(dir, &others, &mut seen) {
            Ok(list) => all.extend(list),
            Err(e) => report.errors.push(Failure {
                path: dir.clone(),
                error: e.to_string(),
            }),
        }
        if scan::folder_in_use(dir) {
            locked_dirs.insert(dir.clone());
        }
    }
    // Least recently used first; an entry with no time at all is the oldest.
    all.sort_by_key(|e| e.last_used.unwrap_or(SystemTime::UNIX_EPOCH));
    let mut used: u64 = all.iter().map(|e| e.bytes).sum();
    report.used_before = used;
    let now = SystemTime::now();
    let mut ev = Evictor {
        policy,
        dry_run,
        now,
        locked_dirs: &locked_dirs,
        done: HashSet::new(),
        report: &mut report,
    };

    if let (Some(max), Some(target)) = (policy.max_used_bytes, policy.used_target())
        && used > max
    {
        for e in &all {
            if used <= target {
                break;
            }
            if ev.try_remove(e, Reason::MaxUsedBytes) {
                used = used.saturating_sub(e.bytes);
            }
        }
    }

    // Per file system, in the order the folders were given.
    let mut devs: Vec<(u64, PathBuf)> = Vec::new();
    for dir in dirs {
        if let Ok(m) = std::fs::metadata(dir)
            && !devs
                .iter()
                .any(|(d, _)| *d == std::os::unix::fs::MetadataExt::dev(&m))
        {
            devs.push((std::os::unix::fs::MetadataExt::dev(&m), dir.clone()));
        }
    }
    let mut within = policy.max_used_bytes.is_none_or(|m| used <= m);
    for (dev, dir) in devs {
        let Ok((before, _)) = scan::fs_space(&dir) else {
            continue;
        };
        let mut free = before;
        if let (Some(min), Some(target)) = (policy.min_free_bytes, policy.free_target())
            && free < min
        {
            for e in all.iter().filter(|e| e.dev == dev) {
                if free >= target {
                    break;
                }
                if ev.try_remove(e, Reason::MinFreeBytes) {
                    used = used.saturating_sub(e.bytes);
                    // Measure for real when something was deleted: hard links and other
                    // writers make the entry's size only an estimate of the space it frees.
                    free = match (dry_run, scan::fs_space(&dir)) {
                        (false, Ok((f, _))) => f,
                        _ => free.saturating_add(e.bytes),
                    };
                }
            }
            within &= free >= min;
        }
        ev.report.free.push(FreeSpace {
            dir,
            before,
            after: free,
        });
    }
    report.used_after = used;
    report.within_limits = within;
    report
}

/// The state one eviction pass shares between the two rules.
struct Evictor<'a> {
    policy: &'a Policy,
    dry_run: bool,
    now: SystemTime,
    locked_dirs: &'a HashSet<PathBuf>,
    /// Entries already removed or skipped.
    done: HashSet<PathBuf>,
    report: &'a mut Report,
}

impl Evictor<'_> {
    /// Removes `e` unless it must be kept; true when it is gone (or would be).
    fn try_remove(&mut self, e: &Entry, reason: Reason) -> bool {
        if !self.done.insert(e.path.clone()) {
            return false;
        }
        let skip = |this: &mut Self, reason| {
            this.report.skipped.push(Skip {
                path: e.path.clone(),
                reason,
            });
            false
        };
        if e.path
            .parent()
            .is_some_and(|p| self.locked_dirs.contains(p))
        {
            return skip(self, SkipReason::FolderLocked);
        }
        let young = match e.last_used {
            Some(t) => self
                .now
                .duration_since(t)
                .map_or(true, |age| age < self.policy.min_age),
            None => false,
        };
        if young {
            return skip(self, SkipReason::TooYoung);
        }
        // Held while deleting, so a user that locks first never finds the entry half gone.
        let Some(_guard) = scan::acquire(&e.path, e.is_dir) else {
            return skip(self, SkipReason::InUse);
        };
        if !self.dry_run
            && let Err(err) = remove(&e.path, e.is_dir)
        {
            self.report.errors.push(Failure {
                path: e.path.clone(),
                error: err.to_string(),
            });
            return false;
        }
        self.report.removed.push(Removal {
            path: e.path.clone(),
            bytes: e.bytes,
            last_used: e.last_used,
            reason,
        });
        true
    }
}

/// Deletes an entry and a file entry's stamp. Its lock file stays: someone may be waiting on
/// it, and a fresh lock file would let two users in at once.
fn remove(path: &Path, is_dir: bool) -> io::Result<()> {
    let r = if is_dir {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match r {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    if !is_dir {
        let _ = std::fs::remove_file(scan::sibling(path, scan::STAMP));
    }
    Ok(())
}

/// [`enforce`] on a blocking thread, for async callers (the walk can take seconds).
pub async fn enforce_in_background(policy: Policy, dirs: Vec<PathBuf>) -> Report {
    match tokio::task::spawn_blocking(move || enforce(&policy, &dirs, false)).await {
        Ok(r) => r,
        Err(e) => Report {
            errors: vec![Failure {
                path: PathBuf::new(),
                error: format!("cache enforcement stopped: {e}"),
            }],
            ..Report::default()
        },
    }
}

/// Enforces `policy` every `interval` (the first time at once) and hands each report to
/// `on_report`. Runs until the future is dropped or its task aborted.
pub async fn run_periodically<F>(
    policy: Policy,
    dirs: Vec<PathBuf>,
    interval: Duration,
    on_report: F,
) where
    F: Fn(Report) + Send + 'static,
{
    let mut tick = tokio::time::interval(interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        on_report(enforce_in_background(policy.clone(), dirs.clone()).await);
    }
}
