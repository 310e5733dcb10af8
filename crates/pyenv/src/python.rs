//! Finding the base interpreter (clearml-agent's search: `python3.X.Y`, `python3.X`, `python3`,
//! `python` on `PATH`, each checked by running it).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::command::run_captured;
use crate::error::EnvError;

/// A working interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonInfo {
    /// The real executable (`sys.executable`), not a pyenv shim: a shim picks its version by
    /// the current folder, which would make later runs unpredictable.
    pub path: PathBuf,
    /// Full version, e.g. "3.11.7".
    pub version: String,
    /// Whether `version` satisfies the request (always true without one).
    pub matches_request: bool,
    /// A warning for the console when the request could not be honoured.
    pub note: Option<String>,
}

/// The version a task's `script.binary` asks for: "python3.10" → "3.10", "python3" → "3",
/// "/usr/bin/python3.10" → "3.10"; "python", "bash" or anything else → `None`.
pub fn python_version_from_binary(binary: &str) -> Option<String> {
    let name = binary.trim().rsplit(['/', '\\']).next()?;
    let rest = name.strip_prefix("python")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let version = rest[..end].trim_end_matches('.');
    let valid = !version.is_empty() && version.split('.').all(|p| !p.is_empty());
    valid.then(|| version.to_string())
}

/// Finds the interpreter for `requested` (a version like "3.10", "3", or a binary name like
/// "python3.10"), trying `configured` (`agent.python_binary`) first, then `python3.X.Y`,
/// `python3.X`, `python3`, `python` on `PATH`. Every candidate is run; the first whose version
/// matches wins. With no match, the first working one is returned with a [`PythonInfo::note`].
/// A `configured` interpreter that does not run is an error when nothing was requested.
pub fn find_python(
    requested: Option<&str>,
    configured: Option<&Path>,
) -> Result<PythonInfo, EnvError> {
    find_python_remembered(requested, configured, None)
}

/// [`find_python`], with the probes' answers remembered in `probe_cache` (a file) across
/// runs; see `probe_cache.rs` for when a remembered answer is used.
pub fn find_python_remembered(
    requested: Option<&str>,
    configured: Option<&Path>,
    probe_cache: Option<&Path>,
) -> Result<PythonInfo, EnvError> {
    let probe = |exe: &Path| match probe_cache {
        Some(file) => crate::probe_cache::lookup(file, exe).or_else(|| {
            let found = probe(exe)?;
            crate::probe_cache::remember(file, exe, &found.0, &found.1);
            Some(found)
        }),
        None => probe(exe),
    };
    let requested = normalize_request(requested);
    let mut tried = Vec::new();

    if requested.is_none()
        && let Some(path) = configured
    {
        return match probe(path) {
            Some((real, version)) => Ok(PythonInfo {
                path: real,
                version,
                matches_request: true,
                note: None,
            }),
            None => Err(EnvError::PythonNotFound {
                requested: String::new(),
                tried: format!("{} (agent.python_binary)", path.display()),
            }),
        };
    }

    let mut candidates: Vec<PathBuf> = configured.map(Path::to_path_buf).into_iter().collect();
    for name in candidate_names(requested.as_deref()) {
        candidates.extend(on_path(&name));
    }

    let mut fallback: Option<(PathBuf, String)> = None;
    for candidate in candidates {
        tried.push(candidate.display().to_string());
        let Some((real, version)) = probe(&candidate) else {
            continue;
        };
        if requested
            .as_deref()
            .is_none_or(|want| version_matches(&version, want))
        {
            return Ok(PythonInfo {
                path: real,
                version,
                matches_request: true,
                note: None,
            });
        }
        if fallback.is_none() {
            fallback = Some((real, version));
        }
    }

    match fallback {
        Some((path, version)) => Ok(PythonInfo {
            note: Some(format!(
                "Python {} was requested but not found; using Python {version} at {}",
                requested.as_deref().unwrap_or("?"),
                path.display()
            )),
            path,
            version,
            matches_request: false,
        }),
        None => Err(EnvError::PythonNotFound {
            requested: requested
                .map(|v| format!(" (requested {v})"))
                .unwrap_or_default(),
            tried: if tried.is_empty() {
                "python3 and python on PATH: none found".to_string()
            } else {
                tried.join(", ")
            },
        }),
    }
}

