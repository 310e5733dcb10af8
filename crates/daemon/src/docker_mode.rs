//! Docker mode (`daemon --docker`, `execute --docker`): the task runs inside its container
//! image, with the same two processes as venv mode.
//!
//! The daemon starts `clearml-agent execute --disable-monitoring --id T` as usual, with the
//! docker request in [`MODE_ENV`]. That process (the host half, [`run_host_side`]) checks the
//! task's code out on the host through the vcs cache (so git credentials never enter the
//! container), picks the image (`clearml_docker::resolve_image`), makes sure it exists, writes
//! the inner configuration ([`crate::inner_config`]), and runs the container attached, printing
//! its output: the daemon ships that to the task's console exactly as in venv mode. In the
//! container the entry script runs the admin's and the task's setup scripts and then execs our
//! own binary, mounted read-only, as `execute --disable-monitoring` with the code marked ready
//! ([`CODE_ENV`]): it builds the environment with the image's Python and uv mounted from the
//! host, through the venv cache (store and builds share one mount so restores hardlink), and
//! becomes the task.
//!
//! Stopping: the host half catches SIGTERM/SIGINT (the daemon's abort or shutdown signals the
//! process group) and runs `docker stop -t <grace>` then `docker kill`; the daemon removes the
//! container by name afterwards in case the host half was killed first ([`DockerMode::
//! remove_container`]), and at startup removes containers labelled with its worker id that a
//! dead predecessor left, marking their tasks failed ([`cleanup_predecessors`]).
//!
//! `build --docker --target NAME` ([`build_in_docker`]) runs the same container without the
//! venvs mount, copies the code into it instead of mounting it, has the inner agent build the
//! environment into `/opt/clearml/env` and stop ([`BUILD_ENV`], [`inner_build`]), and commits
//! the container as `NAME` with [`PREBUILT_ENV`]/[`PREBUILT_TASK`] set, so a later run of that
//! task in `NAME` uses the environment as it is ([`prebuilt_env`]).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clearml_api::Client;
use clearml_config::Config;
use clearml_docker::{
    ContainerRequest, DockerCli, DockerError, Engine, EnvVar, GpuRequest, LABEL_TASK, LABEL_WORKER,
    Mount, SshSource, TaskContainer, container_name, paths,
};
use serde_json::{Value, json};

use crate::prepare::{self, Code, PrepareSettings};
use crate::task::ExecutionInfo;
use crate::{Console, DaemonError};

/// The docker request handed from the supervising process to the host half (JSON).
pub const MODE_ENV: &str = "CLEARML_AGENT_DOCKER_MODE";
/// Tells the inner agent the code is in place (JSON: root, script_dir, entry_point, commit).
pub const CODE_ENV: &str = "CLEARML_AGENT_CODE_READY";
/// The agent binary mounted into containers (see [`pick_binary`] for the order).
pub const BINARY_ENV: &str = clearml_docker::BINARY_ENV;
/// `build --docker`: the inner agent builds the environment here and stops (no task run).
pub const BUILD_ENV: &str = "CLEARML_AGENT_BUILD_ONLY";
/// Set in an image `build --docker` committed: the environment built into it ...
pub const PREBUILT_ENV: &str = "CLEARML_AGENT_PREBUILT_ENV";
/// ... and the task it was built for (only that task uses it).
pub const PREBUILT_TASK: &str = "CLEARML_AGENT_PREBUILT_TASK";
/// Where `build --docker` puts the environment in the image.
const BUILT_ENV_DIR: &str = "/opt/clearml/env";
/// Where `build --docker` mounts the host's code; it is copied into the image from there.
const CODE_SOURCE: &str = "/opt/clearml/code-src";
/// Where uv is mounted in the container.
const UV_BIN: &str = "/opt/clearml/bin/uv";
/// Where the task's code is mounted in the container.
const CODE_ROOT: &str = "/root/.clearml/task_repository";

/// `--docker [IMAGE [ARGS...]]`, `--podman`, `--gpus`, `--cpu-only`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DockerMode {
    /// The image and arguments given on the command line (may be empty).
    pub cli: Vec<String>,
    pub podman: bool,
    pub gpus: Option<String>,
    pub cpu_only: bool,
}

impl DockerMode {
    pub fn engine(&self) -> Engine {
        if self.podman {
            Engine::Podman
        } else {
            Engine::Docker
        }
    }

