//! `clearml-agent doctor`: the preflight a new user runs after `init`. Each check is one line,
//! `ok`, `warning` or `error`, with what was found and, when it is not ok, what to do. Any error
//! makes the exit code 1; `--json` prints the same for scripts.
//!
//! The checks touch the real things, never a cached answer: the configuration is loaded and
//! every typed setting read; the API server gets an `auth.login` with the configured keys; the
//! files server an HTTP request; git, Python, uv and docker are run. Nothing is installed or
//! pulled: where the agent would fetch something itself (uv, a docker image) the line says how.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::Args;
use clearml_config::{Config, LoadOptions};
use serde_json::{Value, json};

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print the checks as JSON
    #[arg(long)]
    pub json: bool,
    /// Also check docker mode: the engine and the default image (checked anyway when docker is
    /// installed, as a warning)
    #[arg(long)]
    pub docker: bool,
    /// Seconds to wait for each server and command
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    pub timeout: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One line of the report.
#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub level: Level,
    /// What was found.
    pub message: String,
    /// What to do (not for `ok`).
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Ok,
            message: message.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Warning,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
    fn error(name: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            level: Level::Error,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

pub fn run(opts: &LoadOptions, args: &DoctorArgs) -> anyhow::Result<ExitCode> {
    let timeout = Duration::from_secs_f64(args.timeout.clamp(0.5, 600.0));
    let checks = checks(opts, args.docker, timeout);
    let failed = checks.iter().any(|c| c.level == Level::Error);
    if args.json {
        let out = json!({
            "ok": !failed,
            "checks": checks.iter().map(|c| json!({
                "name": c.name, "status": c.level.as_str(), "message": c.message, "fix": c.fix,
            })).collect::<Vec<Value>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for c in &checks {
            println!("{:<8} {:<12} {}", c.level.as_str(), c.name, c.message);
            if let Some(fix) = &c.fix {
                println!("{:<8} {:<12} -> {fix}", "", "");
            }
        }
        let (w, e) = (
            checks.iter().filter(|c| c.level == Level::Warning).count(),
            checks.iter().filter(|c| c.level == Level::Error).count(),
        );
        println!("{e} error(s), {w} warning(s)");
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Every check, in the order a new user fixes things.
pub fn checks(opts: &LoadOptions, docker: bool, timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let config = match Config::load(opts) {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(Check::error(
                "config",
                format!("{e}"),
                "fix the file at the place named, or write a new one with `clearml-agent init`",
            ));
            None
        }
    };
    if let Some(config) = &config {
        out.push(check_config(config));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
        match rt {
            Ok(rt) => {
                out.push(rt.block_on(check_api(config, timeout)));
                out.push(rt.block_on(check_files_server(config, timeout)));
            }
            Err(e) => out.push(Check::error(
                "api",
                format!("cannot start the async runtime: {e}"),
                "report this",
            )),
        }
    }
    out.push(check_git(timeout));
    if let Some(config) = &config {
        out.push(check_python(config));
        out.push(check_uv(config, timeout));
        out.push(check_docker(config, docker, timeout));
        out.push(check_disk(config));
    }
    out.push(check_gpu());
    out
}

fn check_config(config: &Config) -> Check {
    let typed = config
        .agent()
        .map(drop)
        .and_then(|()| config.api().map(drop))
        .and_then(|()| config.storage_cache().map(drop));
    if let Err(e) = typed {
        return Check::error(
            "config",
            e.to_string(),
            "correct the value at the place named (`clearml-agent config` shows the result)",
        );
    }
    let files = config.files();
    if files.is_empty() {
        return Check::warn(
            "config",
            "no configuration file found; built-in defaults and environment variables only",
            "run `clearml-agent init` to write ~/clearml.conf",
        );
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    Check::ok("config", format!("{} is valid", names.join(", ")))
}

async fn check_api(config: &Config, timeout: Duration) -> Check {
    let mut client_config = match clearml_api::ClientConfig::from_config(config) {
        Ok(c) => c,
        Err(e) => {
            return Check::error(
                "api",
                e.to_string(),
                "run `clearml-agent init`, or paste the server's credentials into ~/clearml.conf",
            );
        }
    };
    client_config.retry_for = Duration::ZERO;
    client_config.timeout = timeout;
    let server = client_config.api_server.clone();
    let client = match clearml_api::Client::new(client_config) {
        Ok(c) => c,
        Err(e) => return Check::error("api", e.to_string(), "check api.api_server"),
    };
    match client.token().await {
        Ok(_) => Check::ok(
            "api",
            format!("{server} is reachable and accepted the credentials"),
        ),
        Err(clearml_api::ApiError::Unreachable { message, .. }) => Check::error(
            "api",
            format!("cannot reach the API server at {server}: {message}"),
            "start the server (`clearml-agent server` for the embedded one), or correct api.api_server / CLEARML_API_HOST",
        ),
        Err(
            e @ clearml_api::ApiError::Server {
                code: 401 | 403, ..
            },
        ) => Check::error(
            "api",
            format!("{server} rejected the credentials: {e}"),
            "create a new access key / secret pair (web UI: Settings > Workspace, or the embedded server's startup lines) and put it in api.credentials",
        ),
        Err(e) => Check::error(
            "api",
            format!("{server}: login failed: {e}"),
            "check api.api_server points at the API (port 8008), not the web or files server",
        ),
    }
}

async fn check_files_server(config: &Config, timeout: Duration) -> Check {
    let url = match config.api() {
        Ok(api) => api.files_server,
        Err(_) => None,
    };
    let Some(url) = url else {
        return Check::warn(
            "files_server",
            "no files server configured",
            "set api.files_server (tasks' artifacts and models are uploaded there)",
        );
    };
    let client = reqwest::Client::builder().timeout(timeout).build();
    let answer = match client {
        Ok(c) => c.get(&url).send().await,
        Err(e) => {
            return Check::error("files_server", e.to_string(), "report this");
        }
    };
    let shown = clearml_config::mask_url_passwords(&url);
    match answer {
        Ok(r) if r.status().is_server_error() => Check::warn(
            "files_server",
            format!("{shown} answered HTTP {}", r.status().as_u16()),
            "look at the files server's log",
        ),
        Ok(r) => Check::ok(
            "files_server",
            format!("{shown} is reachable (HTTP {})", r.status().as_u16()),
        ),
        Err(e) => Check::error(
            "files_server",
            format!("cannot reach {shown}: {}", error_chain(&e)),
            "start the files server or correct api.files_server / CLEARML_FILES_HOST",
        ),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Runs `program args` with a time limit; `Ok(stdout)` when it exits 0.
fn run_for(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs_f64()));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        Err(if err.is_empty() {
            out.status.to_string()
        } else {
            err
        })
    }
}

/// The first executable `name` on `PATH`.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn check_git(timeout: Duration) -> Check {
    let Some(git) = which("git") else {
        return Check::error(
            "git",
            "git is not on PATH",
            "install git (Debian/Ubuntu: apt-get install git); tasks from repositories need it",
        );
    };
    match run_for(&git, &["--version"], timeout) {
        Ok(v) => Check::ok("git", format!("{v} ({})", git.display())),
        Err(e) => Check::error(
            "git",
            format!("{} does not run: {e}", git.display()),
            "reinstall git",
        ),
    }
}

fn check_python(config: &Config) -> Check {
    let agent = match config.agent() {
        Ok(a) => a,
        Err(e) => return Check::error("python", e.to_string(), "fix the configuration"),
    };
    let requested = config
        .tree()
        .get_str("agent.default_python")
        .ok()
        .flatten()
        .filter(|s| !s.trim().is_empty());
    let what = requested
        .as_deref()
        .map_or("any Python 3".to_string(), |r| {
            format!("Python {r} (agent.default_python)")
        });
    match clearml_pyenv::find_python(requested.as_deref(), agent.python_binary.as_deref()) {
        Ok(found) if found.matches_request => Check::ok(
            "python",
            format!("{what}: {} {}", found.path.display(), found.version),
        ),
        Ok(found) => Check::warn(
            "python",
            format!(
                "{what} not found; tasks that ask for none use {} {}",
                found.path.display(),
                found.version
            ),
            "install that version (e.g. `uv python install`), or change agent.default_python",
        ),
        Err(e) => Check::error(
            "python",
            e.to_string(),
            "install Python 3 with venv (Debian/Ubuntu: apt-get install python3 python3-venv), or set agent.python_binary",
        ),
    }
}

fn check_uv(config: &Config, timeout: Duration) -> Check {
    let kind = config
        .agent()
        .map(|a| a.package_manager.kind.as_str())
        .unwrap_or("uv");
    let home = config.env().get("HOME").unwrap_or("/tmp");
    let tools_uv = Path::new(home).join(".clearml/tools/uv-venv/bin/uv");
    let from_env = std::env::var_os("CLEARML_BOOTSTRAP_UV_EXEC")
        .filter(|v| !v.is_empty())
        .map(|v| {
            let p = PathBuf::from(&v);
            if p.components().count() > 1 {
                Some(p)
            } else {
                which(&p.to_string_lossy())
            }
        });
    let candidate = match from_env {
        Some(Some(p)) => Some(p),
        Some(None) => {
            return Check::error(
                "uv",
                "CLEARML_BOOTSTRAP_UV_EXEC names no executable",
                "point it at a uv binary, or unset it",
            );
        }
        None => which("uv").or_else(|| tools_uv.is_file().then(|| tools_uv.clone())),
    };
    let used = if kind == "uv" {
        "the package manager"
    } else {
        "used for uv.lock projects"
    };
    match candidate.map(|p| (run_for(&p, &["--version"], timeout), p)) {
        Some((Ok(v), p)) => Check::ok("uv", format!("{v} ({}), {used}", p.display())),
        Some((Err(e), p)) => Check::warn(
            "uv",
            format!("{} does not run: {e}", p.display()),
            format!(
                "remove it; the agent then installs uv into {}",
                tools_uv.display()
            ),
        ),
        None => Check::warn(
            "uv",
            format!("uv is not installed ({used})"),
            format!(
                "nothing to do if PyPI is reachable: the first task makes a venv at {} and pip-installs uv into it (once, about 10 s); or `pip install uv` now",
                tools_uv.ancestors().nth(2).unwrap_or(&tools_uv).display()
            ),
        ),
    }
}

fn check_docker(config: &Config, requested: bool, timeout: Duration) -> Check {
    let image = config
        .agent()
        .map(|a| a.default_docker.image)
        .unwrap_or_default();
    let Some(docker) = which("docker") else {
        return if requested {
            Check::error(
                "docker",
                "docker is not on PATH",
                "install Docker Engine (Debian/Ubuntu: apt-get install docker.io)",
            )
        } else {
            Check::ok(
                "docker",
                "not checked: docker is not installed and docker mode was not asked for (--docker)",
            )
        };
    };
    let fail = |message: String, fix: &str| {
        if requested {
            Check::error("docker", message, fix)
        } else {
            Check::warn("docker", message, fix)
        }
    };
    let version = match run_for(
        &docker,
        &["version", "--format", "{{.Server.Version}}"],
        timeout,
    ) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                format!("the docker engine does not answer: {e}"),
                "start it (systemctl start docker) and make sure this user may use it (group docker)",
            );
        }
    };
    if image.is_empty() {
        return Check::ok(
            "docker",
            format!("engine {version} reachable; no agent.default_docker.image"),
        );
    }
    match run_for(
        &docker,
        &["image", "inspect", "--format", "{{.Id}}", &image],
        timeout,
    ) {
        Ok(_) => Check::ok(
            "docker",
            format!("engine {version} reachable; default image {image} is present"),
        ),
        Err(_) => Check::warn(
            "docker",
            format!("engine {version} reachable; default image {image} is not pulled yet"),
            format!("the first docker task pulls it; to do it now: docker pull {image}"),
        ),
    }
}

