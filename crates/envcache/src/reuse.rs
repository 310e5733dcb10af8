//! Reusing a restored environment in place: a slot runs task after task in the same venv
//! folder, and when the next task wants the very same entry, a restore would only recreate
//! what is already there. So every restore leaves a record of what it made ([`MARKER`] inside
//! the target: each path with its kind, inode, mtime and size), and [`EnvCache::reuse`]
//! accepts the folder only when a walk finds exactly that: nothing added, removed, replaced
//! or written since. The one exception is bytecode: Python writes `__pycache__/*.pyc` next to
//! the modules a task imports, validated against their sources on every load, so new ones are
//! allowed (a freshly restored folder would grow the same ones).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::{
    CacheError, EnvCache, FORMAT, InUse, MANIFEST, Reporter, Restored, now_ms, read_manifest,
    valid_key, write_manifest,
};

/// The record a restore leaves in its target (a hidden name, left out of the comparison).
pub const MARKER: &str = ".clearml-envcache.json";

/// What a restore made, for [`EnvCache::reuse`].
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct Marker {
    pub key: String,
    /// The entry's seal: a re-stored entry under the same key has another.
    pub sealed_at_ns: u128,
    /// Relative path -> what is there.
    pub items: HashMap<String, Item>,
}

/// One path of the restored tree.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Item {
    Dir,
    Link(String),
    File { ino: u64, mtime_ns: i128, size: u64 },
}

impl Item {
    pub(crate) fn file(meta: &fs::Metadata) -> Item {
        Item::File {
            ino: meta.ino(),
            mtime_ns: (meta.mtime() as i128) * 1_000_000_000 + meta.mtime_nsec() as i128,
            size: meta.len(),
        }
    }
}

impl Marker {
    pub(crate) fn write(&self, target: &Path) -> Result<(), CacheError> {
        let path = target.join(MARKER);
        let bytes = serde_json::to_vec(self)
            .map_err(|e| CacheError::Invalid(format!("cannot encode {MARKER}: {e}")))?;
        fs::write(&path, bytes).map_err(|e| CacheError::io("writing", &path, e))
    }

