//! Poetry: finding or bootstrapping the binary, and `poetry install` into OUR venv.
//!
//! clearml-agent installs poetry into the agent's own interpreter and lets poetry create a venv
//! inside the repository (`virtualenvs.in-project`), then runs the task with `poetry run`; that
//! mixes the agent's and the task's packages (anchors §1b #15/#16). Here poetry lives in its own
//! tools venv, and installs into the venv we created, found through `VIRTUAL_ENV` (poetry uses an
//! activated venv as is), with `POETRY_VIRTUALENVS_CREATE=false` so it never makes another. The
//! task then runs with the venv's python, no `poetry run` needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::EnvSpec;
use crate::command::{run_captured, run_streamed};
use crate::error::EnvError;
use crate::python::on_path;
use crate::report::Reporter;
use crate::uv::{EnvChange, apply, lookup, uv_command};
use crate::venv;

const TOOL_VENV: &str = "poetry-venv";
/// Records which `poetry_version` the tools venv was installed for.
const SPEC_MARKER: &str = ".clearml-poetry-spec";

/// The poetry project in `spec.project_dir`: a `poetry.lock`, or a `pyproject.toml` with a
/// `[tool.poetry...]` table (a plain PEP 621 pyproject is left to uv/pip).
pub(crate) fn project(spec: &EnvSpec) -> Option<PathBuf> {
    let dir = spec.project_dir.as_ref()?;
    if dir.join("poetry.lock").is_file() {
        return Some(dir.clone());
    }
    let text = fs::read_to_string(dir.join("pyproject.toml")).ok()?;
    text.lines()
        .any(|l| l.trim_start().starts_with("[tool.poetry"))
        .then(|| dir.clone())
}

/// `poetry_version` as a requirement: "1.8.3" → `poetry==1.8.3`, ">=2,<3" → `poetry>=2,<3`,
/// nothing → `poetry`.
fn requirement(version: Option<&str>) -> String {
    match version.map(str::trim).filter(|v| !v.is_empty()) {
        None => "poetry".to_string(),
        Some(v) if v.starts_with(|c: char| c.is_ascii_digit()) => format!("poetry=={v}"),
        Some(v) if v.starts_with("poetry") => v.to_string(),
        Some(v) => format!("poetry{v}"),
    }
}

