//! venv + pip: the classic clearml-agent path (`agent.package_manager.type: pip`).

use std::path::Path;
use std::process::Command;

use crate::EnvSpec;
use crate::command::{run_captured, run_streamed};
use crate::error::EnvError;
use crate::report::Reporter;
use crate::requirements::Prepared;
use crate::steps::{self, Index, Target};
use crate::uv::{EnvChange, apply};

/// pip's environment: `PYTHONPATH` removed (the agent's own path must not leak into the
/// install), the download cache set, then the caller's variables.
fn pip_command(program: &Path, spec: &EnvSpec) -> Command {
    let mut cmd = Command::new(program);
    let mut changes = vec![
        EnvChange::Remove("PYTHONPATH"),
        EnvChange::Remove("VIRTUAL_ENV"),
    ];
    if let Some(dir) = &spec.pip_cache_dir {
        changes.push(EnvChange::Set(
            "PIP_CACHE_DIR".into(),
            dir.display().to_string(),
        ));
    }
    changes.extend(
        spec.env
            .iter()
            .map(|(k, v)| EnvChange::Set(k.clone(), v.clone())),
    );
    apply(&mut cmd, changes);
    if let Some(dir) = spec.base_dir.as_deref().filter(|d| d.is_dir()) {
        cmd.current_dir(dir);
    }
    cmd
}

/// `<python> -m venv [--system-site-packages] <venv>` (the stdlib module rather than
/// virtualenv, which may not be installed).
pub(crate) fn create_venv(
    python: &Path,
    spec: &EnvSpec,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let mut cmd = pip_command(python, spec);
    cmd.args(["-m", "venv"]);
    if spec.system_site_packages {
        cmd.arg("--system-site-packages");
    }
    cmd.arg(&spec.venv_dir);
    run_streamed(cmd, "creating the virtual environment", reporter)
}

/// The pip requirements for the venv's pip: the task's own `pip` lines win over `pip_version`
/// (as in clearml-agent), and bare constraints like `<24.3` get the `pip` name.
fn pip_specs(spec: &EnvSpec, prepared: &Prepared) -> Vec<String> {
    if !prepared.pip_pins.is_empty() {
        return prepared.pip_pins.clone();
    }
    spec.pip_version
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .map(|v| {
            if v.starts_with(|c: char| c.is_ascii_alphabetic()) {
                v.to_string()
            } else {
                format!("pip{v}")
            }
        })
        .collect()
}

fn pip_install(venv_python: &Path, spec: &EnvSpec) -> Command {
    let mut cmd = pip_command(venv_python, spec);
    cmd.args(["-m", "pip", "--disable-pip-version-check", "install"]);
    cmd
}

pub(crate) fn install(
    venv_python: &Path,
    spec: &EnvSpec,
    prepared: &Prepared,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let pins = pip_specs(spec, prepared);
    if !pins.is_empty() {
        let mut cmd = pip_install(venv_python, spec);
        cmd.args(&pins).arg("--upgrade");
        cmd.args(&spec.extra_pip_install_flags);
        run_streamed(cmd, "installing the requested pip version", reporter)?;
    }
    steps::run_all(prepared, "pip", reporter, &|target, index| {
        let mut cmd = pip_install(venv_python, spec);
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
        if spec.force_upgrade {
            cmd.arg("--upgrade");
        }
        match index {
            Index::Default => {
                for url in &spec.extra_index_urls {
                    cmd.arg("--extra-index-url").arg(url);
                }
            }
            // pip merges all indexes and takes the highest version, which for an unpinned torch
            // can be PyPI's build for another CUDA; the PyTorch index alone cannot.
            Index::Only { url, pre } => {
                cmd.env_remove("PIP_EXTRA_INDEX_URL");
                cmd.arg("--index-url").arg(url);
                if pre {
                    cmd.arg("--pre");
                }
            }
        }
        cmd.args(&spec.extra_pip_install_flags);
        cmd
    })
}

/// `pip freeze --all`; the tooling is filtered afterwards the same way as uv's freeze.
pub(crate) fn freeze(venv_python: &Path, spec: &EnvSpec) -> Result<String, EnvError> {
    let mut cmd = pip_command(venv_python, spec);
    cmd.args([
        "-m",
        "pip",
        "--disable-pip-version-check",
        "freeze",
        "--all",
    ]);
    run_captured(cmd, "listing installed packages with pip")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pip_version_specs() {
        let mut spec = EnvSpec::new("/v", "/t");
        spec.pip_version = vec![
            "<20.2 ; python_version < '3.10'".into(),
            " ".into(),
            "pip==24.0".into(),
        ];
        let mut prepared = Prepared::default();
        assert_eq!(
            pip_specs(&spec, &prepared),
            ["pip<20.2 ; python_version < '3.10'", "pip==24.0"]
        );
        prepared.pip_pins = vec!["pip==23.0".into()];
        assert_eq!(pip_specs(&spec, &prepared), ["pip==23.0"]);
    }
}
