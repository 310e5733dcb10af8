//! A content-addressed store of built Python virtual environments, shared by every agent on a
//! host, that brings an environment back in a fraction of a second.
//!
//! * **Key** ([`cache_key`]): sha256 over everything an environment's contents depend on
//!   ([`KeyInputs`]). Requirement files count by their contents, nested `-r` files included
//!   (clearml-agent skips its cache whenever a `-r` line appears).
//! * **Layout**: `<dir>/<key>/venv/` holds the environment's files, `<dir>/<key>/manifest.json`
//!   what it is (created, last used, size, python, the key inputs, the frozen package list, the
//!   path it was built at and which files embed that path). Lock files live apart in
//!   `<dir>/locks/` so they outlive the entries they guard.
//! * **Store** ([`EnvCache::store`]): the built venv is hardlinked (copied across file systems)
//!   into `<dir>/.tmp-<unique>/` and renamed into place, so a reader never sees half an entry.
//!   The build folder keeps running on the very same inodes: storing costs no copy.
//! * **Restore** ([`EnvCache::restore`]): every regular file is hardlinked into the target,
//!   directories and symlinks are recreated. A venv embeds its absolute path (script shebangs,
//!   `bin/activate*`, sometimes `pyvenv.cfg` or `.pth` files); those files, listed in the
//!   manifest when storing, are written as fresh private copies with the new path. Compiled
//!   `.pyc` files also hold the old path but CPython fixes `co_filename` on load, so they stay
//!   linked. Files are only copied when linking fails across file systems ([`std::fs::copy`],
//!   which reflinks where the file system can).
//! * **Reuse in place** ([`EnvCache::reuse`], `reuse.rs`): a restore (and a store, for the
//!   folder it stored from) leaves a record of what it made in the target; when the next task
//!   of the slot wants the same entry and a walk finds the folder unchanged (new bytecode
//!   aside), it runs in it as it is, with no clearing and no linking.
//! * **Protection**: stored files are made read-only, so a task running as a normal user cannot
//!   write through its hardlinks into the store; installers (pip, uv) unlink and recreate files,
//!   which leaves the store alone. Root ignores file modes, so every entry also records when it
//!   was sealed, and a restore that meets a file modified after that (an in-place write by
//!   some task) discards the entry instead of handing out a changed environment.
//! * **Concurrency**: `locks/<key>.lock` is taken exclusively to publish or delete an entry and
//!   shared while restoring from it; `locks/<key>.use` is held shared by every environment
//!   restored from the entry for as long as its task runs ([`InUse`], which can survive `exec`).
//!   Eviction takes both exclusively with `try_lock`, so it never removes an entry in use and
//!   never waits for a task.
//! * **Eviction** ([`EnvCache::evict`]): least recently used first, down to
//!   `max_entries`, and further while the cache's file system has less free space than
//!   `free_space_threshold` (statvfs). When space stays short, the new entry is not stored.

mod key;
mod reuse;

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use key::{KeyInputs, Uncacheable, cache_key, normalise_files, normalise_text};
pub use reuse::MARKER;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl CacheError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> CacheError {
        CacheError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the cache's messages go (evictions, discarded entries): the workspace's one
/// progress trait.
pub use clearml_progress::{NullReporter, Reporter, Step};

/// The cache's limits.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    pub dir: PathBuf,
    /// Entries kept at most (`agent.venvs_cache.max_entries`); 0 stores nothing.
    pub max_entries: usize,
    /// Free bytes the cache's file system must keep (`free_space_threshold_gb`); 0 disables.
    pub free_space_threshold: u64,
}

/// What an entry is, in `<key>/manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub key: String,
    /// Unix milliseconds.
    pub created_ms: u64,
    /// Unix milliseconds of the last store or restore; eviction goes by it.
    pub last_used_ms: u64,
    /// Bytes of the entry's regular files.
    pub size: u64,
    pub files: u64,
    pub python: String,
    pub inputs: KeyInputs,
    /// The package list recorded for the environment, served on a hit instead of a freeze.
    pub frozen: Vec<String>,
    /// The absolute path the environment was built at.
    pub source_path: String,
    /// Files (relative to the venv) that contain `source_path` and are rewritten on restore.
    pub relocate: Vec<String>,
    /// Nanoseconds since the epoch when the files were sealed; a later mtime means a write.
    pub sealed_at_ns: u128,
}

