//! Inspecting, clearing and locating a venv folder.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::EnvError;
use crate::python::probe_version;

/// What an existing venv offers, for the reuse decision.
#[derive(Debug)]
pub(crate) struct ExistingVenv {
    pub version: String,
    pub system_site_packages: bool,
    pub has_pip: bool,
}

/// The venv's interpreter.
pub(crate) fn python_path(venv_dir: &Path) -> PathBuf {
    if cfg!(windows) {
        venv_dir.join("Scripts").join("python.exe")
    } else {
        venv_dir.join("bin").join("python")
    }
}

/// The venv at `dir`, if it is one whose interpreter still runs (its base interpreter may have
/// been removed or upgraded since).
pub(crate) fn inspect(dir: &Path) -> Option<ExistingVenv> {
    let cfg = fs::read_to_string(dir.join("pyvenv.cfg")).ok()?;
    let python = python_path(dir);
    if !python.is_file() {
        return None;
    }
    let version = probe_version(&python)?;
    Some(ExistingVenv {
        version,
        system_site_packages: cfg_flag(&cfg, "include-system-site-packages"),
        has_pip: has_pip(dir),
    })
}

fn cfg_flag(cfg: &str, key: &str) -> bool {
    cfg.lines().any(|line| {
        line.split_once('=').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case(key) && v.trim().eq_ignore_ascii_case("true")
        })
    })
}

fn has_pip(dir: &Path) -> bool {
    let pip_in = |site: PathBuf| site.join("pip").join("__init__.py").is_file();
    if pip_in(dir.join("Lib").join("site-packages")) {
        return true;
    }
    let Ok(entries) = fs::read_dir(dir.join("lib")) else {
        return false;
    };
    entries
        .flatten()
        .any(|e| pip_in(e.path().join("site-packages")))
}

/// What `venv`, virtualenv and `uv venv` create at the top of a venv. Only these are removed
/// when recreating, so a `task_repository/` or `code/` the caller put there survives.
const VENV_ENTRIES: &[&str] = &[
    "bin",
    "lib",
    "lib64",
    "include",
    "share",
    "Scripts",
    "Lib",
    "Include",
    "pyvenv.cfg",
    ".gitignore",
    "CACHEDIR.TAG",
    ".lock",
];

/// Removes the venv's own entries from `dir` (a missing `dir` is fine).
pub(crate) fn clear(dir: &Path) -> Result<(), EnvError> {
    for name in VENV_ENTRIES {
        let path = dir.join(name);
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        let result = if meta.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.map_err(|source| EnvError::io("removing", &path, source))?;
    }
    Ok(())
}

/// Whether `dir` has anything in it (uv refuses a non-empty target without `--allow-existing`).
pub(crate) fn is_non_empty(dir: &Path) -> bool {
    fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_site_packages_flag() {
        assert!(cfg_flag(
            "home = /usr\ninclude-system-site-packages = true\n",
            "include-system-site-packages"
        ));
        assert!(!cfg_flag(
            "include-system-site-packages = false",
            "include-system-site-packages"
        ));
        assert!(!cfg_flag("garbage", "include-system-site-packages"));
    }

    #[test]
    fn clear_keeps_foreign_entries() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("task_repository/x")).unwrap();
        fs::write(dir.path().join("pyvenv.cfg"), "x").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("lib", dir.path().join("lib64")).unwrap();
        clear(dir.path()).unwrap();
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["task_repository"]);
        clear(&dir.path().join("missing")).unwrap();
    }
}