    fn to_json(&self) -> String {
        json!({"cli": self.cli, "podman": self.podman, "gpus": self.gpus, "cpu_only": self.cpu_only})
            .to_string()
    }

    fn from_json(s: &str) -> Result<DockerMode, DaemonError> {
        let v: Value = serde_json::from_str(s)
            .map_err(|e| DaemonError::Task(format!("{MODE_ENV} is not valid JSON: {e}")))?;
        Ok(DockerMode {
            cli: v["cli"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
            podman: v["podman"].as_bool().unwrap_or(false),
            gpus: v["gpus"].as_str().map(str::to_string),
            cpu_only: v["cpu_only"].as_bool().unwrap_or(false),
        })
    }

    /// The docker request of this process, when it is the host half of a docker task.
    pub fn from_env(config: &Config) -> Result<Option<DockerMode>, DaemonError> {
        match config.env().get(MODE_ENV).filter(|s| !s.is_empty()) {
            Some(s) => DockerMode::from_json(s).map(Some),
            None => Ok(None),
        }
    }

    /// Makes the task process `cmd` the host half of a docker task.
    pub(crate) fn apply(&self, cmd: &mut Command) {
        cmd.env(MODE_ENV, self.to_json());
    }

    /// Removes the task's container if anything is left of it (the host half may have been
    /// killed before it could stop it). Quiet when there is none.
    pub async fn remove_container(&self, task: &str) {
        // One call: `rm -f` kills a container that still runs.
        let cli = DockerCli::new(self.engine());
        let _ = cli.remove(&container_name(task), true).await;
    }
}

/// The environment folder when this process is the inner half of `build --docker`.
pub fn build_only(config: &Config) -> Option<PathBuf> {
    config
        .env()
        .get(BUILD_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

/// The environment `build --docker` built into this image for `task_id`, if any.
pub fn prebuilt_env(config: &Config, task_id: &str) -> Option<PathBuf> {
    let env = config.env();
    let dir = env.get(PREBUILT_ENV).filter(|s| !s.is_empty())?;
    (env.get(PREBUILT_TASK) == Some(task_id))
        .then(|| PathBuf::from(dir))
        .filter(|d| d.join("bin/python").exists())
}

/// The inner half of `build --docker`: the environment at [`build_only`]'s folder for the code
/// in place; the task is not touched and nothing runs.
pub async fn inner_build(
    config: &Config,
    wanted: &str,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    let target = build_only(config).unwrap_or_else(|| PathBuf::from(BUILT_ENV_DIR));
    let client = crate::execute::client_for(config, None)?;
    let task = crate::execute::resolve_task(&client, wanted).await?;
    let mut settings = PrepareSettings::from_config(config)?;
    if let Some(root) = config.env().get("CLEARML_AGENT_WORK_ROOT") {
        settings.work_root = PathBuf::from(root);
    }
    let opts = prepare::PrepareOptions {
        venv_target: Some(target.clone()),
        code_ready: code_from_env(config)?,
        ..prepare::PrepareOptions::default()
    };
    let progress = console.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepare::prepare(&task, &settings, &opts, progress.as_ref())
    })
    .await
    .map_err(|e| DaemonError::Task(format!("the build stopped: {e}")))?;
    match prepared {
        Ok(p) => {
            console.line(&format!(
                "Environment ready in {} (python {})",
                target.display(),
                p.python_version.as_deref().unwrap_or("-")
            ));
            Ok(0)
        }
        Err(e) => {
            console.line(&format!("clearml-agent: error: {e}"));
            Ok(1)
        }
    }
}

/// The code the inner agent finds in place, from [`CODE_ENV`].
pub fn code_from_env(config: &Config) -> Result<Option<Code>, DaemonError> {
    let Some(s) = config.env().get(CODE_ENV).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let v: Value = serde_json::from_str(s)
        .map_err(|e| DaemonError::Task(format!("{CODE_ENV} is not valid JSON: {e}")))?;
    let path = |k: &str| {
        v[k].as_str()
            .map(PathBuf::from)
            .ok_or_else(|| DaemonError::Task(format!("{CODE_ENV} has no {k}")))
    };
    Ok(Some(Code {
        root: path("root")?,
        script_dir: path("script_dir")?,
        entry_point: v["entry_point"].as_str().map(str::to_string),
        commit: v["commit"].as_str().map(str::to_string),
    }))
}

fn code_json(code: &Code) -> String {
    json!({
        "root": code.root.display().to_string(),
        "script_dir": code.script_dir.display().to_string(),
        "entry_point": code.entry_point,
        "commit": code.commit,
    })
    .to_string()
}

/// The host code translated to where it is mounted in the container.
fn container_code(code: &Code) -> Code {
    let name = code
        .root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "code".into());
    let root = PathBuf::from(CODE_ROOT).join(name);
    let rel = code
        .script_dir
        .strip_prefix(&code.root)
        .unwrap_or(Path::new(""));
    Code {
        script_dir: root.join(rel),
        root,
        entry_point: code.entry_point.clone(),
        commit: code.commit.clone(),
    }
}

