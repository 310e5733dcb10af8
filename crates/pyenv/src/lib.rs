//! Builds a task's Python environment the way clearml-agent 3.0.3 does, but fast: by default
//! with [uv](https://github.com/astral-sh/uv); pip, poetry and conda are the other managers.
//!
//! [`build`] runs, in order:
//!
//! 1. [`find_python`]: the interpreter for the task's requested version (`script.binary`), the
//!    configured `agent.python_binary`, or the first working `python3`/`python` on `PATH`.
//! 2. Requirement hygiene ([`Requirements`]): `clearml-agent` lines and `file://` references to
//!    missing paths are dropped, `-r`/`-c` and `./relative` paths are made absolute, and each
//!    source is written to a temp file so the tools never read the task text directly.
//! 3. The venv at [`EnvSpec::venv_dir`]: reused when its interpreter has the same full version
//!    and site-packages setting (clearml-agent 3.x reuses the venv folder too), else recreated.
//!    Only the venv's own entries are removed, so `task_repository/` or `code/` survive.
//! 4. The install, then the freeze that is written back to the task's "installed packages".
//!
//! Design choices:
//!
//! * uv is found with [`find_uv`] and bootstrapped with pip into a tools folder when missing
//!   (a one-time ~10 s cost). If uv cannot be had at all, the build falls back to pip and says so;
//!   [`BuiltEnv::manager`] tells which one ran.
//! * `uv venv --seed`: the venv gets pip, because tasks call `pip install` / `python -m pip` at
//!   run time and the clearml SDK inspects the env with pip. It costs ~0.4 s per creation only.
//! * `UV_PYTHON_DOWNLOADS=never`: the machine's interpreters are used, never a download.
//! * The freeze leaves out pip, setuptools, wheel and distribute unless the requirements named
//!   them: they are the installer's tooling, and a recorded `pip==X` would, on the next run,
//!   count as the task pinning pip and override `agent.package_manager.pip_version`.
//! * Everything is synchronous on `std::process`; every child's stdout and stderr go into one
//!   pipe and each line reaches the [`Reporter`] as it arrives, with `user:password@` in URLs
//!   masked. Errors carry the command (masked), the exit status and the output's last lines.
//!
//! Managers ([`Manager`]; each falls back, with a report line, when it cannot run here):
//!
//! * uv: `uv venv` + `uv pip install`. When [`EnvSpec::project_dir`] has a `uv.lock` (or a
//!   `pyproject.toml` with `[tool.uv]`), `uv sync [--locked]` instead, with
//!   `UV_PROJECT_ENVIRONMENT` set to our venv so the task runs with the venv's python (no
//!   `uv run`); a failing `--locked` sync is retried unlocked.
//! * pip: `python -m venv` + pip, `pip_version` installed first, `extra_pip_install_flags`
//!   appended to every install.
//! * poetry: with a poetry project, `poetry install -n` into our venv (`VIRTUAL_ENV`, no
//!   poetry-made venvs); poetry from `PATH` or bootstrapped into `<tools_dir>/poetry-venv`.
//! * conda: `conda create -p <venv>` + the env's pip, when conda/mamba/micromamba exists.
//!
//! Requirement lines naming `priority_packages` are installed first, one by one; torch-family
//! lines next, from the PyTorch index chosen by [`torch_index`] (no network probing); then the
//! rest; `post_packages` last. A new manager is a [`Manager`] variant plus a variant of the
//! internal `Backend` or `Project` and a module with its steps.
//!
//! Callers must not build the same `venv_dir` from two processes at once (clearml-agent gives
//! each worker slot its own folder).

mod command;
mod conda;
mod error;
mod pip;
mod poetry;
mod probe_cache;
mod python;
mod report;
mod requirements;
mod steps;
mod torch;
mod uv;
mod venv;

use std::path::{Path, PathBuf};

pub use command::mask_secrets;
pub use error::EnvError;
pub use poetry::find_poetry;
pub use python::{PythonInfo, find_python, find_python_remembered, python_version_from_binary};
pub use report::{NullReporter, Reporter, Step};
pub use requirements::requirement_files;
pub use torch::torch_index;
pub use uv::{bootstrap_uv, find_uv};