const MANIFEST: &str = "manifest.json";
const VENV: &str = "venv";
const FORMAT: u32 = 1;

/// The cache's side of an environment in use: while it lives (or, after
/// [`InUse::keep_across_exec`], while the exec'd process and its children live), eviction
/// leaves the entry alone.
#[derive(Debug)]
pub struct InUse {
    file: File,
    key: String,
}

impl InUse {
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Lets the lock's descriptor survive `exec`: the lock belongs to the open file, so it is
    /// held until the task process (and any child that inherited it) exits.
    pub fn keep_across_exec(&self) -> io::Result<()> {
        rustix::io::fcntl_setfd(&self.file, rustix::io::FdFlags::empty()).map_err(io::Error::from)
    }
}

/// The result of a successful [`EnvCache::restore`].
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub in_use: InUse,
    /// Files hardlinked from the store.
    pub linked: u64,
    /// Files written fresh with the new path.
    pub rewritten: u64,
    /// Files copied because linking was impossible (another file system).
    pub copied: u64,
    /// The target already held this very environment, unchanged: nothing was done
    /// ([`EnvCache::reuse`]).
    pub reused: bool,
    pub elapsed: Duration,
}

/// What [`EnvCache::store`] did.
#[derive(Debug)]
pub enum Stored {
    Added(Box<Manifest>),
    /// Another agent stored the same key first; its entry stays.
    AlreadyPresent,
    /// Not stored, with the reason (no room, `max_entries` 0).
    Skipped(String),
}

/// One entry as [`EnvCache::entries`] lists it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub key: String,
    pub last_used_ms: u64,
    pub size: u64,
}

/// A handle on the cache folder; cheap, and any number of them (in any number of processes)
/// may use one folder at once.
#[derive(Clone, Debug)]
pub struct EnvCache {
    settings: CacheSettings,
}

impl EnvCache {
    /// Opens (creating) the cache folder.
    pub fn open(settings: CacheSettings) -> Result<EnvCache, CacheError> {
        let locks = settings.dir.join("locks");
        fs::create_dir_all(&locks).map_err(|e| CacheError::io("creating", &locks, e))?;
        Ok(EnvCache { settings })
    }

    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    fn entry_dir(&self, key: &str) -> PathBuf {
        self.settings.dir.join(key)
    }

