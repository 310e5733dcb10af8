//! The `docker run` command for one task: mounts, environment, labels, name, network.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use clearml_config::{DockerSettings, HideDockerEnv, mask_docker_args, mask_url_passwords};

use crate::error::DockerError;
use crate::gpus::{GpuRequest, gpu_args};
use crate::resolve::{ImageChoice, merge_arguments};
use crate::script::EntryScript;
use crate::{Engine, args};

/// Where things are mounted in the container.
pub mod paths {
    /// The agent binary (read-only).
    pub const AGENT_BIN: &str = "/opt/clearml/bin/clearml-agent";
    /// The configuration copy for the inner agent (read-only); `CLEARML_CONFIG_FILE`.
    pub const CONFIG: &str = "/opt/clearml/clearml.conf";
    /// The read-only copy of `~/.ssh`; the entry script copies it into `~/.ssh`.
    pub const SSH_COPY: &str = "/opt/clearml/ssh";
    pub const PIP_CACHE: &str = "/root/.cache/pip";
    pub const APT_CACHE: &str = "/var/cache/apt/archives";
    /// uv's cache; `UV_CACHE_DIR` points here.
    pub const UV_CACHE: &str = "/root/.cache/uv";
    /// One mount holding both the venv builds and the venv cache store, so that restoring a
    /// cached venv by hardlink works (a hardlink cannot cross two bind mounts, even of one
    /// host filesystem). The inner agent's `agent.venvs_dir` and `agent.venvs_cache.path` must
    /// both lie under it, e.g. [`VENV_BUILDS`] and [`VENV_CACHE`].
    pub const VENVS: &str = "/root/.clearml/venvs";
    pub const VENV_BUILDS: &str = "/root/.clearml/venvs/builds";
    pub const VENV_CACHE: &str = "/root/.clearml/venvs/cache";
}

/// Label holding the worker id of the agent that started a container.
pub const LABEL_WORKER: &str = "clearml-worker-id";
/// Label holding the task id a container runs.
pub const LABEL_TASK: &str = "clearml-task-id";

/// A bind mount.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: String,
    pub read_only: bool,
}

impl Mount {
    pub fn new(host: impl Into<PathBuf>, container: impl Into<String>, read_only: bool) -> Self {
        Mount {
            host: host.into(),
            container: container.into(),
            read_only,
        }
    }

    fn arg(&self) -> String {
        let ro = if self.read_only { ":ro" } else { "" };
        format!("{}:{}{ro}", self.host.display(), self.container)
    }
}

/// An environment variable for the container. A secret one is passed as `-e NAME` with the
/// value in the docker client's own environment, so it is neither in the command line (nor
/// `ps`) nor in the printed command.
#[derive(Clone, Debug, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

impl EnvVar {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: value.into(),
            secret: false,
        }
    }

    pub fn secret(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: value.into(),
            secret: true,
        }
    }
}

/// One `docker run`. [`RunSpec::argv`] is the command line after the program name.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSpec {
    pub engine: Engine,
    pub image: String,
    pub name: Option<String>,
    pub labels: Vec<(String, String)>,
    pub env: Vec<EnvVar>,
    pub mounts: Vec<Mount>,
    pub gpu_args: Vec<String>,
    /// The merged user and agent arguments ([`merge_arguments`]).
    pub args: Vec<String>,
    /// Add `--network host`.
    pub network_host: bool,
    pub workdir: Option<String>,
    /// `--rm`.
    pub remove: bool,
    /// The command after the image.
    pub command: Vec<String>,
}

impl RunSpec {
    pub fn new(engine: Engine, image: impl Into<String>) -> Self {
        RunSpec {
            engine,
            image: image.into(),
            name: None,
            labels: Vec::new(),
            env: Vec::new(),
            mounts: Vec::new(),
            gpu_args: Vec::new(),
            args: Vec::new(),
            network_host: false,
            workdir: None,
            remove: true,
            command: Vec::new(),
        }
    }

    /// `run [--rm] GPU ARGS [podman's --ulimit] -l.. --name --network -e.. -v.. -w IMAGE
    /// COMMAND`.
    pub fn argv(&self) -> Vec<String> {
        self.argv_with(false)
    }