/// The tool that creates the venv and installs into it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Manager {
    /// `uv venv` + `uv pip install`, or `uv sync` when the project has a `uv.lock`.
    #[default]
    Uv,
    /// `python -m venv` + pip.
    Pip,
    /// `poetry install` into our venv when the project is a poetry project, else as [`Manager::Uv`].
    Poetry,
    /// `conda create` + the env's pip, when a conda/mamba/micromamba binary exists, else as
    /// [`Manager::Uv`].
    Conda,
}

impl Manager {
    pub fn as_str(self) -> &'static str {
        match self {
            Manager::Uv => "uv",
            Manager::Pip => "pip",
            Manager::Poetry => "poetry",
            Manager::Conda => "conda",
        }
    }
}

/// What to install into the venv.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Requirements {
    /// The task's `script.requirements.pip` text.
    Text(String),
    /// A chain of `requirements.txt` files, root first, each installed in turn.
    Files(Vec<PathBuf>),
    /// A folder with a `pyproject.toml` (or `setup.py`), installed as a package.
    Project(PathBuf),
    #[default]
    None,
}

/// Everything [`build`] needs. Start from [`EnvSpec::new`] and set what differs, so new fields
/// don't break callers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvSpec {
    /// e.g. `~/.clearml/venvs-builds/3.11`; created, or reused when valid.
    pub venv_dir: PathBuf,
    /// The task's requested version ("3.10", "3"), from [`python_version_from_binary`].
    pub python_version: Option<String>,
    /// `agent.python_binary`, if configured.
    pub python_binary: Option<PathBuf>,
    pub manager: Manager,
    pub requirements: Requirements,
    /// Passed as `--extra-index-url` to every install.
    pub extra_index_urls: Vec<String>,
    pub system_site_packages: bool,
    /// `--upgrade` on every install.
    pub force_upgrade: bool,
    /// pip constraints for pip mode, e.g. `[">=20.2,<24.3"]`, markers allowed; a `pip` line in
    /// the task's requirements replaces them.
    pub pip_version: Vec<String>,
    /// `UV_CACHE_DIR`; keep it on the venv's filesystem so uv can hard-link from it.
    pub uv_cache_dir: Option<PathBuf>,
    /// `PIP_CACHE_DIR` in pip mode.
    pub pip_cache_dir: Option<PathBuf>,
    /// Where uv is bootstrapped (`<tools_dir>/uv-venv`) when none is found.
    pub tools_dir: PathBuf,
    /// A uv binary to use as is, skipping [`find_uv`] (a caller that found it once, or tests).
    pub uv_binary: Option<PathBuf>,
    /// The repository root: the installers' working folder, and the base for `-r file` and
    /// `./relative` lines in [`Requirements::Text`]. Without it, `-r` in the text is an error.
    pub base_dir: Option<PathBuf>,
    /// Extra environment variables for the installer processes (applied last).
    pub env: Vec<(String, String)>,
    /// `agent.package_manager.extra_pip_install_flags`: appended to every `pip install` (pip and
    /// conda modes; uv does not take pip's flags).
    pub extra_pip_install_flags: Vec<String>,
    /// `agent.package_manager.poetry_version`, e.g. "1.8.3", ">=2,<3"; `None` uses the `poetry`
    /// on `PATH`, or bootstraps the latest into `<tools_dir>/poetry-venv`.
    pub poetry_version: Option<String>,
    /// Appended to `poetry install -n`.
    pub poetry_install_extra_args: Vec<String>,
    /// Appended to `uv sync`.
    pub uv_sync_extra_args: Vec<String>,
    /// `uv sync --locked` when the project has a `uv.lock` (default true).
    pub uv_sync_locked_if_lock_file: bool,
    /// `agent.package_manager.conda_channels`, each passed as `-c`.
    pub conda_channels: Vec<String>,
    /// Requirement names installed first, one by one (`agent.package_manager.priority_packages`).
    pub priority_packages: Vec<String>,
    /// As `priority_packages`, but a failure is only a warning.
    pub priority_optional_packages: Vec<String>,
    /// Requirement names taken out of the main set and installed after it, one by one.
    pub post_packages: Vec<String>,
    /// As `post_packages`, but a failure is only a warning.
    pub post_optional_packages: Vec<String>,
    /// Use the PyTorch nightly index (and pre-releases) for torch packages.
    pub torch_nightly: bool,
    /// The CUDA version ("12.1" or "121") that picks the PyTorch index; see [`torch_index`].
    pub cuda_version: Option<String>,
    /// Take torch packages from the PyTorch CPU index.
    pub cpu_only: bool,
    /// The folder that may hold `pyproject.toml` / `poetry.lock` / `uv.lock` (the repository
    /// root); `uv sync` and `poetry install` run there.
    pub project_dir: Option<PathBuf>,
}