    fn lock_file(&self, key: &str, ext: &str) -> Result<File, CacheError> {
        let path = self.settings.dir.join("locks").join(format!("{key}.{ext}"));
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| CacheError::io("opening", &path, e))
    }

    /// Whether `key` has an entry right now (it may be evicted a moment later).
    pub fn contains(&self, key: &str) -> bool {
        valid_key(key).is_ok() && self.entry_dir(key).join(MANIFEST).is_file()
    }

    /// Recreates the environment stored under `key` at `target`, which must not exist or be
    /// an empty folder. `Ok(None)` on a miss, or when the entry was found damaged (then it
    /// is discarded).
    pub fn restore(
        &self,
        key: &str,
        target: &Path,
        reporter: &dyn Reporter,
    ) -> Result<Option<Restored>, CacheError> {
        valid_key(key)?;
        let started = Instant::now();
        let entry = self.entry_dir(key);
        if !entry.join(MANIFEST).is_file() {
            return Ok(None);
        }
        let _step = clearml_progress::StepGuard::start(
            reporter,
            Step::CacheRestore,
            &target.display().to_string(),
        );
        // The use lock first: once held, eviction cannot start on this entry; one already
        // running holds it exclusively and we wait for it (it never waits on anything).
        let use_lock = self.lock_file(key, "use")?;
        use_lock
            .lock_shared()
            .map_err(|e| CacheError::io("locking", &entry, e))?;
        let entry_lock = self.lock_file(key, "lock")?;
        entry_lock
            .lock_shared()
            .map_err(|e| CacheError::io("locking", &entry, e))?;
        let manifest = match read_manifest(&entry) {
            Some(m) if m.format == FORMAT && m.key == key => m,
            _ => return Ok(None),
        };
        match fs::read_dir(target) {
            Ok(mut it) => {
                if it.next().is_some() {
                    return Err(CacheError::Invalid(format!(
                        "cannot restore into {}: it is not empty",
                        target.display()
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(CacheError::io("reading", target, e)),
        }
        let mut job = RestoreJob {
            relocate: manifest.relocate.iter().map(PathBuf::from).collect(),
            old: manifest.source_path.clone(),
            new: target.display().to_string(),
            sealed_at_ns: manifest.sealed_at_ns,
            linked: 0,
            rewritten: 0,
            copied: 0,
            made: Default::default(),
        };
        let result = job.tree(&entry.join(VENV), target, Path::new(""));
        drop(entry_lock);
        match result {
            Ok(true) => {}
            Ok(false) => {
                // Something wrote into a stored file through a hardlink (root ignores the
                // read-only mode): never hand that out again.
                let _ = fs::remove_dir_all(target);
                reporter.line(&format!(
                    "Discarding cached environment {}: a stored file was modified in place",
                    short(key)
                ));
                drop(use_lock);
                self.remove_entry(key, true)?;
                return Ok(None);
            }
            Err(e) => {
                let _ = fs::remove_dir_all(target);
                return Err(e);
            }
        }
        // The record that lets the next task of this slot reuse the folder as it is; without
        // it the next one restores again, so a failure costs nothing else.
        let marker = reuse::Marker {
            key: key.to_string(),
            sealed_at_ns: manifest.sealed_at_ns,
            items: std::mem::take(&mut job.made),
        };
        if let Err(e) = marker.write(target) {
            reporter.line(&format!("Warning: {e}"));
        }
        let mut manifest = manifest;
        manifest.last_used_ms = now_ms();
        // Best effort: a lost update only makes the entry look older to eviction.
        let _ = write_manifest(&entry, &manifest);
        Ok(Some(Restored {
            manifest,
            in_use: InUse {
                file: use_lock,
                key: key.to_string(),
            },
            linked: job.linked,
            rewritten: job.rewritten,
            copied: job.copied,
            reused: false,
            elapsed: started.elapsed(),
        }))
    }

    /// Adds the environment built at `venv_dir` under `key`: its files become (read-only)
    /// hardlinks shared with the store. Evicts first to make room.
    pub fn store(
        &self,
        key: &str,
        venv_dir: &Path,
        inputs: &KeyInputs,
        frozen: &[String],
        reporter: &dyn Reporter,
    ) -> Result<Stored, CacheError> {
        valid_key(key)?;
        if self.contains(key) {
            return Ok(Stored::AlreadyPresent);
        }
        if self.settings.max_entries == 0 {
            return Ok(Stored::Skipped("venvs_cache.max_entries is 0".into()));
        }
        self.evict(1, reporter)?;
        if !self.has_room() {
            return Ok(Stored::Skipped(format!(
                "less than {} bytes free in {}",
                self.settings.free_space_threshold,
                self.settings.dir.display()
            )));
        }
        let source =
            fs::canonicalize(venv_dir).map_err(|e| CacheError::io("reading", venv_dir, e))?;
        let tmp = self.settings.dir.join(format!(".tmp-{}", unique()));
        let result = self.fill(key, &source, &tmp, inputs, frozen);
        let manifest = match result {
            Ok(m) => m,
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp);
                return Err(e);
            }
        };
        let entry = self.entry_dir(key);
        let lock = self.lock_file(key, "lock")?;
        lock.lock()
            .map_err(|e| CacheError::io("locking", &entry, e))?;
        if entry.exists() {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(Stored::AlreadyPresent);
        }
        if let Err(e) = fs::rename(&tmp, &entry) {
            let _ = fs::remove_dir_all(&tmp);
            return Err(CacheError::io("publishing", &entry, e));
        }
        Ok(Stored::Added(Box::new(manifest)))
    }

    fn fill(
        &self,
        key: &str,
        source: &Path,
        tmp: &Path,
        inputs: &KeyInputs,
        frozen: &[String],
    ) -> Result<Manifest, CacheError> {
        fs::create_dir_all(tmp).map_err(|e| CacheError::io("creating", tmp, e))?;
        let mut job = StoreJob {
            needle: source.display().to_string().into_bytes(),
            relocate: Vec::new(),
            size: 0,
            files: 0,
        };
        job.tree(source, &tmp.join(VENV), Path::new(""))?;
        let now = now_ms();
        let manifest = Manifest {
            format: FORMAT,
            key: key.to_string(),
            created_ms: now,
            last_used_ms: now,
            size: job.size,
            files: job.files,
            python: inputs.python_version.clone(),
            inputs: inputs.clone(),
            frozen: frozen.to_vec(),
            source_path: source.display().to_string(),
            relocate: job.relocate,
            sealed_at_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos(),
        };
        write_manifest(tmp, &manifest)?;
        Ok(manifest)
    }

    /// The entries, least recently used first.
    pub fn entries(&self) -> Result<Vec<Entry>, CacheError> {
        let dir = &self.settings.dir;
        let mut out = Vec::new();
        for item in fs::read_dir(dir).map_err(|e| CacheError::io("reading", dir, e))? {
            let item = item.map_err(|e| CacheError::io("reading", dir, e))?;
            let name = item.file_name().to_string_lossy().to_string();
            if valid_key(&name).is_err() || name == "locks" {
                continue;
            }
            let Some(m) = read_manifest(&item.path()) else {
                continue;
            };
            out.push(Entry {
                key: name,
                last_used_ms: m.last_used_ms,
                size: m.size,
            });
        }
        out.sort_by(|a, b| a.last_used_ms.cmp(&b.last_used_ms).then(a.key.cmp(&b.key)));
        Ok(out)
    }

    /// Removes least recently used entries not in use until `reserve` more would fit under
    /// `max_entries` and the free-space threshold holds. Returns the removed keys.
    pub fn evict(
        &self,
        reserve: usize,
        reporter: &dyn Reporter,
    ) -> Result<Vec<String>, CacheError> {
        self.sweep_leftovers();
        let entries = self.entries()?;
        let limit = self.settings.max_entries.saturating_sub(reserve);
        let mut count = entries.len();
        let mut removed = Vec::new();
        for e in entries {
            if count <= limit && self.has_room() {
                break;
            }
            if self.remove_entry(&e.key, false)? {
                reporter.line(&format!(
                    "Removed cached environment {} (least recently used)",
                    short(&e.key)
                ));
                removed.push(e.key);
                count -= 1;
            }
        }
        Ok(removed)
    }

    /// Deletes an entry unless it is in use (or `force` — used for damaged entries, whose
    /// users have their own links anyway). Returns whether it was removed.
    fn remove_entry(&self, key: &str, force: bool) -> Result<bool, CacheError> {
        let use_lock = self.lock_file(key, "use")?;
        match use_lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) if !force => return Ok(false),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => {
                return Err(CacheError::io("locking", &self.entry_dir(key), e));
            }
        }
        let entry_lock = self.lock_file(key, "lock")?;
        match entry_lock.try_lock() {
            Ok(()) => {}
            // A store or restore is busy with it right now: next time.
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => {
                return Err(CacheError::io("locking", &self.entry_dir(key), e));
            }
        }
        let entry = self.entry_dir(key);
        let doomed = self.settings.dir.join(format!(".del-{}", unique()));
        match fs::rename(&entry, &doomed) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(CacheError::io("removing", &entry, e)),
        }
        drop(entry_lock);
        drop(use_lock);
        fs::remove_dir_all(&doomed).map_err(|e| CacheError::io("removing", &doomed, e))?;
        Ok(true)
    }

    /// Temp and doomed folders left by a crashed agent (an hour is far beyond any store).
    fn sweep_leftovers(&self) {
        let Ok(items) = fs::read_dir(&self.settings.dir) else {
            return;
        };
        for item in items.flatten() {
            let name = item.file_name().to_string_lossy().to_string();
            if !(name.starts_with(".tmp-") || name.starts_with(".del-")) {
                continue;
            }
            let old = item
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(3600));
            if old {
                let _ = fs::remove_dir_all(item.path());
            }
        }
    }

    fn has_room(&self) -> bool {
        if self.settings.free_space_threshold == 0 {
            return true;
        }
        match rustix::fs::statvfs(&self.settings.dir) {
            Ok(s) => s.f_bavail.saturating_mul(s.f_frsize) >= self.settings.free_space_threshold,
            // Unknown free space must not stop the agent: store.
            Err(_) => true,
        }
    }
}

