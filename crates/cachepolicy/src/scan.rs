//! Listing a managed folder's entries: size, last use, whether someone holds them.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Name of the last-use stamp (inside a directory entry, or as a suffix next to a file entry).
pub(crate) const STAMP: &str = ".last_used";
/// Suffixes that attach a file to the entry named by the rest of its name.
const ATTACHED: &[&str] = &[".lock", STAMP];
/// A folder of lock files named after the entries (clearml-envcache's layout).
const LOCKS_DIR: &str = "locks";
/// Folder-level locks: uv locks `<cache>/.lock`, the Python venv cache `<cache>/.clearml.lock`.
const FOLDER_LOCKS: &[&str] = &[".lock", ".clearml.lock"];

/// `<path>` with `suffix` appended to its file name.
pub(crate) fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// One unit of eviction.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub path: PathBuf,
    pub is_dir: bool,
    pub bytes: u64,
    pub last_used: Option<SystemTime>,
    /// The managed folder's file system (`st_dev`).
    pub dev: u64,
}

/// Inodes already counted, so a hard-linked file counts once.
pub(crate) type Seen = HashSet<(u64, u64)>;

/// Whether a top-level name is bookkeeping rather than an entry. `others` are the other
/// managed folders: an entry that is or contains one of them is left to that folder's scan.
fn is_unit(dir: &Path, name: &OsStr, others: &[PathBuf]) -> bool {
    let Some(s) = name.to_str() else {
        return true;
    };
    if s.starts_with('.') || s == "CACHEDIR.TAG" || s == LOCKS_DIR {
        return false;
    }
    // Lock and stamp files belong to their entry; an orphan one (its entry removed) is tiny
    // and may still be held by someone about to recreate the entry, so it is never a unit.
    if ATTACHED.iter().any(|suffix| s.ends_with(suffix)) {
        return false;
    }
    let path = dir.join(name);
    !others.iter().any(|o| o.starts_with(&path))
}

/// The entries of `dir`. A missing folder has none.
pub(crate) fn entries(dir: &Path, others: &[PathBuf], seen: &mut Seen) -> io::Result<Vec<Entry>> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let dev = std::fs::metadata(dir)?.dev();
    let mut out = Vec::new();
    for item in read {
        let item = item?;
        let name = item.file_name();
        if !is_unit(dir, &name, others) {
            continue;
        }
        let path = item.path();
        let Ok(meta) = path.symlink_metadata() else {
            // Gone since the listing.
            continue;
        };
        let is_dir = meta.is_dir();
        let (bytes, newest) = measure(&path, &meta, seen);
        let stamp = if is_dir {
            path.join(STAMP)
        } else {
            sibling(&path, STAMP)
        };
        let last_used = match stamp.metadata().and_then(|m| m.modified()) {
            Ok(t) => Some(t),
            Err(_) => newest,
        };
        out.push(Entry {
            path,
            is_dir,
            bytes,
            last_used,
            dev,
        });
    }
    Ok(out)
}

/// Allocated bytes under `path` and its newest use (file atime/mtime, directory mtime).
/// Unreadable parts are skipped: the walk is an estimate, never a failure.
fn measure(path: &Path, meta: &std::fs::Metadata, seen: &mut Seen) -> (u64, Option<SystemTime>) {
    let mut bytes = 0u64;
    let mut newest: Option<SystemTime> = None;
    let mut note = |t: io::Result<SystemTime>| {
        if let Ok(t) = t {
            newest = Some(newest.map_or(t, |n| n.max(t)));
        }
    };
    let mut stack = vec![(path.to_path_buf(), meta.clone())];
    while let Some((p, m)) = stack.pop() {
        if m.nlink() <= 1 || m.is_dir() || seen.insert((m.dev(), m.ino())) {
            bytes = bytes.saturating_add(m.blocks().saturating_mul(512));
        }
        note(m.modified());
        if m.is_file() {
            note(m.accessed());
        }
        if m.is_dir()
            && let Ok(read) = std::fs::read_dir(&p)
        {
            for item in read.flatten() {
                let child = item.path();
                if let Ok(cm) = child.symlink_metadata() {
                    stack.push((child, cm));
                }
            }
        }
    }
    (bytes, newest)
}