    /// `run -d ...`.
    pub fn argv_detached(&self) -> Vec<String> {
        self.argv_with(true)
    }

    fn argv_with(&self, detached: bool) -> Vec<String> {
        let mut a = vec!["run".to_string()];
        if detached {
            a.push("-d".into());
        }
        if self.remove {
            a.push("--rm".into());
        }
        a.extend(self.gpu_args.iter().cloned());
        a.extend(self.args.iter().cloned());
        if self.engine == Engine::Podman {
            a.extend(crate::podman::own_ulimit_args(&self.args));
        }
        for (k, v) in &self.labels {
            a.push("-l".into());
            a.push(format!("{k}={v}"));
        }
        if let Some(n) = &self.name {
            a.push("--name".into());
            a.push(n.clone());
        }
        if self.network_host {
            a.push("--network".into());
            a.push("host".into());
        }
        for e in &self.env {
            a.push("-e".into());
            a.push(if e.secret {
                e.name.clone()
            } else {
                format!("{}={}", e.name, e.value)
            });
        }
        for m in &self.mounts {
            a.push("-v".into());
            a.push(m.arg());
        }
        if let Some(w) = &self.workdir {
            a.push("-w".into());
            a.push(w.clone());
        }
        a.push(self.image.clone());
        a.extend(self.command.iter().cloned());
        a
    }

    /// The variables to set in the docker client's environment (the secret ones).
    pub fn client_env(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .filter(|e| e.secret)
            .map(|e| (e.name.clone(), e.value.clone()))
            .collect()
    }

    /// The command line as a shell would read it, with secrets hidden as the
    /// `agent.hide_docker_command_env_vars` settings say (see [`hide_secrets`]).
    pub fn printable(&self, hide: &HideDockerEnv) -> String {
        let mut argv = vec![self.engine.program().to_string()];
        argv.extend(hide_secrets(&self.argv(), hide));
        shell_words::join(argv)
    }
}

/// Variable names whose `-e NAME=value` values are always hidden when printing.
const SECRET_NAMES: &[&str] = &[
    "CLEARML_AGENT_GIT_PASS",
    "TRAINS_AGENT_GIT_PASS",
    "CLEARML_API_SECRET_KEY",
    "TRAINS_API_SECRET_KEY",
    "CLEARML_API_ACCESS_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AZURE_STORAGE_KEY",
    "CLEARML_AUTH_TOKEN",
];

/// `args` with the values of secret `-e NAME=value` arguments replaced by `********`: the
/// well-known names, `hide.extra_keys`, and any name containing `SECRET`, `PASSWORD`, `PASSWD`
/// or `TOKEN`. URL passwords are hidden when `hide.parse_embedded_urls`. Nothing is hidden when
/// `hide.enabled` is false.
pub fn hide_secrets(args: &[String], hide: &HideDockerEnv) -> Vec<String> {
    if !hide.enabled {
        return args.to_vec();
    }
    let mut names: Vec<String> = SECRET_NAMES.iter().map(|s| s.to_string()).collect();
    names.extend(hide.extra_keys.iter().cloned());
    for a in args {
        if let Some((n, _)) = a.trim_start_matches("--env=").split_once('=') {
            let up = n.to_ascii_uppercase();
            if ["SECRET", "PASSWORD", "PASSWD", "TOKEN"]
                .iter()
                .any(|w| up.contains(w))
            {
                names.push(n.to_string());
            }
        }
    }
    let masked = mask_docker_args(args, &names);
    if hide.parse_embedded_urls {
        masked
    } else {
        // mask_docker_args also hides URL passwords; put the originals back where only that changed.
        masked
            .into_iter()
            .zip(args)
            .map(|(m, a)| {
                if mask_url_passwords(a) == m {
                    a.clone()
                } else {
                    m
                }
            })
            .collect()
    }
}

/// How `~/.ssh` reaches the container.
#[derive(Clone, Debug, PartialEq)]
pub enum SshSource {
    None,
    /// The ssh agent's socket (`SSH_AUTH_SOCK`), mounted at the same path.
    AgentSocket(PathBuf),
    /// A private copy of `~/.ssh` made by [`copy_ssh_dir`], mounted read-only.
    Copy(PathBuf),
}