/// "python3.10" or " 3.10 " → "3.10"; anything that is not a version → `None`.
fn normalize_request(requested: Option<&str>) -> Option<String> {
    let text = requested?.trim();
    if text.starts_with("python") || text.contains('/') {
        return python_version_from_binary(text);
    }
    let valid = !text.is_empty()
        && text
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    valid.then(|| text.to_string())
}

/// "3.10.4" → python3.10.4, python3.10, python3, python.
fn candidate_names(requested: Option<&str>) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(version) = requested {
        let parts: Vec<&str> = version.split('.').collect();
        for n in (1..=parts.len()).rev() {
            names.push(format!("python{}", parts[..n].join(".")));
        }
    }
    for name in ["python3", "python"] {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

/// "3.10.13" matches "3.10" and "3", not "3.1".
pub(crate) fn version_matches(version: &str, requested: &str) -> bool {
    version == requested
        || version
            .strip_prefix(requested)
            .is_some_and(|rest| rest.starts_with('.'))
}

/// Every executable called `name` on `PATH`, in order: a pyenv shim that refuses to run can
/// hide a working interpreter further down.
pub(crate) fn on_path(name: &str) -> Vec<PathBuf> {
    let Some(path) = std::env::var_os("PATH") else {
        return Vec::new();
    };
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(name))
        .filter(|p| is_executable(p))
        .collect()
}

pub(crate) fn is_executable(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    }
    #[cfg(not(unix))]
    {
        path.is_file()
    }
}

/// Runs the interpreter; returns its real path and full version, or `None` if it does not work.
/// The snippet is valid Python 2 as well, so an old `python` is recognised rather than failing.
fn probe(exe: &Path) -> Option<(PathBuf, String)> {
    let mut cmd = Command::new(exe);
    // `-S` (no `site`) and no `platform` import: the probe runs on every task start, and
    // the first word of `sys.version` is `platform.python_version()`.
    cmd.args([
        "-S",
        "-c",
        "import sys; sys.stdout.write(sys.executable + '\\n' + sys.version.split()[0] + '\\n')",
    ])
    .env_remove("PYTHONPATH")
    .env_remove("PYTHONHOME");
    let out = run_captured(cmd, "probing Python").ok()?;
    let mut lines = out.lines();
    let real = lines.next().map(str::trim).unwrap_or_default();
    let version = lines.next().map(str::trim).unwrap_or_default();
    if version.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let real = if real.is_empty() || !Path::new(real).is_file() {
        exe.to_path_buf()
    } else {
        PathBuf::from(real)
    };
    Some((real, version.to_string()))
}

/// The full version of an interpreter, `None` when it does not run.
pub(crate) fn probe_version(exe: &Path) -> Option<String> {
    probe(exe).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_matching() {
        assert_eq!(
            candidate_names(Some("3.10.4")),
            ["python3.10.4", "python3.10", "python3", "python"]
        );
        assert_eq!(candidate_names(Some("3")), ["python3", "python"]);
        assert_eq!(candidate_names(None), ["python3", "python"]);
        assert!(version_matches("3.10.13", "3.10"));
        assert!(version_matches("3.10.13", "3"));
        assert!(version_matches("3.10.13", "3.10.13"));
        assert!(!version_matches("3.10.13", "3.1"));
        assert!(!version_matches("3.11.7", "3.10"));
        assert_eq!(normalize_request(Some(" 3.10 ")).as_deref(), Some("3.10"));
        assert_eq!(normalize_request(Some("python3.9")).as_deref(), Some("3.9"));
        assert_eq!(normalize_request(Some("3.x")), None);
        assert_eq!(normalize_request(Some("")), None);
    }
}
