//! uv: finding or bootstrapping the binary, and the venv / install / freeze steps with it.

use std::fs::{self, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::EnvSpec;
use crate::command::{run_captured, run_streamed};
use crate::error::EnvError;
use crate::python::{is_executable, on_path};
use crate::report::Reporter;
use crate::requirements::Prepared;
use crate::steps::{self, Index, Target};
use crate::venv;

/// The folder, under `tools_dir`, of the venv uv is bootstrapped into.
const TOOL_VENV: &str = "uv-venv";

/// Finds uv: `CLEARML_BOOTSTRAP_UV_EXEC`, then `uv` on `PATH`, then `<tools_dir>/uv-venv/bin/uv`;
/// else installs it there with `<python> -m venv` + `pip install uv` (about 10 s, once), under an
/// exclusive lock on `<tools_dir>/uv-bootstrap.lock` so concurrent agents don't race.
pub fn find_uv(
    tools_dir: &Path,
    python: &Path,
    reporter: &dyn Reporter,
) -> Result<PathBuf, EnvError> {
    if let Some(value) = std::env::var_os("CLEARML_BOOTSTRAP_UV_EXEC").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(&value);
        let found = if path.components().count() > 1 {
            is_executable(&path).then_some(path)
        } else {
            on_path(&path.to_string_lossy()).into_iter().next()
        };
        return found.ok_or_else(|| {
            EnvError::Uv(format!(
                "CLEARML_BOOTSTRAP_UV_EXEC={} is not an executable",
                value.to_string_lossy()
            ))
        });
    }
    if let Some(uv) = on_path(uv_name()).into_iter().next() {
        return Ok(uv);
    }
    let tool = tool_uv(tools_dir);
    if runs(&tool) {
        return Ok(tool);
    }
    bootstrap_uv(tools_dir, python, reporter)
}

fn uv_name() -> &'static str {
    if cfg!(windows) { "uv.exe" } else { "uv" }
}

fn tool_uv(tools_dir: &Path) -> PathBuf {
    let venv_python = venv::python_path(&tools_dir.join(TOOL_VENV));
    venv_python.with_file_name(uv_name())
}

/// An interrupted bootstrap can leave a half-written binary, so the tools copy is run once.
fn runs(uv: &Path) -> bool {
    if !uv.is_file() {
        return false;
    }
    let mut cmd = Command::new(uv);
    cmd.arg("--version");
    run_captured(cmd, "checking uv").is_ok()
}

/// Returns `<tools_dir>/uv-venv/bin/uv`, installing it first with `<python> -m venv` and
/// `pip install uv` when it is missing or broken. Holds an exclusive lock on
/// `<tools_dir>/uv-bootstrap.lock` meanwhile, so concurrent agents install it once.
pub fn bootstrap_uv(
    tools_dir: &Path,
    python: &Path,
    reporter: &dyn Reporter,
) -> Result<PathBuf, EnvError> {
    let _lock = lock_tool_install(tools_dir, "uv", reporter)?;

    // Whoever held the lock may have just installed it.
    let uv = tool_uv(tools_dir);
    if runs(&uv) {
        return Ok(uv);
    }
    let venv_dir = tools_dir.join(TOOL_VENV);
    reporter.line(&format!(
        "uv was not found; installing it with pip into {} (once, about 10 s)",
        venv_dir.display()
    ));
    if venv_dir.exists() {
        fs::remove_dir_all(&venv_dir)
            .map_err(|source| EnvError::io("removing", &venv_dir, source))?;
    }
    let mut create = Command::new(python);
    create.arg("-m").arg("venv").arg(&venv_dir);
    run_streamed(
        clean_python_env(create),
        "creating the venv for uv",
        reporter,
    )?;
    let mut install = Command::new(venv::python_path(&venv_dir));
    install.args(["-m", "pip", "--disable-pip-version-check", "install", "uv"]);
    run_streamed(
        clean_python_env(install),
        "installing uv with pip",
        reporter,
    )?;
    if !runs(&uv) {
        return Err(EnvError::Uv(format!(
            "pip installed uv, but {} does not run",
            uv.display()
        )));
    }
    reporter.line(&format!("Installed uv at {}", uv.display()));
    Ok(uv)
    // `lock` is released when the file closes here.
}

fn clean_python_env(mut cmd: Command) -> Command {
    for name in ["PYTHONPATH", "VIRTUAL_ENV", "CONDA_PREFIX"] {
        cmd.env_remove(name);
    }
    cmd
}

/// A change to an installer's environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum EnvChange {
    Set(String, String),
    Remove(&'static str),
}

/// pip settings uv does not read, with the uv variables that replace them; `None` alternates are
/// uv's other spellings that also mean "already set".
const PIP_TO_UV: &[(&str, &str, Option<&str>)] = &[
    ("PIP_INDEX_URL", "UV_INDEX_URL", Some("UV_DEFAULT_INDEX")),
    (
        "PIP_EXTRA_INDEX_URL",
        "UV_EXTRA_INDEX_URL",
        Some("UV_INDEX"),
    ),
    ("PIP_TRUSTED_HOST", "UV_INSECURE_HOST", None),
    ("PIP_CERT", "SSL_CERT_FILE", None),
];