/// The first 12 hex digits, for log lines.
pub fn short(key: &str) -> &str {
    key.get(..12).unwrap_or(key)
}

/// Keys name folders: only `[0-9a-zA-Z_-]`, so no key can climb out of the cache.
fn valid_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty()
        || key.len() > 128
        || !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(CacheError::Invalid(format!("invalid cache key {key:?}")));
    }
    Ok(())
}

fn now_ms() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn unique() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    format!(
        "{}-{}-{}",
        std::process::id(),
        nanos,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn read_manifest(entry: &Path) -> Option<Manifest> {
    let bytes = fs::read(entry.join(MANIFEST)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Writes through a temp file and a rename, so readers see the old or the new manifest.
fn write_manifest(entry: &Path, m: &Manifest) -> Result<(), CacheError> {
    let path = entry.join(MANIFEST);
    let tmp = entry.join(format!(".{MANIFEST}.{}", unique()));
    let bytes = serde_json::to_vec_pretty(m)
        .map_err(|e| CacheError::Invalid(format!("cannot encode the manifest: {e}")))?;
    fs::write(&tmp, bytes).map_err(|e| CacheError::io("writing", &tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        CacheError::io("writing", &path, e)
    })
}

/// Files worth scanning for the venv's own path: text files of a sane size. Compiled and
/// binary files are skipped (see the crate docs on `.pyc`).
fn may_embed_path(rel: &Path, len: u64) -> bool {
    let skip_ext = [
        "pyc", "so", "pyd", "whl", "zip", "gz", "png", "jpg", "a", "o",
    ];
    let ext = rel.extension().and_then(|e| e.to_str()).unwrap_or("");
    len <= 4 << 20 && !skip_ext.contains(&ext)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

fn replace_bytes(hay: &[u8], old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len() + 64);
    let mut i = 0;
    while i < hay.len() {
        if !old.is_empty() && hay[i..].starts_with(old) {
            out.extend_from_slice(new);
            i += old.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Hardlinks `src` to `dst`; copies when they are on different file systems.
fn link_or_copy(src: &Path, dst: &Path) -> Result<bool, CacheError> {
    match fs::hard_link(src, dst) {
        Ok(()) => Ok(true),
        Err(e)
            if e.kind() == io::ErrorKind::CrossesDevices
                || e.kind() == io::ErrorKind::PermissionDenied
                || e.raw_os_error() == Some(rustix::io::Errno::MLINK.raw_os_error()) =>
        {
            fs::copy(src, dst).map_err(|e| CacheError::io("copying", src, e))?;
            Ok(false)
        }
        Err(e) => Err(CacheError::io("linking", dst, e)),
    }
}

struct StoreJob {
    needle: Vec<u8>,
    relocate: Vec<String>,
    size: u64,
    files: u64,
}

impl StoreJob {
    fn tree(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<(), CacheError> {
        fs::create_dir_all(dst).map_err(|e| CacheError::io("creating", dst, e))?;
        let items = fs::read_dir(src).map_err(|e| CacheError::io("reading", src, e))?;
        for item in items {
            let item = item.map_err(|e| CacheError::io("reading", src, e))?;
            let name = item.file_name();
            let (s, d, r) = (item.path(), dst.join(&name), rel.join(&name));
            let meta = fs::symlink_metadata(&s).map_err(|e| CacheError::io("reading", &s, e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                self.tree(&s, &d, &r)?;
            } else if ft.is_symlink() {
                let to = fs::read_link(&s).map_err(|e| CacheError::io("reading", &s, e))?;
                std::os::unix::fs::symlink(&to, &d)
                    .map_err(|e| CacheError::io("linking", &d, e))?;
            } else if ft.is_file() {
                link_or_copy(&s, &d)?;
                self.size += meta.len();
                self.files += 1;
                if may_embed_path(&r, meta.len()) {
                    let bytes = fs::read(&s).map_err(|e| CacheError::io("reading", &s, e))?;
                    if !bytes.contains(&0) && contains(&bytes, &self.needle) {
                        self.relocate.push(r.display().to_string());
                    }
                }
                // Read-only: a non-root task cannot write through its link into the store.
                let mode = meta.permissions().mode();
                if mode & 0o222 != 0 {
                    fs::set_permissions(&d, fs::Permissions::from_mode(mode & !0o222))
                        .map_err(|e| CacheError::io("protecting", &d, e))?;
                }
            }
            // Sockets, fifos and devices have no place in a venv: left out.
        }
        Ok(())
    }
}

struct RestoreJob {
    relocate: BTreeSet<PathBuf>,
    old: String,
    new: String,
    sealed_at_ns: u128,
    linked: u64,
    rewritten: u64,
    copied: u64,
    /// What was made, by relative path, for [`reuse::Marker`].
    made: std::collections::HashMap<String, reuse::Item>,
}

impl RestoreJob {
    fn record(&mut self, rel: &Path, item: reuse::Item) {
        if let Some(r) = rel.to_str() {
            self.made.insert(r.to_string(), item);
        }
    }

    /// `Ok(false)` when a stored file was modified after sealing.
    fn tree(&mut self, src: &Path, dst: &Path, rel: &Path) -> Result<bool, CacheError> {
        fs::create_dir_all(dst).map_err(|e| CacheError::io("creating", dst, e))?;
        let items = fs::read_dir(src).map_err(|e| CacheError::io("reading", src, e))?;
        for item in items {
            let item = item.map_err(|e| CacheError::io("reading", src, e))?;
            let name = item.file_name();
            let (s, d, r) = (item.path(), dst.join(&name), rel.join(&name));
            let meta = fs::symlink_metadata(&s).map_err(|e| CacheError::io("reading", &s, e))?;
            let ft = meta.file_type();
            if ft.is_dir() {
                if !self.tree(&s, &d, &r)? {
                    return Ok(false);
                }
                self.record(&r, reuse::Item::Dir);
            } else if ft.is_symlink() {
                let to = fs::read_link(&s).map_err(|e| CacheError::io("reading", &s, e))?;
                let to_s = to.display().to_string();
                let to = if to_s.contains(&self.old) {
                    PathBuf::from(to_s.replace(&self.old, &self.new))
                } else {
                    to
                };
                std::os::unix::fs::symlink(&to, &d)
                    .map_err(|e| CacheError::io("linking", &d, e))?;
                self.record(&r, reuse::Item::Link(to.display().to_string()));
            } else if ft.is_file() {
                let mtime_ns = (meta.mtime() as i128) * 1_000_000_000 + meta.mtime_nsec() as i128;
                if mtime_ns > self.sealed_at_ns as i128 {
                    return Ok(false);
                }
                if self.relocate.contains(&r) {
                    let bytes = fs::read(&s).map_err(|e| CacheError::io("reading", &s, e))?;
                    let fresh = replace_bytes(&bytes, self.old.as_bytes(), self.new.as_bytes());
                    fs::write(&d, fresh).map_err(|e| CacheError::io("writing", &d, e))?;
                    // A private copy: give back the write bit the store took away.
                    let mode = meta.permissions().mode() | 0o200;
                    fs::set_permissions(&d, fs::Permissions::from_mode(mode))
                        .map_err(|e| CacheError::io("writing", &d, e))?;
                    self.rewritten += 1;
                    let written =
                        fs::symlink_metadata(&d).map_err(|e| CacheError::io("reading", &d, e))?;
                    self.record(&r, reuse::Item::file(&written));
                } else if link_or_copy(&s, &d)? {
                    self.linked += 1;
                    // The same inode as the stored file.
                    self.record(&r, reuse::Item::file(&meta));
                } else {
                    self.copied += 1;
                    let copy =
                        fs::symlink_metadata(&d).map_err(|e| CacheError::io("reading", &d, e))?;
                    self.record(&r, reuse::Item::file(&copy));
                }
            }
        }
        Ok(true)
    }
}
