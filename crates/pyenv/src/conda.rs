//! conda / mamba / micromamba: `create -p <venv> python=X.Y pip`, then the env's pip installs the
//! requirements (the pip backend) and freezes them, so the recorded list has the same pip format
//! as the other managers.
//!
//! UNTESTED here: the development machine has no conda binary; only the fallback when none is
//! found is covered by tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::EnvSpec;
use crate::command::run_streamed;
use crate::error::EnvError;
use crate::python::on_path;
use crate::report::Reporter;

/// The first of `conda`, `mamba`, `micromamba` on `PATH` (`CONDA_EXE`, set by an activated
/// conda, first).
pub(crate) fn find() -> Option<PathBuf> {
    if let Some(exe) = std::env::var_os("CONDA_EXE").map(PathBuf::from)
        && exe.is_file()
    {
        return Some(exe);
    }
    ["conda", "mamba", "micromamba"]
        .iter()
        .find_map(|name| on_path(name).into_iter().next())
}

/// `<conda> create -y -p <venv> python=<X.Y> pip -c <channel>...`. conda's own envs have no
/// `pyvenv.cfg`, so they are never reused, always recreated.
pub(crate) fn create(
    conda: &Path,
    python_version: &str,
    spec: &EnvSpec,
    reporter: &dyn Reporter,
) -> Result<(), EnvError> {
    let minor: Vec<&str> = python_version.split('.').take(2).collect();
    let mut cmd = Command::new(conda);
    for name in ["PYTHONPATH", "VIRTUAL_ENV"] {
        cmd.env_remove(name);
    }
    cmd.envs(spec.env.iter().map(|(k, v)| (k, v)));
    cmd.args(["create", "-y", "-p"])
        .arg(&spec.venv_dir)
        .arg(format!("python={}", minor.join(".")))
        .arg("pip");
    for channel in &spec.conda_channels {
        cmd.arg("-c").arg(channel);
    }
    run_streamed(cmd, "creating the conda environment", reporter)
}