/// The environment changes for uv commands. `lookup` reads a variable as the child would see it
/// without these changes (spec.env over the process environment). Proxy variables are left
/// alone on purpose: uv reads `HTTP(S)_PROXY` itself.
pub(crate) fn uv_env(spec: &EnvSpec, lookup: &dyn Fn(&str) -> Option<String>) -> Vec<EnvChange> {
    // Activated environments would make uv pick them instead of our venv.
    let mut changes = vec![
        EnvChange::Remove("VIRTUAL_ENV"),
        EnvChange::Remove("CONDA_PREFIX"),
        EnvChange::Remove("PYTHONPATH"),
        EnvChange::Set("UV_PYTHON_DOWNLOADS".into(), "never".into()),
    ];
    if let Some(dir) = &spec.uv_cache_dir {
        changes.push(EnvChange::Set(
            "UV_CACHE_DIR".into(),
            dir.display().to_string(),
        ));
    }
    let is_set = |name: &str| lookup(name).is_some_and(|v| !v.is_empty());
    for (pip, uv, alternate) in PIP_TO_UV {
        if is_set(uv) || alternate.is_some_and(is_set) {
            continue;
        }
        if let Some(value) = lookup(pip).filter(|v| !v.is_empty()) {
            changes.push(EnvChange::Set(uv.to_string(), value));
        }
    }
    changes.extend(
        spec.env
            .iter()
            .map(|(k, v)| EnvChange::Set(k.clone(), v.clone())),
    );
    changes
}

/// A variable as the child would see it: `spec.env` first, then this process's environment.
pub(crate) fn lookup(spec: &EnvSpec, name: &str) -> Option<String> {
    spec.env
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(name).ok())
}

pub(crate) fn apply(cmd: &mut Command, changes: Vec<EnvChange>) {
    for change in changes {
        match change {
            EnvChange::Set(k, v) => cmd.env(k, v),
            EnvChange::Remove(k) => cmd.env_remove(k),
        };
    }
}

pub(crate) fn uv_command(uv: &Path, spec: &EnvSpec) -> Command {
    let mut cmd = Command::new(uv);
    apply(&mut cmd, uv_env(spec, &|name| lookup(spec, name)));
    if let Some(dir) = spec.base_dir.as_deref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    cmd
}

/// `uv venv --seed`: pip comes with the venv because tasks run `pip install` at run time.
pub(crate) fn create_venv(
    uv: &Path,
    python: &Path,
    spec: &EnvSpec,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let mut cmd = uv_command(uv, spec);
    cmd.args(["venv", "--seed"]);
    // uv refuses a non-empty folder; what is left there is not ours to delete (the venv's own
    // entries were removed already).
    if venv::is_non_empty(&spec.venv_dir) {
        cmd.arg("--allow-existing");
    }
    cmd.arg("--python").arg(python);
    if spec.system_site_packages {
        cmd.arg("--system-site-packages");
    }
    cmd.arg(&spec.venv_dir);
    run_streamed(cmd, "creating the virtual environment with uv", reporter)
}

pub(crate) fn install(
    uv: &Path,
    venv_python: &Path,
    spec: &EnvSpec,
    prepared: &Prepared,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    steps::run_all(prepared, "uv", reporter, &|target, index| {
        let mut cmd = uv_command(uv, spec);
        cmd.args(["pip", "install", "--python"]).arg(venv_python);
        match target {
            Target::File(path) => {
                cmd.arg("-r").arg(path);
            }
            Target::Project(dir) => {
                cmd.arg(dir);
            }
            Target::Lines(lines) => {
                cmd.args(lines);
            }
        }
        match index {
            Index::Default => {
                for url in &spec.extra_index_urls {
                    cmd.arg("--extra-index-url").arg(url);
                }
            }
            // `--index-url` alone: with the default first-index strategy uv would otherwise
            // still take a package from whichever index lists it first; here only the PyTorch
            // index is asked, so the CUDA (or CPU) build is what gets installed.
            Index::Only { url, pre } => {
                // uv asks extra indexes before the main one, so an inherited extra index would
                // still win; this step is the PyTorch index's alone.
                cmd.env_remove("UV_EXTRA_INDEX_URL").env_remove("UV_INDEX");
                cmd.arg("--index-url").arg(url);
                if pre {
                    cmd.args(["--prerelease", "allow"]);
                }
            }
        }
        if spec.force_upgrade {
            cmd.arg("--upgrade");
        }
        cmd
    })
}