impl EnvSpec {
    /// A uv build into `venv_dir` with no requirements and every option off.
    pub fn new(venv_dir: impl Into<PathBuf>, tools_dir: impl Into<PathBuf>) -> Self {
        EnvSpec {
            venv_dir: venv_dir.into(),
            python_version: None,
            python_binary: None,
            manager: Manager::Uv,
            requirements: Requirements::None,
            extra_index_urls: Vec::new(),
            system_site_packages: false,
            force_upgrade: false,
            pip_version: Vec::new(),
            uv_cache_dir: None,
            pip_cache_dir: None,
            tools_dir: tools_dir.into(),
            uv_binary: None,
            base_dir: None,
            env: Vec::new(),
            extra_pip_install_flags: Vec::new(),
            poetry_version: None,
            poetry_install_extra_args: Vec::new(),
            uv_sync_extra_args: Vec::new(),
            uv_sync_locked_if_lock_file: true,
            conda_channels: Vec::new(),
            priority_packages: Vec::new(),
            priority_optional_packages: Vec::new(),
            post_packages: Vec::new(),
            post_optional_packages: Vec::new(),
            torch_nightly: false,
            cuda_version: None,
            cpu_only: false,
            project_dir: None,
        }
    }
}

/// The result of [`build`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltEnv {
    pub venv_dir: PathBuf,
    /// The venv's `bin/python`.
    pub python: PathBuf,
    /// The venv interpreter's full version, e.g. "3.11.7".
    pub python_version: String,
    /// `uv pip freeze` / `pip freeze` lines, without `clearml-agent` and installer tooling.
    pub frozen: Vec<String>,
    /// The manager that actually ran (pip when uv could not be found or bootstrapped).
    pub manager: Manager,
    /// The uv binary used, in uv mode (for `uv run` / `uv sync` later).
    pub uv: Option<PathBuf>,
    /// Whether an existing venv was reused rather than created.
    pub reused: bool,
}