    fn read(target: &Path) -> Option<Marker> {
        let bytes = fs::read(target.join(MARKER)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

impl EnvCache {
    /// Takes the environment already at `target` as a restore of `key` when the last restore
    /// there was of this very entry and nothing in it changed since (see the module docs).
    /// `Ok(None)` otherwise: the caller clears `target` and restores.
    pub fn reuse(
        &self,
        key: &str,
        target: &Path,
        reporter: &dyn Reporter,
    ) -> Result<Option<Restored>, CacheError> {
        valid_key(key)?;
        let started = Instant::now();
        let Some(marker) = Marker::read(target).filter(|m| m.key == key) else {
            return Ok(None);
        };
        let entry = self.entry_dir(key);
        if !entry.join(MANIFEST).is_file() {
            return Ok(None);
        }
        // The same locks as a restore: the entry cannot be evicted while this task runs.
        let use_lock = self.lock_file(key, "use")?;
        use_lock
            .lock_shared()
            .map_err(|e| CacheError::io("locking", &entry, e))?;
        let entry_lock = self.lock_file(key, "lock")?;
        entry_lock
            .lock_shared()
            .map_err(|e| CacheError::io("locking", &entry, e))?;
        let mut manifest = match read_manifest(&entry) {
            Some(m) if m.format == FORMAT && m.key == key => m,
            _ => return Ok(None),
        };
        if manifest.sealed_at_ns != marker.sealed_at_ns {
            return Ok(None);
        }
        let mut seen = 0usize;
        if !unchanged(target, Path::new(""), &marker.items, &mut seen) || seen != marker.items.len()
        {
            reporter.line(&format!(
                "The environment in {} changed since it was restored; restoring it again",
                target.display()
            ));
            return Ok(None);
        }
        drop(entry_lock);
        manifest.last_used_ms = now_ms();
        // Best effort, as in a restore.
        let _ = write_manifest(&entry, &manifest);
        Ok(Some(Restored {
            manifest,
            in_use: InUse {
                file: use_lock,
                key: key.to_string(),
            },
            linked: 0,
            rewritten: 0,
            copied: 0,
            reused: true,
            elapsed: started.elapsed(),
        }))
    }
}

impl EnvCache {
    /// Records the folder an entry was just stored from (`Stored::Added`) as reusable: its
    /// files are the entry's own (hardlinked) and it sits at the path the entry was built
    /// for, so it is exactly what a restore there would make. Best effort, like the record
    /// of a restore.
    pub fn mark_reusable(&self, manifest: &crate::Manifest, venv_dir: &Path) {
        let mut items = HashMap::new();
        if record(venv_dir, Path::new(""), &mut items).is_none() {
            return;
        }
        let marker = Marker {
            key: manifest.key.clone(),
            sealed_at_ns: manifest.sealed_at_ns,
            items,
        };
        let _ = marker.write(venv_dir);
    }
}

/// Everything under `dir`, as a restore records it; `None` on any unreadable item.
fn record(dir: &Path, rel: &Path, items: &mut HashMap<String, Item>) -> Option<()> {
    for item in fs::read_dir(dir).ok()? {
        let item = item.ok()?;
        let r = rel.join(item.file_name());
        let path = item.path();
        let meta = fs::symlink_metadata(&path).ok()?;
        let ft = meta.file_type();
        let recorded = if ft.is_dir() {
            record(&path, &r, items)?;
            Item::Dir
        } else if ft.is_symlink() {
            Item::Link(fs::read_link(&path).ok()?.to_str()?.to_string())
        } else if ft.is_file() {
            Item::file(&meta)
        } else {
            // Not something a store keeps: such a folder is never reused.
            return None;
        };
        items.insert(r.to_str()?.to_string(), recorded);
    }
    Some(())
}

/// Whether the tree under `dir` holds exactly the recorded items (new bytecode aside);
/// counts the recorded items met in `seen`.
fn unchanged(dir: &Path, rel: &Path, items: &HashMap<String, Item>, seen: &mut usize) -> bool {
    let Ok(listing) = fs::read_dir(dir) else {
        return false;
    };
    let in_pycache = rel.file_name().is_some_and(|n| n == "__pycache__");
    for item in listing {
        let Ok(item) = item else {
            return false;
        };
        let name = item.file_name();
        if rel.as_os_str().is_empty() && name == MARKER {
            continue;
        }
        let (path, r) = (item.path(), rel.join(&name));
        let Ok(meta) = fs::symlink_metadata(&path) else {
            return false;
        };
        let ft = meta.file_type();
        let Some(recorded) = r.to_str().and_then(|k| items.get(k)) else {
            if is_new_bytecode(&r, ft.is_dir(), in_pycache)
                && (!ft.is_dir() || only_bytecode(&path))
            {
                continue;
            }
            return false;
        };
        *seen += 1;
        let same = match recorded {
            Item::Dir => ft.is_dir() && unchanged(&path, &r, items, seen),
            Item::Link(to) => {
                ft.is_symlink() && fs::read_link(&path).is_ok_and(|t| t.as_os_str() == to.as_str())
            }
            Item::File { .. } => ft.is_file() && Item::file(&meta) == *recorded,
        };
        if !same {
            return false;
        }
    }
    true
}

/// Whether a new `__pycache__` folder holds nothing but `.pyc` files.
fn only_bytecode(dir: &Path) -> bool {
    let Ok(listing) = fs::read_dir(dir) else {
        return false;
    };
    listing.into_iter().all(|item| {
        item.is_ok_and(|i| {
            i.file_type().is_ok_and(|t| t.is_file())
                && Path::new(&i.file_name())
                    .extension()
                    .is_some_and(|e| e == "pyc")
        })
    })
}

/// A `__pycache__` folder or a `.pyc` in one that the restore did not make.
fn is_new_bytecode(rel: &Path, is_dir: bool, in_pycache: bool) -> bool {
    let name = rel.file_name().map(PathBuf::from).unwrap_or_default();
    if is_dir {
        return name.as_os_str() == "__pycache__";
    }
    in_pycache && name.extension().is_some_and(|e| e == "pyc")
}