/// The uv project in `spec.project_dir`: one with a `uv.lock`, or a `pyproject.toml` with a
/// `[tool.uv...]` table. A plain `pyproject.toml` is not enough: uv is our default manager, and
/// syncing every repository that has one would ignore the task's requirements.
pub(crate) fn sync_project(spec: &EnvSpec) -> Option<(PathBuf, bool)> {
    let dir = spec.project_dir.as_ref()?;
    if dir.join("uv.lock").is_file() {
        return Some((dir.clone(), true));
    }
    let text = fs::read_to_string(dir.join("pyproject.toml")).ok()?;
    text.lines()
        .any(|l| l.trim_start().starts_with("[tool.uv"))
        .then(|| (dir.clone(), false))
}

/// `uv sync` into our venv: `UV_PROJECT_ENVIRONMENT` points uv at `spec.venv_dir` instead of
/// `<project>/.venv`, so the task runs with the venv's python directly (no `uv run`). A failing
/// `--locked` sync (a stale lock) is retried without it, as clearml-agent does.
pub(crate) fn sync(
    uv: &Path,
    python: &Path,
    dir: &Path,
    lock: bool,
    spec: &EnvSpec,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let command = |locked: bool| {
        let mut cmd = uv_command(uv, spec);
        cmd.current_dir(dir)
            .env("UV_PROJECT_ENVIRONMENT", &spec.venv_dir)
            .arg("sync");
        if locked {
            cmd.arg("--locked");
        }
        cmd.arg("--project").arg(dir).arg("--python").arg(python);
        cmd.args(&spec.uv_sync_extra_args);
        for url in &spec.extra_index_urls {
            cmd.arg("--extra-index-url").arg(url);
        }
        cmd
    };
    let locked = lock && spec.uv_sync_locked_if_lock_file;
    let first = run_streamed(command(locked), "syncing the uv project", reporter);
    match first {
        Err(err) if locked => {
            reporter.line(&format!(
                "Warning: `uv sync --locked` failed ({}); retrying without --locked",
                err.to_string().lines().next().unwrap_or_default()
            ));
            run_streamed(command(false), "syncing the uv project", reporter)
        }
        other => other,
    }
}

pub(crate) fn freeze(uv: &Path, venv_python: &Path, spec: &EnvSpec) -> Result<String, EnvError> {
    let mut cmd = uv_command(uv, spec);
    cmd.args(["pip", "freeze", "--python"]).arg(venv_python);
    run_captured(cmd, "listing installed packages with uv")
}

/// Takes the exclusive lock `<tools_dir>/<tool>-bootstrap.lock` (creating the folder), saying
/// so when another process holds it, so concurrent agents install a tool once. The lock lasts
/// as long as the returned file.
pub(crate) fn lock_tool_install(
    tools_dir: &Path,
    tool: &str,
    reporter: &dyn Reporter,
) -> Result<fs::File, EnvError> {
    fs::create_dir_all(tools_dir).map_err(|source| EnvError::io("creating", tools_dir, source))?;
    let lock_path = tools_dir.join(format!("{tool}-bootstrap.lock"));
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| EnvError::io("opening", &lock_path, source))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            reporter.line(&format!(
                "Waiting for another process installing {tool} into {}",
                tools_dir.display()
            ));
            lock.lock()
                .map_err(|source| EnvError::io("locking", &lock_path, source))?;
        }
        Err(TryLockError::Error(source)) => {
            return Err(EnvError::io("locking", &lock_path, source));
        }
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_settings_become_uv_settings() {
        let mut spec = EnvSpec::new("/v", "/t");
        spec.uv_cache_dir = Some("/cache".into());
        spec.env = vec![("FOO".into(), "1".into())];
        let outer = |name: &str| match name {
            "PIP_INDEX_URL" => Some("https://mirror/simple".to_string()),
            "PIP_EXTRA_INDEX_URL" => Some("https://a/simple https://b/simple".to_string()),
            "UV_INSECURE_HOST" => Some("already".to_string()),
            "PIP_TRUSTED_HOST" => Some("mirror".to_string()),
            "PIP_CERT" => Some(String::new()),
            _ => None,
        };
        let changes = uv_env(&spec, &outer);
        let set = |k: &str, v: &str| EnvChange::Set(k.into(), v.into());
        assert_eq!(
            changes,
            [
                EnvChange::Remove("VIRTUAL_ENV"),
                EnvChange::Remove("CONDA_PREFIX"),
                EnvChange::Remove("PYTHONPATH"),
                set("UV_PYTHON_DOWNLOADS", "never"),
                set("UV_CACHE_DIR", "/cache"),
                set("UV_INDEX_URL", "https://mirror/simple"),
                set("UV_EXTRA_INDEX_URL", "https://a/simple https://b/simple"),
                set("FOO", "1"),
            ]
        );
        let with_default = |name: &str| match name {
            "PIP_INDEX_URL" => Some("https://mirror/simple".to_string()),
            "UV_DEFAULT_INDEX" => Some("https://other/simple".to_string()),
            _ => None,
        };
        assert!(
            !uv_env(&spec, &with_default)
                .iter()
                .any(|c| matches!(c, EnvChange::Set(k, _) if k == "UV_INDEX_URL"))
        );
    }
}