/// Everything needed to plan one task's container.
pub struct ContainerRequest<'a> {
    pub settings: &'a DockerSettings,
    pub engine: Engine,
    pub worker_id: &'a str,
    pub task_id: &'a str,
    pub choice: &'a ImageChoice,
    pub gpus: GpuRequest,
    /// From [`crate::DockerCli::has_nvidia_runtime`].
    pub nvidia_runtime: bool,
    /// The host path of the agent binary to mount (built for old glibc).
    pub agent_binary: PathBuf,
    /// The host path of the inner agent's configuration (see [`write_private_file`]).
    pub config_file: PathBuf,
    /// The task's code checked out on the host, and the container folder it is mounted at.
    pub code: Option<Mount>,
    /// The working folder in the container (usually the code mount's path).
    pub workdir: Option<String>,
    /// The host's uv cache, mounted at [`paths::UV_CACHE`].
    pub uv_cache: Option<PathBuf>,
    /// One host folder for venv builds and the venv cache store, mounted at [`paths::VENVS`].
    pub venvs: Option<PathBuf>,
    pub ssh: SshSource,
    /// The API and files server URLs; a loopback one makes the container use the host network.
    pub server_urls: Vec<String>,
    /// More variables (the caller's secrets are best passed with [`EnvVar::secret`]).
    pub env: Vec<EnvVar>,
    /// The command the entry script execs, e.g. `[paths::AGENT_BIN, "execute", "--id", T]`.
    pub execute: Vec<String>,
    /// The host environment, for `$VAR` expansion.
    pub lookup: &'a dyn Fn(&str) -> Option<String>,
    /// Refuse images without glibc's loader with a clear message (true for the glibc agent).
    pub require_glibc: bool,
}

/// The planned container and what to tell the task's console about it.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerPlan {
    pub spec: RunSpec,
    /// Lines for the task's console (forbidden arguments, network host, GPUs).
    pub messages: Vec<String>,
    /// The command line to print, secrets hidden.
    pub printable: String,
}

/// The container name for a task: `clearml-id-<task id>`, with characters docker refuses in a
/// name replaced by `-`.
pub fn container_name(task_id: &str) -> String {
    let clean: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("clearml-id-{clean}")
}

/// Whether a server URL points at this host's loopback.
pub fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(v6) = host_port.strip_prefix('[') {
        v6.split(']').next().unwrap_or(v6)
    } else {
        host_port.split(':').next().unwrap_or(host_port)
    };
    let host = host.to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Plans the task's container. Host folders for the caches are created here (docker would