/// Creates or reuses the venv described by `spec`, installs its requirements and freezes it.
pub fn build(spec: &EnvSpec, reporter: &dyn Reporter) -> Result<BuiltEnv, EnvError> {
    let _step = clearml_progress::StepGuard::start(
        reporter,
        Step::EnvBuild,
        &spec.venv_dir.display().to_string(),
    );
    let python = find_python(
        spec.python_version.as_deref(),
        spec.python_binary.as_deref(),
    )?;
    if let Some(note) = &python.note {
        reporter.line(&format!("Warning: {note}"));
    }
    reporter.line(&format!(
        "Using Python {} at {}",
        python.version,
        python.path.display()
    ));

    // Requirement problems (a `-r` with no base folder, an unreadable file) surface before any
    // venv work.
    let prepared = requirements::prepare(spec, reporter)?;

    let (backend, project) = plan(spec, &python.path, reporter)?;
    let manager = match &project {
        Some(Project::UvSync { .. }) => Manager::Uv,
        Some(Project::Poetry { .. }) => Manager::Poetry,
        None => backend.manager(),
    };
    reporter.line(&format!(
        "Building the Python environment in {} with {}",
        spec.venv_dir.display(),
        manager.as_str()
    ));

    let reused = match venv::inspect(&spec.venv_dir) {
        Some(found)
            if found.version == python.version
                && found.system_site_packages == spec.system_site_packages
                && (found.has_pip || !backend.needs_pip()) =>
        {
            reporter.line(&format!(
                "Reusing the virtual environment at {} (Python {})",
                spec.venv_dir.display(),
                found.version
            ));
            true
        }
        Some(found) => {
            reporter.line(&format!(
                "Recreating the virtual environment at {} (it has Python {}{}{}, wanted {}{})",
                spec.venv_dir.display(),
                found.version,
                site_note(found.system_site_packages),
                if found.has_pip { "" } else { " without pip" },
                python.version,
                site_note(spec.system_site_packages),
            ));
            false
        }
        None => false,
    };

    let venv_python = venv::python_path(&spec.venv_dir);
    if !reused {
        venv::clear(&spec.venv_dir)?;
        std::fs::create_dir_all(&spec.venv_dir)
            .map_err(|source| EnvError::io("creating", &spec.venv_dir, source))?;
        backend.create_venv(&python, spec, reporter)?;
        if !venv_python.is_file() {
            return Err(EnvError::Venv(format!(
                "{} was not created",
                venv_python.display()
            )));
        }
    }
    match &project {
        Some(Project::UvSync { uv, dir, lock }) => {
            ignore_task_requirements(spec, "uv sync", reporter);
            uv::sync(uv, &python.path, dir, *lock, spec, reporter)?;
        }
        Some(Project::Poetry { poetry, dir }) => {
            ignore_task_requirements(spec, "poetry install", reporter);
            poetry::install(poetry, dir, spec, reporter)?;
        }
        None => backend.install(&venv_python, spec, &prepared, reporter)?,
    }
    let raw = backend.freeze(&venv_python, spec)?;
    let frozen = requirements::filter_freeze(&raw, &prepared.names);
    reporter.line(&format!(
        "Environment ready in {}: {} package(s) recorded",
        spec.venv_dir.display(),
        frozen.len()
    ));
    Ok(BuiltEnv {
        venv_dir: spec.venv_dir.clone(),
        python: venv_python,
        // A venv runs its base interpreter, and reuse required the same full version.
        python_version: python.version,
        frozen,
        manager,
        uv: match backend {
            Backend::Uv(uv) => Some(uv),
            Backend::Pip | Backend::Conda(_) => None,
        },
        reused,
    })
}

/// The project folder whose own files (`uv.lock` / `[tool.uv]` for uv, `poetry.lock` /
/// `[tool.poetry]` for poetry) [`build`] would install from instead of `spec.requirements`, with
/// the manager that reads them; `None` when the requirements drive the build. A venv cache
/// must key such builds on those files (or skip them).
pub fn lock_project(spec: &EnvSpec) -> Option<(Manager, PathBuf)> {
    match spec.manager {
        Manager::Uv => uv::sync_project(spec).map(|(dir, _)| (Manager::Uv, dir)),
        Manager::Poetry => poetry::project(spec).map(|dir| (Manager::Poetry, dir)),
        Manager::Pip | Manager::Conda => None,
    }
}

/// A project whose own files (lock files) decide the environment instead of the requirements.
enum Project {
    /// `uv sync` in `dir`; `lock` when a `uv.lock` is there.
    UvSync {
        uv: PathBuf,
        dir: PathBuf,
        lock: bool,
    },
    /// `poetry install` in `dir`.
    Poetry { poetry: PathBuf, dir: PathBuf },
}

