//! Keeping a task's paths inside its code folder.
//!
//! `script.working_dir` and `script.entry_point` are task fields, that is outside input, and the
//! repository they point into is outside input too: a symlink committed to it can lead anywhere.
//! A textual check (no `..`, not absolute) is therefore not enough. Each path is checked after
//! resolving symlinks: the longest existing prefix is canonicalised and must lie inside the
//! canonical code root, and a folder is checked again after it was created (so a race that swaps
//! in a symlink in between is caught too).

use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ContainError {
    #[error("the path {0:?} in the task must stay inside the repository")]
    Textual(String),
    #[error("the path {given:?} in the task leads outside the repository (to {resolved})")]
    Escapes { given: String, resolved: PathBuf },
    #[error("cannot resolve {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ContainError {
    let path = path.to_path_buf();
    move |source| ContainError::Io { path, source }
}

/// `root/rel` without `..` or an absolute path; lexical only.
fn textual_join(root: &Path, rel: &str) -> Result<PathBuf, ContainError> {
    let rel = rel.trim();
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(ContainError::Textual(rel.to_string()));
    }
    Ok(root.join(p))
}

/// Removes `.` and folds `..` lexically (for the part of a path that does not exist yet).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Where `path` really leads: its longest existing prefix with symlinks resolved, followed by
/// the rest (normalised). A dangling symlink counts as existing and is followed as far as it goes.
fn resolve(path: &Path) -> Result<PathBuf, ContainError> {
    let path = normalize_keep_parents(path);
    let mut existing = path.as_path();
    let mut rest: Vec<&std::ffi::OsStr> = Vec::new();
    loop {
        if std::fs::symlink_metadata(existing).is_ok() {
            match std::fs::canonicalize(existing) {
                Ok(real) => {
                    let mut out = real;
                    for part in rest.iter().rev() {
                        out.push(part);
                    }
                    return Ok(normalize(&out));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // A dangling symlink: where it points to is where a write would go.
                    let target = std::fs::read_link(existing).map_err(io(existing))?;
                    let base = existing.parent().unwrap_or(Path::new("/"));
                    let mut out = resolve(&base.join(target))?;
                    for part in rest.iter().rev() {
                        out.push(part);
                    }
                    return Ok(normalize(&out));
                }
                Err(e) => return Err(io(existing)(e)),
            }
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name);
                existing = parent;
            }
            _ => return Ok(normalize(&path)),
        }
    }
}

/// Keeps `..` (which must be resolved against the real folders, not lexically) but drops `.`.
fn normalize_keep_parents(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

fn check_inside(root: &Path, given: &str, path: &Path) -> Result<PathBuf, ContainError> {
    let real_root = std::fs::canonicalize(root).map_err(io(root))?;
    let resolved = resolve(path)?;
    if resolved.starts_with(&real_root) {
        Ok(resolved)
    } else {
        Err(ContainError::Escapes {
            given: given.to_string(),
            resolved,
        })
    }
}

/// The task's working folder `root/rel`, created if missing, refused when it is (or would be
/// created) outside `root` once symlinks are resolved. Returns the path as joined (not
/// canonicalised), so what the task sees stays readable.
pub fn working_dir(root: &Path, rel: &str) -> Result<PathBuf, ContainError> {
    let dir = textual_join(root, rel)?;
    check_inside(root, rel, &dir)?;
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    check_inside(root, rel, &dir)?;
    Ok(dir)
}

/// A file the agent writes for the task (the literal script), refused when it would land
/// outside `root`.
pub fn file_to_write(root: &Path, dir: &Path, rel: &str) -> Result<PathBuf, ContainError> {
    let path = textual_join(dir, rel)?;
    check_inside(root, rel, &path)?;
    Ok(path)
}

/// The script an entry point runs: its first word, relative to `dir`, must resolve inside
/// `root`. A module (`-m`) or inline code (`-c`) names no file and is not checked. With
/// `must_be_file` false (a shell task), a first word that is no file under `dir` is a command
/// and is not checked either.
pub fn entry_point(
    root: &Path,
    dir: &Path,
    entry: &str,
    must_be_file: bool,
) -> Result<(), ContainError> {
    let entry = entry.trim();
    if entry.starts_with("-m ") || entry.starts_with("-c ") || entry.starts_with('-') {
        return Ok(());
    }
    let first = shell_words::split(entry)
        .ok()
        .and_then(|w| w.into_iter().next())
        .unwrap_or_else(|| entry.to_string());
    if first.is_empty() {
        return Ok(());
    }
    let path = dir.join(&first);
    if !must_be_file && (Path::new(&first).is_absolute() || !path.exists()) {
        return Ok(());
    }
    check_inside(root, &first, &path).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn textual_escapes_are_refused() {
        let d = tempfile::tempdir().unwrap();
        assert!(working_dir(d.path(), "../x").is_err());
        assert!(working_dir(d.path(), "/etc").is_err());
        assert!(working_dir(d.path(), "a/b").is_ok());
        assert!(d.path().join("a/b").is_dir());
        assert!(working_dir(d.path(), ".").is_ok());
    }

    #[test]
    fn a_symlinked_working_dir_is_refused_and_nothing_is_created_outside() {
        let outside = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        symlink(outside.path(), repo.path().join("link")).unwrap();
        let e = working_dir(repo.path(), "link").unwrap_err();
        assert!(e.to_string().contains("outside the repository"), "{e}");
        let e = working_dir(repo.path(), "link/sub").unwrap_err();
        assert!(e.to_string().contains("outside the repository"), "{e}");
        assert!(!outside.path().join("sub").exists());
        // A link that stays inside is fine.
        std::fs::create_dir(repo.path().join("real")).unwrap();
        symlink(repo.path().join("real"), repo.path().join("inner")).unwrap();
        assert!(working_dir(repo.path(), "inner/x").is_ok());
    }

    #[test]
    fn a_dangling_link_is_followed() {
        let outside = tempfile::tempdir().unwrap();
        let repo = tempfile::tempdir().unwrap();
        symlink(outside.path().join("nope"), repo.path().join("script.py")).unwrap();
        let e = file_to_write(repo.path(), repo.path(), "script.py").unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        assert!(file_to_write(repo.path(), repo.path(), "new.py").is_ok());
    }

    #[test]
    fn entry_points_are_resolved_unless_modules() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("evil.py"), "print(1)").unwrap();
        let repo = tempfile::tempdir().unwrap();
        let root = repo.path();
        std::fs::create_dir(root.join("src")).unwrap();
        std::fs::write(root.join("tools.py"), "").unwrap();
        symlink(outside.path().join("evil.py"), root.join("src/run.py")).unwrap();
        let src = root.join("src");
        assert!(entry_point(root, &src, "run.py --x 1", true).is_err());
        assert!(entry_point(root, &src, "../tools.py", true).is_ok());
        assert!(entry_point(root, &src, "../../etc/passwd", true).is_err());
        assert!(entry_point(root, &src, "/etc/passwd", true).is_err());
        assert!(entry_point(root, &src, "-m run", true).is_ok());
        assert!(entry_point(root, &src, "-c 'print(1)'", true).is_ok());
        // Shell tasks: a command on PATH is not a file of the repository.
        assert!(entry_point(root, &src, "echo hi", false).is_ok());
        assert!(entry_point(root, &src, "/bin/echo hi", false).is_ok());
        assert!(entry_point(root, &src, "run.py", false).is_err());
    }
}