/// The lock files that guard an entry: `<entry>.lock` (vcs cache), `<entry>/.lock`, and
/// `locks/<name>.lock` / `locks/<name>.use` next to it (the venv cache, clearml-envcache).
fn lock_files(entry: &Path, is_dir: bool) -> Vec<PathBuf> {
    let mut v = vec![sibling(entry, ".lock")];
    if is_dir {
        v.push(entry.join(".lock"));
    }
    if let (Some(parent), Some(name)) = (entry.parent(), entry.file_name()) {
        let locks = parent.join(LOCKS_DIR);
        v.push(sibling(&locks.join(name), ".lock"));
        v.push(sibling(&locks.join(name), ".use"));
    }
    v
}

/// Locks taken for an eviction; released when dropped.
pub(crate) struct Guard {
    _files: Vec<File>,
}

/// Takes every existing lock of the entry without waiting. `Ok(None)`: someone holds one.
/// A lock file that cannot be opened or locked counts as held: when unsure, keep the entry.
pub(crate) fn acquire(entry: &Path, is_dir: bool) -> Option<Guard> {
    let mut files = Vec::new();
    for path in lock_files(entry, is_dir) {
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        };
        match file.try_lock() {
            Ok(()) => files.push(file),
            Err(TryLockError::WouldBlock | TryLockError::Error(_)) => return None,
        }
    }
    Some(Guard { _files: files })
}

/// Whether another open file holds one of the entry's locks.
pub(crate) fn in_use(entry: &Path, is_dir: bool) -> bool {
    acquire(entry, is_dir).is_none()
}

/// Whether the folder as a whole is locked by its tool.
pub(crate) fn folder_in_use(dir: &Path) -> bool {
    FOLDER_LOCKS.iter().any(|name| {
        let Ok(file) = File::open(dir.join(name)) else {
            return false;
        };
        !matches!(file.try_lock(), Ok(()))
    })
}

/// Free bytes for an unprivileged user and the size of the file system holding `path`.
pub(crate) fn fs_space(path: &Path) -> io::Result<(u64, u64)> {
    let s = rustix::fs::statvfs(path).map_err(io::Error::from)?;
    Ok((
        s.f_bavail.saturating_mul(s.f_frsize),
        s.f_blocks.saturating_mul(s.f_frsize),
    ))
}

/// What a managed folder holds.
#[derive(Clone, Debug, PartialEq)]
pub struct FolderStatus {
    pub path: PathBuf,
    pub exists: bool,
    pub entries: usize,
    pub bytes: u64,
    /// Entries whose lock someone holds (all of them when the folder itself is locked).
    pub in_use: usize,
    /// The folder's own `.lock`/`.clearml.lock` is held.
    pub folder_locked: bool,
    pub oldest: Option<SystemTime>,
    pub newest: Option<SystemTime>,
    /// Free and total bytes of the file system holding the folder.
    pub free_bytes: Option<u64>,
    pub fs_bytes: Option<u64>,
    /// Why the folder could not be read.
    pub error: Option<String>,
}

/// What all managed folders hold.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub folders: Vec<FolderStatus>,
}

impl Status {
    /// The size of all entries together (what `max_used_bytes` limits).
    pub fn total_bytes(&self) -> u64 {
        self.folders.iter().map(|f| f.bytes).sum()
    }
}

/// Looks at each managed folder; never fails (problems are in [`FolderStatus::error`]).
pub fn status(dirs: &[PathBuf]) -> Status {
    let mut seen = Seen::new();
    let folders = dirs
        .iter()
        .map(|dir| {
            let others: Vec<PathBuf> = dirs.iter().filter(|d| *d != dir).cloned().collect();
            let exists = dir.is_dir();
            let (free_bytes, fs_bytes) = match fs_space(dir) {
                Ok((f, t)) => (Some(f), Some(t)),
                Err(_) => (None, None),
            };
            let mut fs = FolderStatus {
                path: dir.clone(),
                exists,
                entries: 0,
                bytes: 0,
                in_use: 0,
                folder_locked: exists && folder_in_use(dir),
                oldest: None,
                newest: None,
                free_bytes,
                fs_bytes,
                error: None,
            };
            match entries(dir, &others, &mut seen) {
                Ok(list) => {
                    fs.entries = list.len();
                    fs.bytes = list.iter().map(|e| e.bytes).sum();
                    fs.in_use = if fs.folder_locked {
                        list.len()
                    } else {
                        list.iter().filter(|e| in_use(&e.path, e.is_dir)).count()
                    };
                    fs.oldest = list.iter().filter_map(|e| e.last_used).min();
                    fs.newest = list.iter().filter_map(|e| e.last_used).max();
                }
                Err(e) => fs.error = Some(e.to_string()),
            }
            fs
        })
        .collect();
    Status { folders }
}