/// Picks the backend that creates, installs into and freezes the venv, and the project step
/// that replaces the install, falling back (with a report line) when the requested manager
/// cannot run here.
fn plan(
    spec: &EnvSpec,
    python: &Path,
    reporter: &dyn Reporter,
) -> Result<(Backend, Option<Project>), EnvError> {
    let uv_or_pip = || match resolve_uv(spec, python, reporter) {
        Ok(uv) => Backend::Uv(uv),
        Err(err) => {
            reporter.line(&format!(
                "Warning: uv is not available ({err}); using venv and pip instead"
            ));
            Backend::Pip
        }
    };
    Ok(match spec.manager {
        Manager::Pip => (Backend::Pip, None),
        Manager::Uv => {
            let backend = uv_or_pip();
            let project = match (uv::sync_project(spec), &backend) {
                (Some((dir, lock)), Backend::Uv(uv)) => Some(Project::UvSync {
                    uv: uv.clone(),
                    dir,
                    lock,
                }),
                (Some((dir, _)), _) => {
                    reporter.line(&format!(
                        "Warning: {} is a uv project, but without uv it cannot be synced; \
                         installing the requirements with pip",
                        dir.display()
                    ));
                    None
                }
                (None, _) => None,
            };
            (backend, project)
        }
        Manager::Poetry => match poetry::project(spec) {
            Some(dir) => {
                let backend = uv_or_pip();
                let uv = match &backend {
                    Backend::Uv(uv) => Some(uv.as_path()),
                    _ => None,
                };
                let poetry = find_poetry(
                    &spec.tools_dir,
                    spec.poetry_version.as_deref(),
                    python,
                    uv,
                    reporter,
                )?;
                (backend, Some(Project::Poetry { poetry, dir }))
            }
            None => {
                reporter.line(&format!(
                    "poetry requested but {} has no poetry project (poetry.lock or \
                     pyproject.toml with [tool.poetry]); using uv",
                    spec.project_dir
                        .as_deref()
                        .map_or_else(|| "the task".to_string(), |d| d.display().to_string())
                ));
                (uv_or_pip(), None)
            }
        },
        Manager::Conda => match conda::find() {
            Some(conda) => (Backend::Conda(conda), None),
            None => {
                reporter.line(
                    "conda requested but no conda binary found (conda, mamba or micromamba on \
                     PATH); using uv",
                );
                (uv_or_pip(), None)
            }
        },
    })
}

fn ignore_task_requirements(spec: &EnvSpec, tool: &str, reporter: &dyn Reporter) {
    if spec.requirements != Requirements::None {
        reporter.line(&format!(
            "The project's lock/pyproject files drive {tool}; the task's requirements are not \
             installed separately"
        ));
    }
}

/// The manager that creates the venv, installs requirements into it and freezes it; a new
/// manager is a variant here plus a module.
enum Backend {
    Uv(PathBuf),
    Pip,
    /// The conda/mamba/micromamba binary; installs go through the env's pip.
    Conda(PathBuf),
}

impl Backend {
    fn manager(&self) -> Manager {
        match self {
            Backend::Uv(_) => Manager::Uv,
            Backend::Pip => Manager::Pip,
            Backend::Conda(_) => Manager::Conda,
        }
    }

    /// pip and conda modes install with the env's own pip; uv does not need one.
    fn needs_pip(&self) -> bool {
        !matches!(self, Backend::Uv(_))
    }

    fn create_venv(
        &self,
        python: &PythonInfo,
        spec: &EnvSpec,
        reporter: &dyn Reporter,
    ) -> Result<(), EnvError> {
        match self {
            Backend::Uv(uv) => uv::create_venv(uv, &python.path, spec, reporter),
            Backend::Pip => pip::create_venv(&python.path, spec, reporter),
            Backend::Conda(conda) => conda::create(conda, &python.version, spec, reporter),
        }
    }

    fn install(
        &self,
        venv_python: &Path,
        spec: &EnvSpec,
        prepared: &requirements::Prepared,
        reporter: &dyn Reporter,
    ) -> Result<(), EnvError> {
        match self {
            Backend::Uv(uv) => uv::install(uv, venv_python, spec, prepared, reporter),
            Backend::Pip | Backend::Conda(_) => pip::install(venv_python, spec, prepared, reporter),
        }
    }

    fn freeze(&self, venv_python: &Path, spec: &EnvSpec) -> Result<String, EnvError> {
        match self {
            Backend::Uv(uv) => uv::freeze(uv, venv_python, spec),
            Backend::Pip | Backend::Conda(_) => pip::freeze(venv_python, spec),
        }
    }
}

fn resolve_uv(spec: &EnvSpec, python: &Path, reporter: &dyn Reporter) -> Result<PathBuf, EnvError> {
    match &spec.uv_binary {
        Some(path) if path.is_file() => Ok(path.clone()),
        Some(path) => Err(EnvError::Uv(format!(
            "the configured uv binary {} does not exist",
            path.display()
        ))),
        None => find_uv(&spec.tools_dir, python, reporter),
    }
}

fn site_note(system_site_packages: bool) -> &'static str {
    if system_site_packages {
        " with system site-packages"
    } else {
        ""
    }
}
