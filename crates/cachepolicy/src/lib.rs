//! The `sdk.storage.cache.size` policy, enforced by the agent on the cache folders it manages.
//!
//! The Python agent only passes `sdk.storage.cache.*` through to the SDK (agent-inventory §7.4);
//! we enforce it on the agent's own caches as well: the storage cache base dir, the vcs mirror
//! cache, the pip download cache, uv's cache and the venv cache.
//!
//! # Units, last use, in use
//!
//! Each top-level entry of a managed folder (a file or a directory) is one unit of eviction.
//! Names starting with `.`, `CACHEDIR.TAG` and names ending in `.lock` or `.last_used` (an
//! entry's lock and stamp, see [`lock_path`] and [`stamp_path`]) are bookkeeping, never units.
//!
//! * **Last use** is the modification time of the entry's stamp, when it has one
//!   ([`stamp_path`]; [`touch_last_used`] writes it), else the newest mtime of anything inside
//!   and the newest atime of the files inside. Directory atimes are ignored: reading a directory
//!   (as this crate does) updates them.
//! * **In use**: `<entry>.lock`, `<entry>/.lock`, `locks/<entry>.lock` or `locks/<entry>.use`
//!   (the venv cache's layout; a top-level `locks` folder is never a unit) exists and another
//!   open file holds a `flock` on it ([`std::fs::File::try_lock`]); or the managed folder's own `.lock` /
//!   `.clearml.lock` is held (uv and the Python venv cache lock those), which puts the whole
//!   folder in use. Eviction takes the entry's lock itself and keeps it while deleting, so a
//!   user that locks before touching the entry (the vcs cache does) never sees it half gone.
//! * Entries used less than [`Policy::min_age`] ago (60 s by default) are never removed, so a
//!   writer that has not taken a lock is not raced.
//!
//! # The rule ([`enforce`])
//!
//! All managed folders form one cache. Entries are ordered least recently used first.
//! 1. `max_used_bytes`: if the entries' total size is above it, remove entries in LRU order
//!    until the total is at most `max_used_bytes * (1 - margin/100)`.
//! 2. `min_free_bytes`: for each file system holding a managed folder, if its free space (what
//!    an unprivileged user may use, `f_bavail`) is below it, remove that file system's
//!    remaining entries in LRU order until free space is at least
//!    `min_free_bytes * (1 + margin/100)`.
//!
//! Sizes are allocated bytes (`st_blocks * 512`), a hard-linked file counted once. An entry
//! that cannot be removed is reported and skipped; enforcement never fails as a whole.

mod config;
mod enforce;
mod scan;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub use config::{dirs_from_config, from_config};
pub use enforce::{
    Failure, FreeSpace, Reason, Removal, Report, Skip, SkipReason, enforce, enforce_in_background,
    human_bytes, run_periodically,
};
pub use scan::{FolderStatus, Status, status};

/// The size limits, from `sdk.storage.cache.size.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// The most bytes all managed folders together may hold; `None`: no limit.
    pub max_used_bytes: Option<u64>,
    /// The least free bytes to leave on each file system holding a managed folder.
    pub min_free_bytes: Option<u64>,
    /// How far below (or above, for free space) the limit eviction goes, in percent.
    pub cleanup_margin_percent: f64,
    /// Entries used more recently than this are never removed.
    pub min_age: Duration,
}

/// The SDK's default margin (`cleanup_margin_percent = 5%` in sdk.conf).
pub const DEFAULT_MARGIN_PERCENT: f64 = 5.0;
/// Default for [`Policy::min_age`].
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(60);

impl Default for Policy {
    fn default() -> Self {
        Policy {
            max_used_bytes: None,
            min_free_bytes: None,
            cleanup_margin_percent: DEFAULT_MARGIN_PERCENT,
            min_age: DEFAULT_MIN_AGE,
        }
    }
}

impl Policy {
    /// Reads the config's view. Sizes are already bytes there (`10GB` is parsed by the config
    /// crate); a negative size (`-1` is the documented "no limit") means no limit. A margin
    /// outside 0..=100 or not a number is clamped / replaced by the default.
    pub fn from_storage_cache(sc: &clearml_config::StorageCache) -> Policy {
        let limit = |v: Option<i64>| v.and_then(|n| u64::try_from(n).ok());
        let margin = sc
            .cleanup_margin_percent
            .filter(|m| m.is_finite())
            .map_or(DEFAULT_MARGIN_PERCENT, |m| m.clamp(0.0, 100.0));
        Policy {
            max_used_bytes: limit(sc.max_used_bytes),
            min_free_bytes: limit(sc.min_free_bytes),
            cleanup_margin_percent: margin,
            min_age: DEFAULT_MIN_AGE,
        }
    }

    /// Whether there is anything to enforce.
    pub fn is_active(&self) -> bool {
        self.max_used_bytes.is_some() || self.min_free_bytes.is_some()
    }

    /// The total size eviction goes down to once `max_used_bytes` is exceeded.
    pub fn used_target(&self) -> Option<u64> {
        self.max_used_bytes
            .map(|m| (m as f64 * (1.0 - self.cleanup_margin_percent / 100.0)).floor() as u64)
    }

    /// The free space eviction goes up to once free space is below `min_free_bytes`.
    pub fn free_target(&self) -> Option<u64> {
        self.min_free_bytes
            .map(|m| (m as f64 * (1.0 + self.cleanup_margin_percent / 100.0)).ceil() as u64)
    }
}

/// The stamp file whose mtime is an entry's last use: `<entry>/.last_used` for a directory,
/// `<entry>.last_used` next to a file.
pub fn stamp_path(entry: &Path) -> PathBuf {
    if entry.is_dir() {
        entry.join(scan::STAMP)
    } else {
        scan::sibling(entry, scan::STAMP)
    }
}

/// Marks `entry` used now (creates or updates its stamp). Components that use a cache entry
/// without writing to it call this so LRU order sees the use.
pub fn touch_last_used(entry: &Path) -> std::io::Result<()> {
    let path = stamp_path(entry);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    file.set_modified(SystemTime::now())
}

/// The lock file users of `entry` should `flock` while they use it: `<entry>.lock` (the vcs
/// cache's convention; it survives the entry being replaced).
pub fn lock_path(entry: &Path) -> PathBuf {
    scan::sibling(entry, ".lock")
}