/// Says `reason` in the console and marks `task` failed (`None`: `build --docker`, which leaves
/// the task alone).
async fn fail(client: &Client, task: Option<&str>, reason: &str, console: &dyn Console) -> i32 {
    console.line(&format!("clearml-agent: error: {reason}"));
    let Some(task) = task else {
        return 1;
    };
    let short: String = reason.chars().take(200).collect();
    let _ = client
        .call(
            "tasks.failed",
            json!({"task": task, "force": true, "status_reason": short}),
        )
        .await;
    1
}

/// The agent binary to mount into `image` and a console note when it is not the first
/// candidate, or the reason to fail the task. Candidates, in order: `explicit`
/// ([`BINARY_ENV`]), the running binary, `clearml-agent-portable` beside it, the output of
/// `scripts/build-portable`; the first whose glibc needs the image meets wins
/// (`clearml_docker::choose_binary`). The image's glibc is probed only when the first candidate
/// needs more than glibc 2.17, once per image id (`cache` file).
async fn pick_binary(
    cli: &DockerCli,
    explicit: Option<PathBuf>,
    image: &str,
    image_id: Option<&str>,
    cache: &Path,
) -> Result<(PathBuf, Option<String>), String> {
    let running = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("clearml-agent"));
    let paths = clearml_docker::candidate_paths(explicit.as_deref(), &running);
    let candidates: Vec<clearml_docker::BinaryCandidate> = tokio::task::spawn_blocking(move || {
        paths
            .into_iter()
            .map(|(p, origin)| clearml_docker::BinaryCandidate::read(p, origin))
            .collect()
    })
    .await
    .map_err(|e| format!("reading the agent binaries stopped: {e}"))?;
    let mut glibc = None;
    if clearml_docker::needs_probe(&candidates) {
        let mut known = clearml_docker::GlibcCache::load(cache);
        glibc = match image_id.and_then(|id| known.get(id)) {
            Some(v) => v,
            None => match cli.image_glibc(image).await {
                Ok(v) => {
                    if let Some(id) = image_id {
                        known.insert(id, v);
                        // A cache that cannot be written is probed again next time.
                        let _ = known.save(cache);
                    }
                    v
                }
                // Unknown: the first candidate is used; a failure then explains itself.
                Err(_) => None,
            },
        };
    }
    clearml_docker::choose_binary(&candidates, glibc, image).map(|(c, note)| (c.path.clone(), note))
}

/// SIGTERM or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The host half of a docker task (see the module doc). Returns the container's exit code.
pub async fn run_host_side(
    config: &Config,
    wanted: &str,
    mode: DockerMode,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    host_side(config, wanted, mode, None, console).await
}

/// `build --id T --docker [IMAGE] --target NAME`: the task's code and environment built inside
/// its image and committed as image `NAME`; a later docker run of the task in `NAME` installs
/// nothing. The task itself is not touched.
pub async fn build_in_docker(
    config: &Config,
    wanted: &str,
    mode: DockerMode,
    target: &str,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    host_side(config, wanted, mode, Some(target), console).await
}