const GIB: u64 = 1024 * 1024 * 1024;
/// Below this, environments cannot be built.
const CRITICAL_FREE: u64 = 100 * 1024 * 1024;
/// Below this (with no policy of its own), a warning.
const LOW_FREE: u64 = 2 * GIB;

fn check_disk(config: &Config) -> Check {
    use clearml_cachepolicy::human_bytes;
    let (policy, dirs) = match clearml_cachepolicy::from_config(config) {
        Ok(p) => p,
        Err(e) => return Check::error("disk", e.to_string(), "fix the configuration"),
    };
    let status = clearml_cachepolicy::status(&dirs);
    let used = status.total_bytes();
    // The least free space of the file systems holding the caches (or the nearest existing
    // folder above a cache that is not created yet).
    let free = status
        .folders
        .iter()
        .filter_map(|f| {
            f.free_bytes.map(|b| (b, f.path.clone())).or_else(|| {
                f.path
                    .ancestors()
                    .find(|a| a.is_dir())
                    .and_then(|a| nix::sys::statvfs::statvfs(a).ok())
                    .map(|s| {
                        (
                            s.blocks_available().saturating_mul(s.fragment_size()),
                            f.path.clone(),
                        )
                    })
            })
        })
        .min_by_key(|(b, _)| *b);
    let Some((free, where_)) = free else {
        return Check::warn(
            "disk",
            "cannot read the free space of the cache folders",
            "check that the cache folders (clearml-agent cache status) are readable",
        );
    };
    let summary = format!(
        "caches hold {}, {} free at {}",
        human_bytes(used),
        human_bytes(free),
        where_.display()
    );
    if free < CRITICAL_FREE {
        return Check::error(
            "disk",
            summary,
            "free disk space: `clearml-agent cache prune`, or move agent.venvs_dir / sdk.storage.cache.default_base_dir",
        );
    }
    if let Some(min) = policy.min_free_bytes.filter(|m| free < *m) {
        return Check::warn(
            "disk",
            format!(
                "{summary}: below sdk.storage.cache.size.min_free_bytes ({})",
                human_bytes(min)
            ),
            "run `clearml-agent cache prune` (the daemon also prunes before each task)",
        );
    }
    if let Some(max) = policy.max_used_bytes.filter(|m| used > *m) {
        return Check::warn(
            "disk",
            format!(
                "{summary}: above sdk.storage.cache.size.max_used_bytes ({})",
                human_bytes(max)
            ),
            "run `clearml-agent cache prune` (the daemon also prunes before each task)",
        );
    }
    if policy.min_free_bytes.is_none() && free < LOW_FREE {
        return Check::warn(
            "disk",
            format!("{summary}: little room for virtual environments"),
            "free disk space, or set sdk.storage.cache.size.min_free_bytes so the caches make room",
        );
    }
    let limits = if policy.is_active() {
        "within the cache policy"
    } else {
        "no cache size policy"
    };
    Check::ok("disk", format!("{summary}; {limits}"))
}

fn check_gpu() -> Check {
    match nvml_wrapper::Nvml::init() {
        Err(e) => Check::ok(
            "gpu",
            format!("no NVIDIA GPU support (NVML: {e}); tasks run on the CPU"),
        ),
        Ok(nvml) => {
            let driver = nvml.sys_driver_version().unwrap_or_else(|_| "?".into());
            match nvml.device_count() {
                Ok(0) => Check::warn(
                    "gpu",
                    format!("NVIDIA driver {driver} but no GPU visible"),
                    "check `nvidia-smi`",
                ),
                Ok(n) => {
                    let names: Vec<String> = (0..n)
                        .map(|i| {
                            nvml.device_by_index(i)
                                .and_then(|d| d.name())
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect();
                    Check::ok(
                        "gpu",
                        format!("{n} GPU(s), driver {driver}: {}", names.join(", ")),
                    )
                }
                Err(e) => Check::warn(
                    "gpu",
                    format!("NVIDIA driver {driver}, but NVML cannot count GPUs: {e}"),
                    "check `nvidia-smi`; GPU statistics will be missing",
                ),
            }
        }
    }
}
