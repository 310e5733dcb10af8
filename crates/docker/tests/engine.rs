//! Against the real docker engine of this machine, with the local test image that
//! `scripts/test-image` builds (built here when missing). When `docker info` fails, every test
//! prints why and returns.
// A skipped test says why on stderr.
#![allow(clippy::print_stderr)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clearml_config::{DockerSettings, HideDockerEnv};
use clearml_docker::{
    ContainerRequest, DockerCli, DockerError, Engine, EnvVar, GpuRequest, ImageChoice, ImageSource,
    LABEL_TASK, LABEL_WORKER, Mount, RunSpec, SshSource, Stream, diagnose_failure, paths,
    plan_container, write_private_file,
};

const IMAGE: &str = "clearml-agent-test/python:bookworm";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The docker CLI when the engine answers and the test image exists; `None` (with the reason
/// printed) when there is no docker here.
async fn engine() -> Option<DockerCli> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let cli = DockerCli::new(Engine::Docker);
    if let Err(e) = cli.check_available().await {
        eprintln!("SKIPPED: docker is not usable here: {e}");
        return None;
    }
    let ready = READY.get_or_init(|| {
        let out = std::process::Command::new(repo_root().join("scripts/test-image"))
            .arg(IMAGE)
            .output()
            .map_err(|e| format!("cannot run scripts/test-image: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "scripts/test-image failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    if let Err(e) = ready {
        panic!("{e}");
    }
    Some(cli)
}

fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}x{}x{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn settings(dir: &Path) -> DockerSettings {
    DockerSettings {
        default_image: IMAGE.into(),
        default_arguments: vec![],
        update_back_task: true,
        env_image: None,
        disable_task_docker_override: false,
        extra_docker_arguments: vec![],
        extra_docker_shell_script: vec![],
        docker_init_bash_script: vec![],
        docker_preprocess_bash_script: vec![],
        extra_precedes_task: true,
        protected_docker_extra_args: ["privileged", "security-opt", "network", "ipc"]
            .map(String::from)
            .to_vec(),
        docker_args_filters: vec![],
        forbidden_docker_args: vec!["entrypoint".into()],
        allow_host_environ: false,
        force_pull: false,
        pip_cache: dir.join("pip-cache"),
        apt_cache: dir.join("apt-cache"),
        hide_env: HideDockerEnv {
            enabled: true,
            extra_keys: vec!["MY_PRIVATE".into()],
            parse_embedded_urls: true,
        },
        skip_gpus_flag: false,
        disable_ssh_mount: false,
        extra_labels: vec![],
    }
}

fn task_choice(args: &[&str], setup: Option<&str>) -> ImageChoice {
    ImageChoice {
        image: IMAGE.into(),
        arguments: args.iter().map(|s| s.to_string()).collect(),
        source: ImageSource::Task,
        setup_shell_script: setup.map(str::to_string),
        write_back: false,
    }
}

/// A probe that stands in for the agent: a shell script, mounted where the agent would be.
fn probe(dir: &Path, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join("probe.sh");
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write probe");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    p
}

fn host_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

struct Collected(Arc<Mutex<Vec<String>>>);

impl Collected {
    fn new() -> Self {
        Collected(Arc::new(Mutex::new(Vec::new())))
    }
    fn callback(&self) -> impl FnMut(Stream, &str) + Send + use<> {
        let lines = self.0.clone();
        move |_s, l| lines.lock().expect("lock").push(l.to_string())
    }
    fn text(&self) -> String {
        self.0.lock().expect("lock").join("\n")
    }
}

#[tokio::test]
async fn a_planned_container_runs_with_env_mounts_scripts_and_host_network() {
    let Some(cli) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let mut s = settings(dir.path());
    s.docker_init_bash_script = vec!["echo INIT-RAN".into()];
    s.extra_docker_shell_script = vec!["echo EXTRA-RAN".into()];
    // The CA bundle of this machine's TLS proxy, passed the way a user behind a corporate
    // proxy would.
    if let Some(cert) = host_env("PIP_CERT") {
        s.extra_docker_arguments = [
            "-v",
            "$PIP_CERT:$PIP_CERT:ro",
            "-e",
            "SSL_CERT_FILE=$PIP_CERT",
            "-e",
            "PIP_CERT=$PIP_CERT",
        ]
        .map(String::from)
        .to_vec();
        assert!(Path::new(&cert).exists());
    }
    let code = dir.path().join("code");
    std::fs::create_dir(&code).expect("mkdir");
    std::fs::write(code.join("train.py"), "print('hello')\n").expect("write");
    let config = dir.path().join("inner.conf");
    write_private_file(&config, b"api { host: x }\n").expect("config");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let agent = probe(
        dir.path(),
        r#"echo "ARGS=$*"
echo "WORKER=$CLEARML_WORKER_ID TASK=$CLEARML_TASK_ID IMAGE=$CLEARML_DOCKER_IMAGE"
echo "CONFIG=$(cat "$CLEARML_CONFIG_FILE")"
echo "SECRET_LEN=${#CLEARML_API_SECRET_KEY}"
echo "TASKENV=$TASK_VAR"
echo "PWD=$(pwd) CODE=$(cat train.py)"
touch /root/.cache/pip/written-inside
python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', int(sys.argv[1])), 5); print('CONNECTED')" "$1"
if [ -n "$SSL_CERT_FILE" ]; then python3 -c "import urllib.request; print('PYPI', urllib.request.urlopen('https://pypi.org/simple/pip/', timeout=30).status)"; fi
exit 3"#,
    );
    let task_id = unique("t");
    let choice = task_choice(
        &[
            "-e",
            "TASK_VAR=from-task",
            "-e",
            "MY_PRIVATE=hunter2",
            "--entrypoint",
            "/bin/false",
        ],
        Some("# a comment\necho SETUP-RAN"),
    );
    let secret = "s3cr3t-value-do-not-print";
    let req = ContainerRequest {
        settings: &s,
        engine: Engine::Docker,
        worker_id: "test-worker:0",
        task_id: &task_id,
        choice: &choice,
        gpus: GpuRequest::Default,
        nvidia_runtime: cli.has_nvidia_runtime().await,
        agent_binary: agent,
        config_file: config,
        code: Some(Mount::new(&code, "/root/task-code", false)),
        workdir: Some("/root/task-code".into()),
        uv_cache: Some(dir.path().join("uv-cache")),
        venvs: Some(dir.path().join("venvs")),
        ssh: SshSource::None,
        server_urls: vec![format!("http://127.0.0.1:{port}")],
        env: vec![EnvVar::secret("CLEARML_API_SECRET_KEY", secret)],
        execute: vec![paths::AGENT_BIN.into(), port.to_string()],
        lookup: &host_env,
        require_glibc: true,
    };
    let plan = plan_container(&req).expect("plan");
    assert!(!plan.printable.contains(secret), "{}", plan.printable);
    assert!(!plan.printable.contains("hunter2"), "{}", plan.printable);
    assert!(
        plan.printable.contains("MY_PRIVATE=********"),
        "{}",
        plan.printable
    );
    assert!(!plan.spec.argv().iter().any(|a| a.contains(secret)));
    assert!(
        plan.messages.iter().any(|m| m.contains("--network host")),
        "{:?}",
        plan.messages
    );
    assert!(
        plan.messages.iter().any(|m| m.contains("--entrypoint")),
        "{:?}",
        plan.messages
    );

    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &plan.spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(2),
        )
        .await
        .expect("run");
    let text = out.text();
    eprintln!("{}\n{text}", plan.printable);
    assert_eq!(outcome.exit_code, Some(3), "{text}");
    assert!(!outcome.stopped);
    for want in [
        format!("ARGS={port}"),
        format!("WORKER=test-worker:0 TASK={task_id} IMAGE={IMAGE}"),
        "CONFIG=api { host: x }".into(),
        format!("SECRET_LEN={}", secret.len()),
        "TASKENV=from-task".into(),
        "PWD=/root/task-code CODE=print('hello')".into(),
        "CONNECTED".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    if host_env("PIP_CERT").is_some() {
        assert!(text.contains("PYPI 200"), "{text}");
    }
    let pos = |x: &str| {
        text.find(x)
            .unwrap_or_else(|| panic!("{x} missing in {text}"))
    };
    assert!(pos("INIT-RAN") < pos("EXTRA-RAN"));
    assert!(pos("EXTRA-RAN") < pos("SETUP-RAN"));
    assert!(pos("SETUP-RAN") < pos("ARGS="));
    assert!(dir.path().join("pip-cache/written-inside").exists());
    assert!(dir.path().join("uv-cache").is_dir());
    // --rm: nothing left behind.
    let left = cli.list_by_label(LABEL_TASK, &task_id).await.expect("list");
    assert!(left.is_empty(), "{left:?}");
}

fn sleeper(task_id: &str, worker: &str) -> RunSpec {
    let mut spec = RunSpec::new(Engine::Docker, IMAGE);
    spec.name = Some(clearml_docker::container_name(task_id));
    spec.labels = vec![
        (LABEL_WORKER.into(), worker.into()),
        (LABEL_TASK.into(), task_id.into()),
    ];
    // PID 1 ignores SIGTERM, so `docker stop` has to fall back to SIGKILL after the grace.
    spec.command = vec!["sleep".into(), "300".into()];
    spec
}

#[tokio::test]
async fn containers_are_listed_by_label_stopped_within_grace_and_removed() {
    let Some(cli) = engine().await else { return };
    let worker = unique("w");
    let (a, b) = (unique("a"), unique("b"));
    let mut spec_a = sleeper(&a, &worker);
    spec_a.remove = false;
    let spec_b = sleeper(&b, &worker);
    let id_a = cli.run_detached(&spec_a).await.expect("run a");
    cli.run_detached(&spec_b).await.expect("run b");

    let mut found = cli
        .list_by_label(LABEL_WORKER, &worker)
        .await
        .expect("list");
    found.sort_by(|x, y| x.name.cmp(&y.name));
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().all(|c| c.state == "running"));
    assert!(
        found
            .iter()
            .any(|c| c.id == id_a && c.labels.get(LABEL_TASK) == Some(&a))
    );
    assert!(
        found
            .iter()
            .any(|c| c.name == clearml_docker::container_name(&b))
    );

    let t = Instant::now();
    cli.stop(&id_a, Duration::from_secs(1)).await.expect("stop");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "stop took {:?}",
        t.elapsed()
    );
    assert!(!cli.is_running(&id_a).await.expect("inspect"));
    // The stopped one is still there (no --rm): cleaning up by label removes everything.
    for c in cli
        .list_by_label(LABEL_WORKER, &worker)
        .await
        .expect("list")
    {
        cli.remove(&c.id, true).await.expect("rm");
    }
    assert!(
        cli.list_by_label(LABEL_WORKER, &worker)
            .await
            .expect("list")
            .is_empty()
    );
    // Removing or stopping what is gone is not an error.
    cli.remove(&id_a, true).await.expect("rm again");
    cli.stop(&id_a, Duration::from_secs(1))
        .await
        .expect("stop again");
}

#[tokio::test]
async fn an_attached_run_is_stopped_on_request_within_the_grace() {
    let Some(cli) = engine().await else { return };
    let task = unique("s");
    let mut spec = sleeper(&task, "stopper");
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        "echo STARTED; exec sleep 300".into(),
    ];
    let out = Collected::new();
    let mut cb = out.callback();
    let t = Instant::now();
    let outcome = cli
        .run_attached(
            &spec,
            &mut cb,
            tokio::time::sleep(Duration::from_secs(2)),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    assert!(outcome.stopped);
    assert_ne!(outcome.exit_code, Some(0));
    assert!(
        t.elapsed() < Duration::from_secs(12),
        "took {:?}",
        t.elapsed()
    );
    assert!(out.text().contains("STARTED"), "{}", out.text());
    cli.remove(spec.name.as_deref().unwrap_or_default(), true)
        .await
        .expect("rm");
    assert!(
        cli.list_by_label(LABEL_TASK, &task)
            .await
            .expect("list")
            .is_empty()
    );
}

#[tokio::test]
async fn a_missing_image_is_an_error_with_dockers_message() {
    let Some(cli) = engine().await else { return };
    let image = "clearml-agent-test/no-such-image:never";
    match cli.ensure_image(image, false).await {
        Err(DockerError::MissingImage { image: i, message }) => {
            assert_eq!(i, image);
            assert!(!message.is_empty());
            let shown = DockerError::MissingImage {
                image: i,
                message: message.clone(),
            }
            .to_string();
            assert!(shown.contains(image) && shown.contains(&message), "{shown}");
        }
        other => panic!("expected MissingImage, got {other:?}"),
    }
    // Running it anyway: docker's error is in the output and diagnose_failure names it.
    let spec = {
        let mut s = RunSpec::new(Engine::Docker, image);
        s.name = Some(unique("missing"));
        s.command = vec!["true".into()];
        s
    };
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    assert_eq!(outcome.exit_code, Some(125), "{}", out.text());
    let why = diagnose_failure(125, &out.text(), image).expect("diagnosed");
    assert!(why.contains(image), "{why}");
}

#[tokio::test]
async fn force_pull_falls_back_to_the_local_image() {
    let Some(cli) = engine().await else { return };
    // The test image exists only locally: the pull fails, the local image is used.
    let ready = cli.ensure_image(IMAGE, true).await.expect("ready");
    assert!(!ready.pulled);
    assert!(
        ready
            .messages
            .iter()
            .any(|m| m.contains("using the local image") && m.contains(IMAGE)),
        "{:?}",
        ready.messages
    );
    let ready = cli.ensure_image(IMAGE, false).await.expect("ready");
    assert!(!ready.pulled && ready.messages.is_empty());
}

#[tokio::test]
async fn an_image_without_bin_sh_fails_with_a_clear_message() {
    let Some(cli) = engine().await else { return };
    let image = "clearml-agent-test/empty:latest";
    if !cli.image_exists(image).await.expect("inspect") {
        // An image with nothing in it: `docker import` of an empty archive.
        let dir = tempfile::tempdir().expect("tmp");
        let tar = dir.path().join("empty.tar");
        let st = std::process::Command::new("tar")
            .args(["-cf"])
            .arg(&tar)
            .args(["-T", "/dev/null"])
            .status()
            .expect("tar");
        assert!(st.success());
        let st = std::process::Command::new("docker")
            .arg("import")
            .arg(&tar)
            .arg(image)
            .status()
            .expect("import");
        assert!(st.success());
    }
    let dir = tempfile::tempdir().expect("tmp");
    let s = settings(dir.path());
    let choice = ImageChoice {
        image: image.into(),
        ..task_choice(&[], None)
    };
    let config = dir.path().join("c.conf");
    write_private_file(&config, b"").expect("config");
    let task_id = unique("nosh");
    let req = ContainerRequest {
        settings: &s,
        engine: Engine::Docker,
        worker_id: "w",
        task_id: &task_id,
        choice: &choice,
        gpus: GpuRequest::None,
        nvidia_runtime: false,
        agent_binary: probe(dir.path(), "true"),
        config_file: config,
        code: None,
        workdir: None,
        uv_cache: None,
        venvs: None,
        ssh: SshSource::None,
        server_urls: vec![],
        env: vec![],
        execute: vec![paths::AGENT_BIN.into()],
        lookup: &host_env,
        require_glibc: true,
    };
    let plan = plan_container(&req).expect("plan");
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &plan.spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    let code = outcome.exit_code.unwrap_or(-1);
    let why = diagnose_failure(code, &out.text(), image).unwrap_or_default();
    assert!(
        why.contains("no /bin/sh"),
        "exit {code}: {}\n{why}",
        out.text()
    );
    cli.remove(&clearml_docker::container_name(&task_id), true)
        .await
        .expect("rm");
}

#[tokio::test]
async fn a_container_is_committed_to_a_new_image() {
    let Some(cli) = engine().await else { return };
    let task = unique("c");
    let mut spec = RunSpec::new(Engine::Docker, IMAGE);
    spec.name = Some(clearml_docker::container_name(&task));
    spec.remove = false;
    spec.command = vec!["sh".into(), "-c".into(), "echo built > /built.txt".into()];
    let mut sink = |_: Stream, _: &str| {};
    let outcome = cli
        .run_attached(
            &spec,
            &mut sink,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    assert_eq!(outcome.exit_code, Some(0));
    let target = format!("clearml-agent-test/committed:{task}");
    let id = cli
        .commit(
            spec.name.as_deref().unwrap_or_default(),
            &target,
            &[r#"CMD ["cat", "/built.txt"]"#.to_string()],
        )
        .await
        .expect("commit");
    assert!(id.starts_with("sha256:"), "{id}");
    cli.remove(spec.name.as_deref().unwrap_or_default(), true)
        .await
        .expect("rm");
    let mut run = RunSpec::new(Engine::Docker, &target);
    run.name = Some(unique("committed"));
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &run,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run committed");
    assert_eq!(outcome.exit_code, Some(0));
    assert_eq!(out.text(), "built");
    cli.remove_image(&target).await.expect("rmi");
    assert!(!cli.image_exists(&target).await.expect("inspect"));
}

/// A plan for `image` whose "agent" is a probe script.
fn simple_plan(
    dir: &Path,
    image: &str,
    task_id: &str,
    probe_body: &str,
    ssh: SshSource,
) -> clearml_docker::ContainerPlan {
    let s = settings(dir);
    let choice = ImageChoice {
        image: image.into(),
        ..task_choice(&[], None)
    };
    let config = dir.join("c.conf");
    write_private_file(&config, b"").expect("config");
    let req = ContainerRequest {
        settings: &s,
        engine: Engine::Docker,
        worker_id: "w",
        task_id,
        choice: &choice,
        gpus: GpuRequest::None,
        nvidia_runtime: false,
        agent_binary: probe(dir, probe_body),
        config_file: config,
        code: None,
        workdir: None,
        uv_cache: None,
        venvs: None,
        ssh,
        server_urls: vec![],
        env: vec![],
        execute: vec![paths::AGENT_BIN.into()],
        lookup: &host_env,
        require_glibc: true,
    };
    plan_container(&req).expect("plan")
}

#[tokio::test]
async fn a_musl_image_fails_with_a_clear_message() {
    let Some(cli) = engine().await else { return };
    let image = "clearml-agent-test/musl-like:latest";
    let st = std::process::Command::new(repo_root().join("scripts/test-image"))
        .args(["--musl-like", image])
        .output()
        .expect("scripts/test-image --musl-like");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let dir = tempfile::tempdir().expect("tmp");
    let task_id = unique("musl");
    let plan = simple_plan(
        dir.path(),
        image,
        &task_id,
        "echo AGENT-RAN",
        SshSource::None,
    );
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &plan.spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    let text = out.text();
    assert_eq!(
        outcome.exit_code,
        Some(clearml_docker::EXIT_UNSUPPORTED_IMAGE),
        "{text}"
    );
    assert!(!text.contains("AGENT-RAN"));
    let why = diagnose_failure(outcome.exit_code.unwrap_or(-1), &text, image).unwrap_or_default();
    assert!(why.contains("musl") && why.contains(image), "{why}");
}

#[tokio::test]
async fn the_ssh_copy_reaches_home_ssh_and_the_original_is_untouched() {
    let Some(cli) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let ssh = dir.path().join("dot-ssh");
    std::fs::create_dir(&ssh).expect("mkdir");
    std::fs::write(ssh.join("id_test"), "PRIVATE-KEY\n").expect("key");
    let copy = dir.path().join("ssh-copy");
    assert!(clearml_docker::copy_ssh_dir(&ssh, &copy).expect("copy"));
    let task_id = unique("ssh");
    let plan = simple_plan(
        dir.path(),
        IMAGE,
        &task_id,
        r#"echo "KEY=$(cat "$HOME/.ssh/id_test") MODE=$(stat -c %a "$HOME/.ssh/id_test")"
touch /opt/clearml/ssh/x 2>/dev/null && echo WRITABLE || echo READONLY"#,
        SshSource::Copy(copy),
    );
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &plan.spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    let text = out.text();
    assert_eq!(outcome.exit_code, Some(0), "{text}");
    assert!(text.contains("KEY=PRIVATE-KEY MODE=600"), "{text}");
    assert!(text.contains("READONLY"), "{text}");
}

#[tokio::test]
async fn the_ssh_agent_socket_is_mounted_at_its_path() {
    let Some(cli) = engine().await else { return };
    let dir = tempfile::tempdir().expect("tmp");
    let sock = dir.path().join("agent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind socket");
    let task_id = unique("sock");
    let plan = simple_plan(
        dir.path(),
        IMAGE,
        &task_id,
        r#"[ -S "$SSH_AUTH_SOCK" ] && echo "SOCKET=$SSH_AUTH_SOCK""#,
        SshSource::AgentSocket(sock.clone()),
    );
    let out = Collected::new();
    let mut cb = out.callback();
    let outcome = cli
        .run_attached(
            &plan.spec,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    let text = out.text();
    assert_eq!(outcome.exit_code, Some(0), "{text}");
    assert!(
        text.contains(&format!("SOCKET={}", sock.display())),
        "{text}"
    );
}

#[tokio::test]
async fn a_name_left_by_an_earlier_run_is_diagnosed() {
    let Some(cli) = engine().await else { return };
    let task = unique("dup");
    let mut first = sleeper(&task, "dup-worker");
    first.remove = false;
    first.command = vec!["true".into()];
    let mut sink = |_: Stream, _: &str| {};
    let o = cli
        .run_attached(
            &first,
            &mut sink,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("first");
    assert_eq!(o.exit_code, Some(0));
    let out = Collected::new();
    let mut cb = out.callback();
    let o = cli
        .run_attached(
            &first,
            &mut cb,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("second");
    let why = diagnose_failure(o.exit_code.unwrap_or(-1), &out.text(), IMAGE).unwrap_or_default();
    assert!(
        why.contains("already exists"),
        "{:?} {}",
        o.exit_code,
        out.text()
    );
    for c in cli.list_by_label(LABEL_TASK, &task).await.expect("list") {
        cli.remove(&c.id, true).await.expect("rm");
    }
}