async fn host_side(
    config: &Config,
    wanted: &str,
    mode: DockerMode,
    build: Option<&str>,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    let worker_id = crate::execute::execute_worker_id(config)?;
    let client = crate::execute::client_for(config, Some(worker_id.clone()))?;
    let task = crate::execute::resolve_task(&client, wanted).await?;
    let task_id = task
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let report = build.is_none().then_some(task_id.as_str());
    if build.is_none() {
        let _ = client
            .call(
                "tasks.started",
                json!({"task": task_id, "force": true, "status_reason": "worker started execution",
                   "status_message": format!("Changed by clearml-agent {worker_id}")}),
            )
            .await;
    }
    // Stopping the container once it runs is this process's job; before that a signal just
    // ends it (nothing was started yet).
    let mut settings = PrepareSettings::from_config(config)?;
    if let Some(root) = config.env().get("CLEARML_AGENT_WORK_ROOT") {
        settings.work_root = PathBuf::from(root);
    }
    let slot = settings
        .work_root
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "venvs".into());
    let info = match ExecutionInfo::from_task(&task) {
        Ok(i) => i,
        Err(e) => return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await),
    };

    // The image.
    let ds = config.docker()?;
    let container = match TaskContainer::from_json(task.get("container").unwrap_or(&Value::Null))
        .and_then(|c| clearml_docker::resolve_image(&mode.cli, &c, &ds))
    {
        Ok(c) => c,
        Err(e) => return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await),
    };
    if container.write_back && build.is_none() {
        let body = json!({"task": task_id, "force": true, "container": {
            "image": container.image,
            "arguments": shell_words::join(&container.arguments),
            "setup_shell_script": container.setup_shell_script.clone().unwrap_or_default(),
        }});
        if let Err(e) = client.call("tasks.edit", body).await {
            console.line(&format!(
                "Warning: could not store the docker image on the task: {e}"
            ));
        }
    }
    let cli = DockerCli::new(mode.engine());
    console.line(&format!("Using docker image: {}", container.image));
    // The image check and the GPU runtime question run side by side (each is a docker call).
    let gpus = GpuRequest::from_cli(mode.gpus.as_deref(), mode.cpu_only);
    let ask_nvidia = gpus != GpuRequest::None;
    let (ready, nvidia) = tokio::join!(cli.ensure_image(&container.image, ds.force_pull), async {
        ask_nvidia && cli.has_nvidia_runtime().await
    });
    let image_id = match ready {
        Ok(ready) => {
            ready.messages.iter().for_each(|m| console.line(m));
            if ready.pulled {
                console.line(&format!("Pulled {}", container.image));
            }
            ready.id
        }
        Err(DockerError::MissingImage { image, message }) => {
            let reason = format!("docker image {image} is not available: {message}");
            return Ok(fail(&client, report, &reason, console.as_ref()).await);
        }
        Err(e) => return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await),
    };

    // The code, on the host.
    let (info2, s2, progress) = (info.clone(), settings, console.clone());
    let code = tokio::task::spawn_blocking(move || {
        let r = prepare::prepare_code(&info2, &s2, progress.as_ref());
        (r, s2)
    })
    .await
    .map_err(|e| DaemonError::Task(format!("the preparation stopped: {e}")))?;
    let (code, settings) = match code {
        (Ok(c), s) => (c, s),
        (Err(e), _) => {
            return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await);
        }
    };
    let inner_code = container_code(&code);

    // Host files for the container.
    let home = PathBuf::from(config.env().get("HOME").unwrap_or("/tmp"));
    let private = settings.work_root.join(".docker");
    let conf_file = private.join("clearml.conf");
    // Run as the task's owner (`daemon --use-owner-token`): the owner's token, not our keys.
    let owner_token = crate::owner::token_from_env();
    let text = match owner_token {
        Some(_) => crate::inner_config::inner_config_text_without_keys(config)?,
        None => crate::inner_config::inner_config_text(config)?,
    };
    std::fs::create_dir_all(&private).map_err(|source| DaemonError::Io {
        what: format!("cannot create {}", private.display()),
        source,
    })?;
    clearml_docker::write_private_file(&conf_file, text.as_bytes())
        .map_err(|e| DaemonError::Task(e.to_string()))?;
    let ssh = if ds.disable_ssh_mount {
        SshSource::None
    } else if let Some(sock) = config
        .env()
        .get("SSH_AUTH_SOCK")
        .map(PathBuf::from)
        .filter(|p| p.exists())
    {
        SshSource::AgentSocket(sock)
    } else {
        let dest = private.join("ssh");
        match clearml_docker::copy_ssh_dir(&home.join(".ssh"), &dest) {
            Ok(true) => SshSource::Copy(dest),
            _ => SshSource::None,
        }
    };
    let explicit = config
        .env()
        .get(BINARY_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from);
    let agent_binary = match pick_binary(
        &cli,
        explicit,
        &container.image,
        image_id.as_deref(),
        &private.join("image-glibc.json"),
    )
    .await
    {
        Ok((path, note)) => {
            if let Some(n) = note {
                console.line(&n);
            }
            path
        }
        Err(reason) => return Ok(fail(&client, report, &reason, console.as_ref()).await),
    };
    let uv = {
        let tools = settings.tools_dir.clone();
        tokio::task::spawn_blocking(move || {
            clearml_pyenv::find_uv(&tools, Path::new("python3"), &clearml_pyenv::NullReporter)
                .ok()
                .and_then(|p| std::fs::canonicalize(p).ok())
        })
        .await
        .ok()
        .flatten()
    };
    let api = config.api()?;
    let mut env = vec![
        EnvVar::new(CODE_ENV, code_json(&inner_code)),
        EnvVar::new(
            "CLEARML_AGENT_WORK_ROOT",
            format!("{}/{slot}", paths::VENV_BUILDS),
        ),
    ];
    if uv.is_some() {
        env.push(EnvVar::new("CLEARML_BOOTSTRAP_UV_EXEC", UV_BIN));
    }
    if let Some(t) = &owner_token {
        env.push(EnvVar::secret(clearml_api::AUTH_TOKEN_VAR, t));
    }
    let inner_execute = vec![
        paths::AGENT_BIN.to_string(),
        "execute".into(),
        "--disable-monitoring".into(),
        "--id".into(),
        task_id.clone(),
    ];
    // A build copies the code into the image (a mount would not be committed).
    let (code_mount, execute) = match build {
        None => (
            Mount::new(&code.root, inner_code.root.display().to_string(), false),
            inner_execute,
        ),
        Some(_) => {
            env.push(EnvVar::new(BUILD_ENV, BUILT_ENV_DIR));
            let root = inner_code.root.display().to_string();
            let line = format!(
                "mkdir -p {r} && cp -a {src}/. {r}/ && cd {w} && exec {cmd}",
                r = shell_words::quote(&root),
                src = CODE_SOURCE,
                w = shell_words::quote(&inner_code.script_dir.display().to_string()),
                cmd = shell_words::join(&inner_execute),
            );
            (
                Mount::new(&code.root, CODE_SOURCE, true),
                vec!["/bin/sh".into(), "-c".into(), line],
            )
        }
    };
    let lookup = |k: &str| std::env::var(k).ok();
    let request = ContainerRequest {
        settings: &ds,
        engine: mode.engine(),
        worker_id: &worker_id,
        task_id: &task_id,
        choice: &container,
        gpus,
        nvidia_runtime: nvidia,
        agent_binary,
        config_file: conf_file,
        code: Some(code_mount),
        workdir: Some(inner_code.script_dir.display().to_string()),
        uv_cache: Some(settings.uv_cache_dir.clone()),
        venvs: build
            .is_none()
            .then(|| home.join(".clearml").join("docker-venvs")),
        ssh,
        server_urls: [api.api_server, api.files_server, api.web_server]
            .into_iter()
            .flatten()
            .collect(),
        env,
        execute,
        lookup: &lookup,
        require_glibc: true,
    };
    let mut plan = match clearml_docker::plan_container(&request) {
        Ok(p) => p,
        Err(e) => return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await),
    };
    if let Some(uv) = uv {
        plan.spec.mounts.push(Mount::new(uv, UV_BIN, true));
        plan.printable = plan.spec.printable(&ds.hide_env);
    }
    if build.is_some() {
        plan.spec.remove = false;
        plan.printable = plan.spec.printable(&ds.hide_env);
        let _ = cli.remove(&container_name(&task_id), true).await;
    }
    plan.messages.iter().for_each(|m| console.line(m));
    console.line(&format!("Starting container: {}", plan.printable));

    let grace = crate::settings::DaemonSettings::from_config(config, None)
        .map(|s| s.monitor.kill_grace)
        .unwrap_or(Duration::from_secs(3))
        .saturating_sub(Duration::from_secs(1));
    let mut tail: Vec<String> = Vec::new();
    let out = console.clone();
    let mut on_line = |_s: clearml_docker::Stream, line: &str| {
        out.line(line);
        if tail.len() >= 200 {
            tail.remove(0);
        }
        tail.push(line.to_string());
    };
    let outcome = cli
        .run_attached(&plan.spec, &mut on_line, terminated(), grace)
        .await;
    if let Some(target) = build {
        let name = container_name(&task_id);
        let code = match outcome {
            Ok(o) if o.exit_code == Some(0) => {
                // `docker commit` keeps the build's `-e` variables in the image: blank them.
                let mut names: Vec<String> = plan.spec.env.iter().map(|e| e.name.clone()).collect();
                let mut args = plan.spec.args.iter();
                while let Some(a) = args.next() {
                    let value = match a.as_str() {
                        "-e" | "--env" => args.next().cloned(),
                        other => other.strip_prefix("--env=").map(str::to_string),
                    };
                    if let Some(v) = value {
                        names.push(v.split('=').next().unwrap_or_default().to_string());
                    }
                }
                let mut changes: Vec<String> = names
                    .into_iter()
                    .filter(|n| {
                        !n.is_empty() && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    })
                    .map(|n| format!("ENV {n}="))
                    .collect();
                changes.push(format!("ENV {PREBUILT_ENV}={BUILT_ENV_DIR}"));
                changes.push(format!("ENV {PREBUILT_TASK}={task_id}"));
                match cli.commit(&name, target, &changes).await {
                    Ok(id) => {
                        console.line(&format!("Committed image {target} ({id})"));
                        0
                    }
                    Err(e) => {
                        console.line(&format!("clearml-agent: error: docker commit failed: {e}"));
                        1
                    }
                }
            }
            Ok(o) => o.exit_code.unwrap_or(1),
            Err(e) => {
                console.line(&format!("clearml-agent: error: {e}"));
                1
            }
        };
        let _ = cli.remove(&name, true).await;
        return Ok(code);
    }
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => return Ok(fail(&client, report, &e.to_string(), console.as_ref()).await),
    };
    if outcome.stopped {
        console.line("The container was stopped");
        return Ok(254);
    }
    let code = outcome.exit_code.unwrap_or(1);
    if code != 0
        && let Some(why) =
            clearml_docker::diagnose_failure(code, &tail.join("\n"), &container.image)
    {
        console.line(&format!("clearml-agent: error: {why}"));
    }
    Ok(code)
}

