//! Getting a task ready to run: its code (clone, diff or literal script), its Python
//! environment, and the command line and environment variables it runs with.
//!
//! This runs in the task's own process group (the daemon starts `execute
//! --disable-monitoring`), so an abort during a clone or an install kills git and uv with the
//! rest, and every progress line goes to stdout, which the daemon ships to the task's console.
//! The work folder is one per agent slot: `<venvs_dir>/<X.Y>` is the environment,
//! `<venvs_dir>/task_repository/<name>` the code, `<venvs_dir>/code` literal scripts.
//!
//! Environments go through the host's venv cache (`agent.venvs_cache`, crate
//! `clearml-envcache`) when their inputs can be hashed: on a hit the venv is hardlinked back in
//! well under a second and no installer runs; on a miss the venv is built from scratch (not
//! on top of the previous task's, so the stored entry holds exactly its requirement set) and
//! stored. `build --target` and pyproject installs (the project's own code changes with every
//! commit) bypass the cache.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clearml_config::{AgentSettings, Config, PackageManagerKind};
use serde_json::Value;

use crate::prepare_cache::{env_cache_key, restore_env, store_env};
use crate::task::{ExecutionInfo, Interpreter};

use clearml_progress::Reporter;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("{0}")]
    Task(#[from] crate::task::TaskError),
    #[error("failed cloning repository: {0}")]
    Clone(#[from] clearml_vcs::VcsError),
    #[error("failed applying the uncommitted changes: {0}")]
    Diff(clearml_vcs::VcsError),
    #[error("failed building the Python environment: {0}")]
    Env(#[from] clearml_pyenv::EnvError),
    #[error("{0}")]
    Config(#[from] clearml_config::ConfigError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
}

impl PrepareError {
    /// The short reason the task's status shows.
    pub fn status_reason(&self) -> String {
        match self {
            PrepareError::Clone(_) => "failed cloning repository".into(),
            PrepareError::Diff(_) => "failed applying git diff".into(),
            PrepareError::Env(_) => "failed installing the environment".into(),
            other => {
                let s = other.to_string();
                s.chars().take(200).collect()
            }
        }
    }
}

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> PrepareError {
    let what = what.into();
    move |source| PrepareError::Io { what, source }
}

/// What [`prepare`] produced.
#[derive(Debug)]
pub struct Prepared {
    /// The program and arguments to exec.
    pub argv: Vec<OsString>,
    pub cwd: PathBuf,
    /// Variables to set (`None` removes).
    pub env: Vec<(String, Option<String>)>,
    /// Frozen packages of the environment, for `tasks.set_requirements`.
    pub frozen: Option<Vec<String>>,
    /// The commit that was checked out.
    pub commit: Option<String>,
    pub python_version: Option<String>,
    /// Holds the venv cache entry the environment came from as "in use"; its descriptor
    /// survives [`exec`], so the lock lasts as long as the task process.
    pub env_in_use: Option<clearml_envcache::InUse>,
    /// How long each step took (code, environment), in order.
    pub timings: Vec<(&'static str, std::time::Duration)>,
    /// Steps that ran beside those (the interpreter probe, during the checkout).
    pub beside: Vec<(&'static str, std::time::Duration)>,
}

/// Options of one preparation.
#[derive(Clone, Debug, Default)]
pub struct PrepareOptions {
    /// Build the environment here instead of `<venvs_dir>/<X.Y>` (`build --target`).
    pub venv_target: Option<PathBuf>,
    /// Overrides the task's Python version (`build --python-version`).
    pub python_version: Option<String>,
    /// The code is already in place (docker mode: checked out on the host and mounted), so
    /// [`prepare_code`] is skipped.
    pub code_ready: Option<Code>,
    /// An environment already in place (docker mode: built into the image by `build
    /// --docker`), used as it is: nothing is installed.
    pub prebuilt_env: Option<PathBuf>,
    /// `--standalone-mode`: no environment is built and nothing installed; the task runs with
    /// the interpreter as it is (`agent.python_binary`, else the task's version on `PATH`).
    pub standalone: bool,
}

/// The agent settings the preparation reads, from the loaded configuration.
pub struct PrepareSettings {
    pub agent: AgentSettings,
    pub vcs: clearml_vcs::VcsSettings,
    pub work_root: PathBuf,
    pub tools_dir: PathBuf,
    pub uv_cache_dir: PathBuf,
    /// `agent.venvs_cache`; `None` when disabled (no path, or `enabled: false`).
    pub venvs_cache: Option<clearml_envcache::CacheSettings>,
    /// `agent.cuda_version` or `CUDA_VERSION`: part of the cache key.
    pub cuda_version: Option<String>,
}

impl PrepareSettings {
    pub fn from_config(config: &Config) -> Result<PrepareSettings, PrepareError> {
        let agent = config.agent()?;
        let git = config.vcs()?;
        let mut credentials = Vec::new();
        if let (Some(user), Some(pass)) = (agent.git_user.clone(), agent.git_pass.clone()) {
            credentials.push(clearml_vcs::GitCredential {
                user,
                pass,
                host: git.git_host.clone(),
            });
        }
        credentials.extend(
            git.extra_credentials
                .into_iter()
                .map(|c| clearml_vcs::GitCredential {
                    user: c.user,
                    pass: c.pass,
                    host: c.host,
                }),
        );
        let home = config.env().get("HOME").unwrap_or("/tmp").to_string();
        let base = PathBuf::from(&home).join(".clearml");
        let vcs = clearml_vcs::VcsSettings {
            cache_dir: agent.vcs_cache.path.clone(),
            cache_enabled: agent.vcs_cache.enabled,
            credentials,
            git_host_match_prefix: git.git_host_match_prefix,
            translate_ssh: agent.translate_ssh,
            ssh_replacement_scheme: git.ssh_replacement_scheme,
            force_git_ssh_protocol: agent.force_git_ssh_protocol,
            force_git_ssh_port: git.force_git_ssh_port,
            force_git_ssh_user: git.force_git_ssh_user,
            git_host: git.git_host,
            fetch_args: git.fetch_args,
            lock_timeout: std::time::Duration::from_secs(300),
            git_program: PathBuf::from("git"),
            git_config: Vec::new(),
        };
        let venvs_cache = config
            .venvs_cache()?
            .map(|c| clearml_envcache::CacheSettings {
                dir: c.path,
                max_entries: c.max_entries,
                free_space_threshold: c.free_space_threshold,
            });
        let cuda_version = agent
            .cuda_version
            .clone()
            .or_else(|| config.env().get("CUDA_VERSION").map(str::to_string))
            .filter(|s| !s.trim().is_empty());
        Ok(PrepareSettings {
            venvs_cache,
            cuda_version,
            work_root: agent.venvs_dir.clone(),
            tools_dir: base.join("tools"),
            uv_cache_dir: config
                .env()
                .get("UV_CACHE_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| base.join("uv-cache")),
            agent,
            vcs,
        })
    }
}

/// Where interpreter probes are remembered (in the tools folder, beside uv).
const PROBE_CACHE: &str = "python-probes.tsv";

/// Clones, builds and works out the command; does not touch the task on the server. The
/// steps are public so docker mode can run them apart: [`prepare_code`],
/// [`prepare_environment`], [`command_line`], [`task_variables`] and [`venv_variables`].
pub fn prepare(
    task: &Value,
    settings: &PrepareSettings,
    opts: &PrepareOptions,
    progress: &dyn Reporter,
) -> Result<Prepared, PrepareError> {
    let info = ExecutionInfo::from_task(task)?;
    let task_id = task
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    show_info(&info, progress);
    let mut timings = Vec::new();
    let prebuilt = opts
        .prebuilt_env
        .as_ref()
        .filter(|_| info.needs_python_env());
    let standalone = opts.standalone && prebuilt.is_none() && info.needs_python_env();
    // The interpreter probe needs nothing of the code: it runs beside the checkout.
    let probe = (info.needs_python_env() && prebuilt.is_none()).then(|| {
        let requested = requested_python(&info, opts);
        let configured = settings.agent.python_binary.clone();
        let remembered = settings.tools_dir.join(PROBE_CACHE);
        std::thread::spawn(move || {
            let started = Instant::now();
            let found = clearml_pyenv::find_python_remembered(
                requested.as_deref(),
                configured.as_deref(),
                Some(&remembered),
            );
            (found, started.elapsed())
        })
    });
    let step = Instant::now();
    let code = match &opts.code_ready {
        Some(code) => code.clone(),
        None => prepare_code(&info, settings, progress)?,
    };
    timings.push(("code (git)", step.elapsed()));
    let step = Instant::now();
    let env = match prebuilt {
        None if standalone => {
            let (found, took) = match probe.and_then(|p| p.join().ok()) {
                Some(probed) => probed,
                None => (
                    clearml_pyenv::find_python(
                        requested_python(&info, opts).as_deref(),
                        settings.agent.python_binary.as_deref(),
                    ),
                    std::time::Duration::ZERO,
                ),
            };
            let found = found?;
            progress.line(&format!(
                "::: Standalone mode: running with {} ({}) as it is, installing nothing :::",
                found.path.display(),
                found.version
            ));
            Some(Environment {
                venv_dir: PathBuf::new(),
                python: found.path,
                python_version: found.version,
                frozen: Vec::new(),
                env_in_use: None,
                probe: took,
            })
        }
        Some(venv) => {
            progress.line(&format!(
                "::: Using the environment built into the image: {} :::",
                venv.display()
            ));
            Some(Environment {
                venv_dir: venv.clone(),
                python: venv.join("bin/python"),
                python_version: String::new(),
                frozen: Vec::new(),
                env_in_use: None,
                probe: std::time::Duration::ZERO,
            })
        }
        None if info.needs_python_env() => {
            let found = probe.and_then(|p| p.join().ok());
            Some(environment(&info, &code, settings, opts, progress, found)?)
        }
        None => None,
    };
    // The probe ran beside the checkout: its own time, and the environment step after it.
    let probe = env.as_ref().map(|e| e.probe).unwrap_or_default();
    let beside = vec![("interpreter probe", probe)];
    timings.push(("env restore", step.elapsed()));
    let argv = command_line(&info, &code, env.as_ref().map(|e| e.python.as_path()))?;
    let mut vars = task_variables(&task_id, &code);
    if let Some(e) = env.as_ref().filter(|_| !standalone) {
        vars.extend(venv_variables(&e.venv_dir));
    }
    let (python_version, frozen, env_in_use) = match env {
        // Standalone: nothing was installed, the task's record stays as it is.
        Some(_) if standalone => (None, None, None),
        // Nothing was installed into a prebuilt environment: the task's record stays as it is.
        Some(_) if prebuilt.is_some() => (None, None, None),
        Some(e) => (Some(e.python_version), Some(e.frozen), e.env_in_use),
        None => (None, None, None),
    };
    Ok(Prepared {
        argv,
        cwd: code.script_dir,
        env: vars,
        frozen,
        commit: code.commit,
        python_version,
        env_in_use,
        timings,
        beside,
    })
}

/// The task's code on disk, from [`prepare_code`].
#[derive(Clone, Debug)]
pub struct Code {
    /// The repository, or `<work_root>/code` for a literal script.
    pub root: PathBuf,
    /// `root/working_dir`: where the task runs.
    pub script_dir: PathBuf,
    /// The entry point, once a literal script was written out.
    pub entry_point: Option<String>,
    /// The commit that was checked out.
    pub commit: Option<String>,
}

impl Code {
    /// The entry point, trimmed; `None` when empty.
    fn entry(&self) -> Option<String> {
        self.entry_point
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
    }
}

/// The task's Python environment, from [`prepare_environment`].
#[derive(Debug)]
pub struct Environment {
    pub venv_dir: PathBuf,
    pub python: PathBuf,
    pub python_version: String,
    /// Frozen packages, for `tasks.set_requirements`.
    pub frozen: Vec<String>,
    /// Holds the venv cache entry as "in use" (see [`Prepared::env_in_use`]).
    pub env_in_use: Option<clearml_envcache::InUse>,
    /// How long finding the interpreter took (it runs it to read its version).
    pub probe: std::time::Duration,
}

/// The task's code: its repository checked out into `<work_root>/task_repository/<name>`
/// (through the vcs cache) with the uncommitted changes applied, or its literal script
/// written into `<work_root>/code`.
pub fn prepare_code(
    info: &ExecutionInfo,
    settings: &PrepareSettings,
    progress: &dyn Reporter,
) -> Result<Code, PrepareError> {
    let root = &settings.work_root;
    std::fs::create_dir_all(root).map_err(io(format!("cannot create {}", root.display())))?;
    // The code.
    let (code_root, commit) = match &info.repository {
        Some(url) => {
            let name = repo_folder_name(url);
            let dest = root.join("task_repository").join(&name);
            let spec = clearml_vcs::RepoSpec {
                url: url.clone(),
                branch: info.branch.clone(),
                commit: info.commit.clone(),
                tag: info.tag.clone(),
            };
            let repo = clearml_vcs::checkout(&settings.vcs, &spec, &dest, progress)?;
            (repo.root, Some(repo.commit))
        }
        None => {
            let code = root.join("code");
            if code.exists() {
                std::fs::remove_dir_all(&code)
                    .map_err(io(format!("cannot clear {}", code.display())))?;
            }
            std::fs::create_dir_all(&code)
                .map_err(io(format!("cannot create {}", code.display())))?;
            if info.diff.is_none() {
                progress.line("WARNING: running a task without repository or literal script");
            }
            (code, None)
        }
    };
    let working_dir = info.working_dir_or_root();
    // Checked after resolving symlinks (the repository is outside input too): crate::contain.
    let script_dir = crate::contain::working_dir(&code_root, working_dir).map_err(invalid)?;

    // The uncommitted changes, or a literal script.
    let mut entry_point = info.entry_point.clone();
    if let Some(diff) = &info.diff {
        if info.diff_is_patch() && info.repository.is_some() {
            progress.line("Applying uncommitted changes");
            clearml_vcs::apply_diff(&code_root, diff, progress).map_err(PrepareError::Diff)?;
        } else {
            let is_module = entry_point
                .as_deref()
                .is_some_and(|e| e.starts_with("-m ") || e.starts_with("-c "));
            let file = match entry_point.as_deref().map(str::trim) {
                Some(e) if !e.is_empty() && !is_module => e.to_string(),
                _ => match info.interpreter() {
                    Interpreter::Python => "untitled.py".into(),
                    Interpreter::Shell(_) => "untitled.sh".into(),
                },
            };
            let path =
                crate::contain::file_to_write(&code_root, &script_dir, &file).map_err(invalid)?;
            if !path.exists() {
                std::fs::write(&path, diff)
                    .map_err(io(format!("cannot write {}", path.display())))?;
            }
            if entry_point.is_none() || is_module {
                entry_point = Some(file);
            }
        }
    }
    Ok(Code {
        root: code_root,
        script_dir,
        entry_point,
        commit,
    })
}

/// The task's Python environment in `<work_root>/<X.Y>` (or `opts.venv_target`): restored
/// from the venv cache on a hit, else built from scratch (and stored).
pub fn prepare_environment(
    info: &ExecutionInfo,
    code: &Code,
    settings: &PrepareSettings,
    opts: &PrepareOptions,
    progress: &dyn Reporter,
) -> Result<Environment, PrepareError> {
    environment(info, code, settings, opts, progress, None)
}

/// The Python version a task asks for: `build --python-version`, else its `script.binary`.
fn requested_python(info: &ExecutionInfo, opts: &PrepareOptions) -> Option<String> {
    opts.python_version.clone().or_else(|| {
        info.binary
            .as_deref()
            .and_then(clearml_pyenv::python_version_from_binary)
    })
}

type Probed = (
    Result<clearml_pyenv::PythonInfo, clearml_pyenv::EnvError>,
    std::time::Duration,
);

/// [`prepare_environment`], with the interpreter already probed when `found` is given.
fn environment(
    info: &ExecutionInfo,
    code: &Code,
    settings: &PrepareSettings,
    opts: &PrepareOptions,
    progress: &dyn Reporter,
    found: Option<Probed>,
) -> Result<Environment, PrepareError> {
    let root = &settings.work_root;
    let (code_root, script_dir) = (&code.root, &code.script_dir);
    let mut env_in_use = None;
    let env_started = Instant::now();
    let requested = requested_python(info, opts);
    let (found, probe) = match found {
        Some((found, took)) => (found?, took),
        None => {
            let started = Instant::now();
            let found = clearml_pyenv::find_python_remembered(
                requested.as_deref(),
                settings.agent.python_binary.as_deref(),
                Some(&settings.tools_dir.join(PROBE_CACHE)),
            )?;
            (found, started.elapsed())
        }
    };
    let venv_dir = opts
        .venv_target
        .clone()
        .unwrap_or_else(|| root.join(major_minor(&found.version)));
    let requirements = match &info.pip_requirements {
        Some(text) => clearml_pyenv::Requirements::Text(text.clone()),
        None => {
            let files = clearml_pyenv::requirement_files(code_root, script_dir);
            if !files.is_empty() {
                clearml_pyenv::Requirements::Files(files)
            } else if code_root.join("pyproject.toml").is_file() {
                clearml_pyenv::Requirements::Project(code_root.clone())
            } else {
                progress
                    .line("Warning: installing NO task requirements or repository requirements");
                clearml_pyenv::Requirements::None
            }
        }
    };
    let pm = &settings.agent.package_manager;
    let spec = clearml_pyenv::EnvSpec {
        uv_binary: None,
        python_version: requested.clone(),
        python_binary: Some(found.path.clone()),
        manager: match pm.kind {
            PackageManagerKind::Pip => clearml_pyenv::Manager::Pip,
            PackageManagerKind::Poetry => clearml_pyenv::Manager::Poetry,
            PackageManagerKind::Conda => clearml_pyenv::Manager::Conda,
            PackageManagerKind::Uv => clearml_pyenv::Manager::Uv,
        },
        requirements,
        base_dir: Some(code_root.clone()),
        extra_index_urls: pm.extra_index_url.clone(),
        system_site_packages: pm.system_site_packages,
        force_upgrade: pm.force_upgrade,
        pip_version: pm.pip_version.clone(),
        uv_cache_dir: Some(settings.uv_cache_dir.clone()),
        pip_cache_dir: settings
            .agent
            .pip_download_cache
            .enabled
            .then(|| settings.agent.pip_download_cache.path.clone()),
        env: Vec::new(),
        extra_pip_install_flags: pm.extra_pip_install_flags.clone(),
        poetry_version: pm.poetry_version.clone(),
        poetry_install_extra_args: pm.poetry_install_extra_args.clone(),
        uv_sync_extra_args: pm.uv_sync_extra_args.clone(),
        uv_sync_locked_if_lock_file: pm.uv_sync_locked_if_lock_file,
        conda_channels: pm.conda_channels.clone(),
        priority_packages: pm.priority_packages.clone(),
        priority_optional_packages: pm.priority_optional_packages.clone(),
        post_packages: pm.post_packages.clone(),
        post_optional_packages: pm.post_optional_packages.clone(),
        torch_nightly: pm.torch_nightly,
        cuda_version: settings.cuda_version.clone(),
        // clearml-agent's cpu-only switch is an environment variable only.
        cpu_only: std::env::var("CLEARML_CPU_ONLY")
            .is_ok_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on")),
        project_dir: Some(code_root.clone()),
        // New build options keep their defaults until set here.
        ..clearml_pyenv::EnvSpec::new(venv_dir, settings.tools_dir.clone())
    };
    let cached = match (&settings.venvs_cache, &opts.venv_target) {
        (Some(cache), None) => env_cache_key(&spec, &found.version, code_root, settings, progress)
            .and_then(
                |inputs| match clearml_envcache::EnvCache::open(cache.clone()) {
                    Ok(c) => Some((c, inputs)),
                    Err(e) => {
                        say(progress, &format!("Warning: venv cache unavailable: {e}"));
                        None
                    }
                },
            ),
        (None, None) => {
            say(
                progress,
                "::: Python virtual environment cache is DISABLED. To accelerate spin-up \
                 time set `agent.venvs_cache.path=~/.clearml/venvs-cache` :::",
            );
            None
        }
        _ => None,
    };
    let venv_dir = spec.venv_dir.clone();
    let restored = match &cached {
        Some((cache, inputs)) => restore_env(cache, inputs, &venv_dir, progress)?,
        None => None,
    };
    let (venv_python, version, packages) = match restored {
        Some(r) => {
            let how = format!("cache hit {}", clearml_envcache::short(r.in_use.key()));
            // Inherited by the task through exec: eviction skips the entry until it ends.
            if let Err(e) = r.in_use.keep_across_exec() {
                say(
                    progress,
                    &format!("Warning: cannot pin the cached environment: {e}"),
                );
            }
            env_in_use = Some(r.in_use);
            say_ready(progress, env_started, &how);
            (
                venv_dir.join("bin/python"),
                r.manifest.python,
                r.manifest.frozen,
            )
        }
        None => {
            if cached.is_some() && venv_dir.exists() {
                // The entry must hold exactly this requirement set, not the leftovers of
                // the previous task's environment.
                std::fs::remove_dir_all(&venv_dir)
                    .map_err(io(format!("cannot clear {}", venv_dir.display())))?;
            }
            let built = clearml_pyenv::build(&spec, progress)?;
            if let Some((cache, inputs)) = &cached
                && built.manager == spec.manager
            {
                store_env(cache, inputs, &built, progress);
            }
            say_ready(progress, env_started, "built");
            (built.python, built.python_version, built.frozen)
        }
    };
    Ok(Environment {
        venv_dir,
        python: venv_python,
        python_version: version,
        frozen: packages,
        env_in_use,
        probe,
    })
}

/// The program and arguments that run the task's entry point: `python` is the environment's
/// interpreter (`python3` when there is none).
pub fn command_line(
    info: &ExecutionInfo,
    code: &Code,
    python: Option<&Path>,
) -> Result<Vec<OsString>, PrepareError> {
    let script_dir = &code.script_dir;
    let entry = code.entry();
    if let Some(e) = entry.as_deref() {
        // Checked after resolving symlinks: a link in the repository must not lead outside it.
        let is_python = info.interpreter() == Interpreter::Python;
        crate::contain::entry_point(&code.root, script_dir, e, is_python).map_err(invalid)?;
    }
    let argv: Vec<OsString> = match info.interpreter() {
        Interpreter::Python => {
            let py = python
                .map(|p| p.as_os_str().to_os_string())
                .unwrap_or_else(|| "python3".into());
            let mut argv = vec![py, "-u".into()];
            match entry.as_deref() {
                None => {
                    return Err(PrepareError::Invalid(
                        "the task has no entry point (script.entry_point is empty)".into(),
                    ));
                }
                Some(e) if e.starts_with("-m ") || e.starts_with("-c ") => {
                    argv.extend(split(e)?.into_iter().map(OsString::from));
                }
                Some(e) if script_dir.join(e).is_file() => argv.push(e.into()),
                Some(e) => argv.extend(split(e)?.into_iter().map(OsString::from)),
            }
            argv
        }
        Interpreter::Shell(bin) => {
            let shell = if bin.is_empty() {
                "/bin/bash".to_string()
            } else {
                bin
            };
            let mut argv = vec![OsString::from(shell)];
            match entry.as_deref() {
                Some(e) if e.starts_with("-c ") => {
                    argv.push("-c".into());
                    argv.push(e.trim_start_matches("-c ").into());
                }
                Some(e) => argv.extend(split(e)?.into_iter().map(OsString::from)),
                None => {
                    return Err(PrepareError::Invalid(
                        "the task has no entry point (script.entry_point is empty)".into(),
                    ));
                }
            }
            argv
        }
    };
    Ok(argv)
}

/// The variables every task runs with: its id, `PYTHONPATH`, unbuffered output, and the
/// agent's own uv and apt settings removed.
pub fn task_variables(task_id: &str, code: &Code) -> Vec<(String, Option<String>)> {
    let script_dir = &code.script_dir;
    let entry = code.entry();
    // PYTHONPATH as the Python agent sets it: what was there, the script's folder and the
    // entry point's folder.
    let mut pythonpath: Vec<String> = std::env::var("PYTHONPATH")
        .ok()
        .filter(|s| !s.is_empty())
        .into_iter()
        .collect();
    pythonpath.push(script_dir.display().to_string());
    if let Some(e) = entry.as_deref().filter(|e| !e.starts_with('-'))
        && let Some(parent) = Path::new(e).parent().filter(|p| !p.as_os_str().is_empty())
    {
        pythonpath.push(script_dir.join(parent).display().to_string());
    }
    if let Ok(extra) = std::env::var("CLEARML_AGENT_EXTRA_PYTHON_PATH") {
        pythonpath.push(extra);
    }
    let mut env = vec![
        ("CLEARML_TASK_ID".into(), Some(task_id.to_string())),
        ("TRAINS_TASK_ID".into(), Some(task_id.to_string())),
        ("CLEARML_LOG_TASK_TO_BACKEND".into(), Some("0".into())),
        ("TRAINS_LOG_TASK_TO_BACKEND".into(), Some("0".into())),
        ("PYTHONPATH".into(), Some(pythonpath.join(":"))),
        ("PYTHONUNBUFFERED".into(), Some("1".into())),
    ];
    for v in [
        "CLEARML_APT_INSTALL",
        "TRAINS_APT_INSTALL",
        "UV_CACHE_DIR",
        "UV_PYTHON_CACHE_DIR",
        "UV_PYTHON_INSTALL_DIR",
    ] {
        env.push((v.into(), None));
    }
    env
}

/// `VIRTUAL_ENV` and `PATH` for a task that runs in the environment at `venv_dir`.
pub fn venv_variables(venv_dir: &Path) -> Vec<(String, Option<String>)> {
    let path = std::env::var("PATH").unwrap_or_default();
    vec![
        ("VIRTUAL_ENV".into(), Some(venv_dir.display().to_string())),
        (
            "PATH".into(),
            Some(format!("{}:{path}", venv_dir.join("bin").display())),
        ),
    ]
}

pub(crate) fn say(progress: &dyn Reporter, text: &str) {
    progress.line(text);
}

/// The line the end-to-end test and the benchmark time the environment step by.
fn say_ready(progress: &dyn Reporter, started: Instant, how: &str) {
    say(
        progress,
        &format!(
            "::: Python environment ready in {:.3}s ({how}) :::",
            started.elapsed().as_secs_f64()
        ),
    );
}

/// `3.11` of `3.11.7`.
fn major_minor(version: &str) -> String {
    version.split('.').take(2).collect::<Vec<_>>().join(".")
}

fn invalid(e: crate::contain::ContainError) -> PrepareError {
    PrepareError::Invalid(e.to_string())
}

fn split(s: &str) -> Result<Vec<String>, PrepareError> {
    shell_words::split(s)
        .map_err(|e| PrepareError::Invalid(format!("cannot split the entry point {s:?}: {e}")))
}

/// `repo` for `https://host/org/repo.git`, `git@host:org/repo.git`, `/path/to/repo`.
pub fn repo_folder_name(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    let last = trimmed.rsplit(['/', ':']).next().unwrap_or("repository");
    let name = last.strip_suffix(".git").unwrap_or(last);
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean == "." || clean == ".." {
        "repository".into()
    } else {
        clean
    }
}

fn show_info(info: &ExecutionInfo, progress: &dyn Reporter) {
    let say = |s: String| progress.line(&s);
    say("Executing task:".into());
    if let Some(r) = &info.repository {
        say(format!(
            "  repository = {}",
            clearml_vcs::strip_credentials(r)
        ));
    }
    for (k, v) in [
        ("branch", &info.branch),
        ("version_num", &info.commit),
        ("tag", &info.tag),
        ("entry_point", &info.entry_point),
        ("working_dir", &info.working_dir),
    ] {
        if let Some(v) = v {
            say(format!("  {k} = {v}"));
        }
    }
}

/// Replaces this process with the task (the daemon watches the process group).
pub fn exec(prepared: &Prepared) -> std::io::Error {
    use std::os::unix::process::CommandExt as _;
    let Some((program, args)) = prepared.argv.split_first() else {
        return std::io::Error::other("empty command");
    };
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(&prepared.cwd);
    for (k, v) in &prepared.env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.exec()
}

/// The command as a person reads it.
pub fn display_command(prepared: &Prepared) -> String {
    prepared
        .argv
        .iter()
        .map(|a| shell_words::quote(&a.to_string_lossy()).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests;