/// otherwise create them owned by root).
pub fn plan_container(req: &ContainerRequest<'_>) -> Result<ContainerPlan, DockerError> {
    let s = req.settings;
    let merged = merge_arguments(req.choice, s, req.lookup)?;
    let mut messages = merged.messages;
    let mut spec = RunSpec::new(req.engine, &req.choice.image);
    spec.args = merged.args;

    let gpu = gpu_args(&req.gpus, req.engine, req.nvidia_runtime, s.skip_gpus_flag);
    spec.gpu_args = gpu.args;
    if let Some(n) = gpu.note {
        messages.push(n);
    }

    spec.labels = vec![
        (LABEL_WORKER.into(), req.worker_id.into()),
        (LABEL_TASK.into(), req.task_id.into()),
    ];
    for l in &s.extra_labels {
        let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
        spec.labels.push((k.into(), v.into()));
    }
    if !args::has_switch(&spec.args, &["name"]) {
        spec.name = Some(container_name(req.task_id));
    }

    if !args::has_switch(&spec.args, &["network"])
        && let Some(url) = req.server_urls.iter().find(|u| is_loopback_url(u))
    {
        spec.network_host = true;
        messages.push(format!(
            "the server is on a loopback address ({url}): the container uses the host's network (--network host)"
        ));
    }

    spec.env = vec![
        EnvVar::new("CLEARML_WORKER_ID", req.worker_id),
        EnvVar::new("CLEARML_TASK_ID", req.task_id),
        EnvVar::new("CLEARML_DOCKER_IMAGE", &req.choice.image),
        EnvVar::new("CLEARML_CONFIG_FILE", paths::CONFIG),
        // Without a terminal Python would buffer the task's prints; the console wants them live.
        EnvVar::new("PYTHONUNBUFFERED", "1"),
    ];
    if let Some(v) = gpu.visible_devices {
        spec.env.push(EnvVar::new("NVIDIA_VISIBLE_DEVICES", v));
    }
    if req.uv_cache.is_some() {
        spec.env.push(EnvVar::new("UV_CACHE_DIR", paths::UV_CACHE));
    }
    spec.env.extend(req.env.iter().cloned());

    let mkdir = |p: &Path| -> Result<(), DockerError> {
        std::fs::create_dir_all(p).map_err(|source| DockerError::Io {
            path: p.to_path_buf(),
            source,
        })
    };
    // `-v` would turn a missing file into an empty folder owned by root: check first.
    for f in [&req.agent_binary, &req.config_file] {
        if !f.is_file() {
            return Err(DockerError::Io {
                path: f.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
    }
    let mut mounts = vec![
        Mount::new(&req.agent_binary, paths::AGENT_BIN, true),
        Mount::new(&req.config_file, paths::CONFIG, true),
    ];
    for (host, container) in [
        (Some(&s.pip_cache), paths::PIP_CACHE),
        (Some(&s.apt_cache), paths::APT_CACHE),
        (req.uv_cache.as_ref(), paths::UV_CACHE),
        (req.venvs.as_ref(), paths::VENVS),
    ] {
        if let Some(h) = host {
            mkdir(h)?;
            mounts.push(Mount::new(h, container, false));
        }
    }
    let mut ssh_copy_from = None;
    match &req.ssh {
        SshSource::None => {}
        SshSource::AgentSocket(sock) => {
            let p = sock.display().to_string();
            mounts.push(Mount::new(sock, p.clone(), false));
            spec.env.push(EnvVar::new("SSH_AUTH_SOCK", p));
        }
        SshSource::Copy(dir) => {
            mounts.push(Mount::new(dir, paths::SSH_COPY, true));
            ssh_copy_from = Some(paths::SSH_COPY.to_string());
        }
    }
    if let Some(code) = &req.code {
        mounts.push(code.clone());
    }
    spec.mounts = mounts;
    spec.workdir = req.workdir.clone();

    let script = EntryScript {
        preprocess: s.docker_preprocess_bash_script.clone(),
        init: s.docker_init_bash_script.clone(),
        ssh_copy_from,
        extra: s.extra_docker_shell_script.clone(),
        task_setup: req.choice.setup_shell_script.clone(),
        require_glibc: req.require_glibc,
    };
    spec.command = script.command(&req.execute);
    let printable = spec.printable(&s.hide_env);
    Ok(ContainerPlan {
        spec,
        messages,
        printable,
    })
}

/// Writes `contents` to `path` readable by its owner only (0600), replacing any older file.
pub fn write_private_file(path: &Path, contents: &[u8]) -> Result<(), DockerError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| DockerError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents).map_err(io)
}

/// Copies the files of `ssh_dir` (not following links out of it) into `dest` (made 0700, files
/// 0600), for a read-only mount: the container never sees, nor changes, the user's own folder.
/// Returns `Ok(false)` when `ssh_dir` does not exist.
pub fn copy_ssh_dir(ssh_dir: &Path, dest: &Path) -> Result<bool, DockerError> {
    use std::os::unix::fs::PermissionsExt;
    if !ssh_dir.is_dir() {
        return Ok(false);
    }
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| DockerError::Io { path: p, source }
    };
    std::fs::create_dir_all(dest).map_err(io(dest))?;
    std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o700)).map_err(io(dest))?;
    for entry in std::fs::read_dir(ssh_dir).map_err(io(ssh_dir))? {
        let entry = entry.map_err(io(ssh_dir))?;
        let from = entry.path();
        // Sockets, folders and dangling links are skipped; file links are followed.
        if !from.is_file() {
            continue;
        }
        let to = dest.join(entry.file_name());
        let data = std::fs::read(&from).map_err(io(&from))?;
        write_private_file(&to, &data)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::ImageSource;

    fn settings() -> DockerSettings {
        let dir = std::env::temp_dir();
        DockerSettings {
            default_image: "img".into(),
            default_arguments: vec![],
            update_back_task: true,
            env_image: None,
            disable_task_docker_override: false,
            extra_docker_arguments: vec!["-e".into(), "CERT=$PIP_CERT".into()],
            extra_docker_shell_script: vec!["echo extra".into()],
            docker_init_bash_script: vec![],
            docker_preprocess_bash_script: vec![],
            extra_precedes_task: true,
            protected_docker_extra_args: vec!["network".into()],
            docker_args_filters: vec![],
            forbidden_docker_args: vec!["entrypoint".into()],
            allow_host_environ: false,
            force_pull: false,
            pip_cache: dir.join("clearml-docker-unit-pip"),
            apt_cache: dir.join("clearml-docker-unit-apt"),
            hide_env: HideDockerEnv {
                enabled: true,
                extra_keys: vec!["MY_KEY".into()],
                parse_embedded_urls: true,
            },
            skip_gpus_flag: false,
            disable_ssh_mount: false,
            extra_labels: vec![],
        }
    }

    /// An agent binary and a config file that exist.
    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().expect("tmp");
        let (a, c) = (d.path().join("agent"), d.path().join("c.conf"));
        std::fs::write(&a, "").expect("agent");
        write_private_file(&c, b"").expect("conf");
        (d, a, c)
    }

    fn choice(args: &[&str]) -> ImageChoice {
        ImageChoice {
            image: "python:3".into(),
            arguments: args.iter().map(|s| s.to_string()).collect(),
            source: ImageSource::Task,
            setup_shell_script: Some("echo setup".into()),
            write_back: false,
        }
    }

    #[test]
    fn the_plan_has_labels_env_mounts_and_host_network() {
        let s = settings();
        let c = choice(&[
            "-e",
            "MY_KEY=hunter2",
            "--entrypoint",
            "x",
            "-e",
            "DB_PASSWORD=pw",
        ]);
        let look = |n: &str| (n == "PIP_CERT").then(|| "/etc/ca.crt".to_string());
        let (_d, agent, conf) = files();
        let req = ContainerRequest {
            settings: &s,
            engine: Engine::Docker,
            worker_id: "host:0",
            task_id: "abc123",
            choice: &c,
            gpus: GpuRequest::Default,
            nvidia_runtime: false,
            agent_binary: agent.clone(),
            config_file: conf,
            code: Some(Mount::new("/tmp/code", "/root/code", false)),
            workdir: Some("/root/code".into()),
            uv_cache: None,
            venvs: None,
            ssh: SshSource::None,
            server_urls: vec!["http://127.0.0.1:8008".into()],
            env: vec![EnvVar::secret("CLEARML_API_SECRET_KEY", "s3cr3t")],
            execute: vec![paths::AGENT_BIN.into(), "execute".into()],
            lookup: &look,
            require_glibc: true,
        };
        let plan = plan_container(&req).expect("plan");
        let argv = plan.spec.argv();
        let has_pair = |a: &str, b: &str| argv.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(has_pair("-l", "clearml-worker-id=host:0"), "{argv:?}");
        assert!(has_pair("-l", "clearml-task-id=abc123"));
        assert!(has_pair("--name", "clearml-id-abc123"));
        assert!(has_pair("--network", "host"));
        assert!(has_pair("-e", "CERT=/etc/ca.crt"));
        assert!(has_pair("-e", "CLEARML_TASK_ID=abc123"));
        assert!(has_pair(
            "-e",
            "CLEARML_CONFIG_FILE=/opt/clearml/clearml.conf"
        ));
        assert!(has_pair("-e", "CLEARML_API_SECRET_KEY"));
        assert!(has_pair(
            "-v",
            &format!("{}:/opt/clearml/bin/clearml-agent:ro", agent.display())
        ));
        assert!(has_pair("-e", "PYTHONUNBUFFERED=1"));
        assert!(has_pair("-v", "/tmp/code:/root/code"));
        assert!(has_pair("-w", "/root/code"));
        assert!(!argv.iter().any(|a| a.contains("entrypoint")));
        assert!(!argv.iter().any(|a| a == "--gpus"));
        assert!(plan.messages.iter().any(|m| m.contains("--entrypoint")));
        assert!(plan.messages.iter().any(|m| m.contains("--network host")));
        assert!(!argv.iter().any(|a| a.contains("s3cr3t")));
        assert!(!plan.printable.contains("hunter2"), "{}", plan.printable);
        assert!(!plan.printable.contains("=pw"), "{}", plan.printable);
        assert!(plan.printable.contains("MY_KEY=********"));
        assert_eq!(
            plan.spec.client_env(),
            [("CLEARML_API_SECRET_KEY".into(), "s3cr3t".into())]
        );
    }

    #[test]
    fn gpu_switches_come_first_and_podman_uses_its_program() {
        let s = settings();
        let c = choice(&["--network=bridge"]);
        let look = |_: &str| None;
        let (_d, agent, conf) = files();
        let mut req = ContainerRequest {
            settings: &s,
            engine: Engine::Docker,
            worker_id: "w",
            task_id: "t",
            choice: &c,
            gpus: GpuRequest::from_cli(Some("0,1"), false),
            nvidia_runtime: true,
            agent_binary: agent,
            config_file: conf.clone(),
            code: None,
            workdir: None,
            uv_cache: None,
            venvs: None,
            ssh: SshSource::None,
            server_urls: vec!["http://localhost:8008".into()],
            env: vec![],
            execute: vec![],
            lookup: &look,
            require_glibc: false,
        };
        let plan = plan_container(&req).expect("plan");
        let argv = plan.spec.argv();
        assert_eq!(argv[..4], ["run", "--rm", "--gpus", "\"device=0,1\""]);
        assert!(
            argv.windows(2)
                .any(|w| w == ["-e", "NVIDIA_VISIBLE_DEVICES=all"])
        );
        // The user chose a network: no --network host.
        assert!(!plan.spec.network_host);
        assert!(plan.printable.starts_with("docker run"));
        req.engine = Engine::Podman;
        req.gpus = GpuRequest::from_cli(None, true);
        let plan = plan_container(&req).expect("plan");
        assert!(plan.printable.starts_with("podman run"));
        assert!(!plan.spec.argv().iter().any(|a| a == "--gpus"));
        // Podman gets this process's limits (its own defaults need CAP_SYS_RESOURCE).
        assert!(
            plan.spec
                .argv()
                .windows(2)
                .any(|w| w[0] == "--ulimit" && w[1].starts_with("nofile="))
        );
        assert!(!plan_docker_has_ulimit(&req));
        assert!(
            plan.spec
                .argv()
                .windows(2)
                .any(|w| w == ["-e", "NVIDIA_VISIBLE_DEVICES=none"])
        );
    }

    fn plan_docker_has_ulimit(req: &ContainerRequest<'_>) -> bool {
        let mut spec = plan_container(req).expect("plan").spec;
        spec.engine = Engine::Docker;
        spec.argv().iter().any(|a| a == "--ulimit")
    }

    #[test]
    fn loopback_urls() {
        assert!(is_loopback_url("http://localhost:8008"));
        assert!(is_loopback_url("http://127.0.0.2/x"));
        assert!(is_loopback_url("https://u:p@[::1]:1"));
        assert!(!is_loopback_url("https://api.clear.ml"));
        assert!(!is_loopback_url("http://10.0.0.1:8008"));
    }

    #[test]
    fn names_are_docker_safe() {
        assert_eq!(container_name("a/b c"), "clearml-id-a-b-c");
    }

    #[test]
    fn private_files_and_ssh_copy_are_0600() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let ssh = d.path().join("ssh");
        std::fs::create_dir(&ssh).expect("mkdir");
        std::fs::write(ssh.join("id_ed25519"), "KEY").expect("write");
        let dest = d.path().join("copy");
        assert!(copy_ssh_dir(&ssh, &dest).expect("copy"));
        let mode = std::fs::metadata(dest.join("id_ed25519"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!copy_ssh_dir(&d.path().join("none"), &dest).expect("none"));
    }
}