/// Containers labelled with `worker_id` that a dead predecessor left: removed, and their
/// tasks (still running on the server) marked failed.
pub async fn cleanup_predecessors(
    client: &Client,
    mode: &DockerMode,
    worker_id: &str,
    console: &dyn Console,
) {
    let cli = DockerCli::new(mode.engine());
    let found = match cli.list_by_label(LABEL_WORKER, worker_id).await {
        Ok(f) => f,
        Err(e) => {
            console.line(&format!(
                "Warning: cannot list containers of worker {worker_id}: {e}"
            ));
            return;
        }
    };
    for c in found {
        console.line(&format!(
            "Removing container {} ({}) left by an earlier agent of worker {worker_id}",
            c.name, c.state
        ));
        let _ = cli.remove(&c.id, true).await;
        if let Some(task) = c.labels.get(LABEL_TASK) {
            let status = client
                .call("tasks.get_by_id", json!({"task": task}))
                .await
                .ok()
                .and_then(|r| r["task"]["status"].as_str().map(str::to_string));
            if matches!(status.as_deref(), Some("in_progress" | "queued")) {
                let _ = client
                    .call(
                        "tasks.failed",
                        json!({"task": task, "force": true,
                               "status_reason": "the agent running it ended unexpectedly (its container was removed)"}),
                    )
                    .await;
                console.line(&format!("Task {task} marked failed"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_round_trips() {
        let m = DockerMode {
            cli: vec!["img:1".into(), "-e".into(), "A=b c".into()],
            podman: true,
            gpus: Some("0,1".into()),
            cpu_only: false,
        };
        assert_eq!(DockerMode::from_json(&m.to_json()).expect("json"), m);
        assert!(DockerMode::from_json("{").is_err());
    }

    #[test]
    fn code_moves_under_the_container_root() {
        let host = Code {
            root: PathBuf::from("/h/venvs/task_repository/proj"),
            script_dir: PathBuf::from("/h/venvs/task_repository/proj/sub"),
            entry_point: Some("main.py".into()),
            commit: Some("abc".into()),
        };
        let c = container_code(&host);
        assert_eq!(c.root, Path::new("/root/.clearml/task_repository/proj"));
        assert_eq!(
            c.script_dir,
            Path::new("/root/.clearml/task_repository/proj/sub")
        );
        assert_eq!(c.entry_point.as_deref(), Some("main.py"));
    }
}