/// Finds poetry: the `poetry` on `PATH` when no version is pinned, else
/// `<tools_dir>/poetry-venv/bin/poetry` installed for the same version spec; else installs it
/// there (with uv when given, else `python -m venv` + pip) under an exclusive lock on
/// `<tools_dir>/poetry-bootstrap.lock`.
pub fn find_poetry(
    tools_dir: &Path,
    version: Option<&str>,
    python: &Path,
    uv: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<PathBuf, EnvError> {
    let version = version.map(str::trim).filter(|v| !v.is_empty());
    if version.is_none()
        && let Some(found) = on_path("poetry").into_iter().next()
    {
        return Ok(found);
    }
    let wanted = requirement(version);
    let venv_dir = tools_dir.join(TOOL_VENV);
    let poetry = venv::python_path(&venv_dir).with_file_name("poetry");
    let ready = |p: &Path| {
        fs::read_to_string(venv_dir.join(SPEC_MARKER)).is_ok_and(|s| s.trim() == wanted) && runs(p)
    };
    if ready(&poetry) {
        return Ok(poetry);
    }

    let _lock = crate::uv::lock_tool_install(tools_dir, "poetry", reporter)?;
    // Whoever held the lock may have just installed it.
    if ready(&poetry) {
        return Ok(poetry);
    }
    reporter.line(&format!(
        "Installing `{wanted}` into {} (once)",
        venv_dir.display()
    ));
    if venv_dir.exists() {
        fs::remove_dir_all(&venv_dir)
            .map_err(|source| EnvError::io("removing", &venv_dir, source))?;
    }
    let scratch = EnvSpec::new(&venv_dir, tools_dir);
    match uv {
        Some(uv) => {
            let mut create = uv_command(uv, &scratch);
            create
                .arg("venv")
                .arg("--python")
                .arg(python)
                .arg(&venv_dir);
            run_streamed(create, "creating the venv for poetry", reporter)?;
            let mut install = uv_command(uv, &scratch);
            install
                .args(["pip", "install", "--python"])
                .arg(venv::python_path(&venv_dir))
                .arg(&wanted);
            run_streamed(install, "installing poetry with uv", reporter)?;
        }
        None => {
            let mut create = Command::new(python);
            create.env_remove("PYTHONPATH").env_remove("VIRTUAL_ENV");
            create.arg("-m").arg("venv").arg(&venv_dir);
            run_streamed(create, "creating the venv for poetry", reporter)?;
            let mut install = Command::new(venv::python_path(&venv_dir));
            install.env_remove("PYTHONPATH").env_remove("VIRTUAL_ENV");
            install
                .args(["-m", "pip", "--disable-pip-version-check", "install"])
                .arg(&wanted);
            run_streamed(install, "installing poetry with pip", reporter)?;
        }
    }
    if !runs(&poetry) {
        return Err(EnvError::Poetry(format!(
            "`{wanted}` was installed, but {} does not run",
            poetry.display()
        )));
    }
    let marker = venv_dir.join(SPEC_MARKER);
    fs::write(&marker, &wanted).map_err(|source| EnvError::io("writing", &marker, source))?;
    reporter.line(&format!("Installed poetry at {}", poetry.display()));
    Ok(poetry)
    // `lock` is released when the file closes here.
}

fn runs(poetry: &Path) -> bool {
    if !poetry.is_file() {
        return false;
    }
    let mut cmd = Command::new(poetry);
    cmd.arg("--version");
    run_captured(cmd, "checking poetry").is_ok()
}

/// `poetry install -n [poetry_install_extra_args]` in `dir`, into `spec.venv_dir`. The root
/// package is installed too (clearml-agent's default); pass `--no-root` in the extra args for
/// projects that are not packages (or set `package-mode = false` in the project).
pub(crate) fn install(
    poetry: &Path,
    dir: &Path,
    spec: &EnvSpec,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let mut cmd = Command::new(poetry);
    let bin = venv::python_path(&spec.venv_dir)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| spec.venv_dir.clone());
    let path = match lookup(spec, "PATH") {
        Some(rest) if !rest.is_empty() => format!("{}:{rest}", bin.display()),
        _ => bin.display().to_string(),
    };
    let mut changes = vec![
        EnvChange::Remove("PYTHONPATH"),
        EnvChange::Remove("CONDA_PREFIX"),
        EnvChange::Set("VIRTUAL_ENV".into(), spec.venv_dir.display().to_string()),
        EnvChange::Set("PATH".into(), path),
        EnvChange::Set("POETRY_VIRTUALENVS_CREATE".into(), "false".into()),
        EnvChange::Set("POETRY_NO_INTERACTION".into(), "1".into()),
    ];
    if let Some(cache) = &spec.pip_cache_dir {
        // Poetry's own cache beside pip's, so it is managed with the other agent caches.
        changes.push(EnvChange::Set(
            "POETRY_CACHE_DIR".into(),
            cache.join("poetry").display().to_string(),
        ));
    }
    changes.extend(
        spec.env
            .iter()
            .map(|(k, v)| EnvChange::Set(k.clone(), v.clone())),
    );
    apply(&mut cmd, changes);
    cmd.current_dir(dir).args(["install", "-n"]);
    cmd.args(&spec.poetry_install_extra_args);
    if !spec.extra_index_urls.is_empty() {
        reporter.line(
            "Note: extra_index_url is not passed to poetry; poetry reads its sources from \
             pyproject.toml",
        );
    }
    run_streamed(cmd, "installing the poetry project", reporter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_specs() {
        assert_eq!(requirement(None), "poetry");
        assert_eq!(requirement(Some(" ")), "poetry");
        assert_eq!(requirement(Some("1.8.3")), "poetry==1.8.3");
        assert_eq!(requirement(Some(">=2,<3")), "poetry>=2,<3");
        assert_eq!(requirement(Some("poetry<2")), "poetry<2");
    }

    #[test]
    fn project_detection() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = EnvSpec::new("/v", "/t");
        assert_eq!(project(&spec), None);
        spec.project_dir = Some(dir.path().to_path_buf());
        assert_eq!(project(&spec), None);
        fs::write(dir.path().join("pyproject.toml"), "[project]\nname='x'\n").unwrap();
        assert_eq!(project(&spec), None);
        fs::write(
            dir.path().join("pyproject.toml"),
            "[tool.poetry]\nname='x'\n",
        )
        .unwrap();
        assert_eq!(project(&spec).as_deref(), Some(dir.path()));
    }
}
