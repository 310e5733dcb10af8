//! The repository cache: one bare mirror per repository, guarded by an exclusive file lock.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::VcsSettings;
use crate::git::Git;
use crate::url::{normalise, repo_name};

/// `<cache_dir>/<name>.<md5 of the normalised URL>`. The hashed text carries a version tag, so
/// a cache dir shared with the Python agent (md5 of the raw URL) never names the same folder.
pub(crate) fn entry_path(settings: &VcsSettings, url: &str) -> PathBuf {
    let mut hasher = Md5::new();
    hasher.update(b"clearml-vcs-v1\n");
    hasher.update(normalise(url).as_bytes());
    let key: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    settings.cache_dir.join(format!("{}.{key}", repo_name(url)))
}

/// `<entry>` with `suffix` appended to its file name.
pub(crate) fn sibling(entry: &Path, suffix: &str) -> PathBuf {
    let mut name = entry.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Holds the lock until dropped (closing the file releases it).
pub(crate) struct Lock {
    _file: File,
}

/// How long to sleep between two lock attempts.
const POLL: Duration = Duration::from_millis(100);

/// Takes the exclusive lock of a cache entry, waiting up to `timeout`. `None` means the lock
/// could not be had (timeout, a read-only cache, a filesystem without locks); the caller then
/// works without the cache rather than failing the task.
pub(crate) fn lock(entry: &Path, timeout: Duration, git: &Git) -> Option<Lock> {
    let path = sibling(entry, ".lock");
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path);
    let file = match opened {
        Ok(f) => f,
        Err(e) => {
            git.say(&format!("cannot open {}: {e}", path.display()));
            return None;
        }
    };
    let start = Instant::now();
    let mut reported = false;
    loop {
        match file.try_lock() {
            Ok(()) => return Some(Lock { _file: file }),
            Err(TryLockError::WouldBlock) => {
                if !reported {
                    git.say(&format!(
                        "waiting for lock on {} (up to {} s)",
                        path.display(),
                        timeout.as_secs()
                    ));
                    reported = true;
                }
                let waited = start.elapsed();
                if waited >= timeout {
                    git.say(&format!(
                        "lock on {} not acquired after {} s",
                        path.display(),
                        waited.as_secs()
                    ));
                    return None;
                }
                std::thread::sleep(POLL.min(timeout - waited));
            }
            Err(TryLockError::Error(e)) => {
                git.say(&format!("cannot lock {}: {e}", path.display()));
                return None;
            }
        }
    }
}
