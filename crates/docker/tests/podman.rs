//! The same engine calls with podman (rootful, as on this machine), and the image glibc probe
//! with both engines. Podman's tests skip, saying why, when podman cannot run the test image
//! here; it is loaded from docker (`docker save | podman load`) when missing.
#![allow(clippy::print_stderr)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clearml_docker::{DockerCli, Engine, LABEL_TASK, LABEL_WORKER, RunSpec, Stream};

const IMAGE: &str = "clearml-agent-test/python:bookworm";
const OLD: &str = "clearml-agent-test/python:bullseye";

fn ok(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn docker_image(image: &str) -> bool {
    ok(Command::new("docker").args(["image", "inspect", image]))
}

/// Podman with the test image loaded; `None` (saying why) when that cannot be had.
fn podman() -> Option<DockerCli> {
    if !ok(Command::new("podman").arg("--version")) {
        eprintln!("SKIPPED: podman is not installed");
        return None;
    }
    if !ok(Command::new("podman").args(["image", "exists", IMAGE])) {
        if !docker_image(IMAGE) {
            eprintln!("SKIPPED: {IMAGE} is in neither docker nor podman (scripts/test-image)");
            return None;
        }
        let load = Command::new("sh")
            .arg("-c")
            .arg(format!("docker save {IMAGE} | podman load"))
            .output()
            .expect("sh");
        if !load.status.success() {
            eprintln!(
                "SKIPPED: podman load failed: {}",
                String::from_utf8_lossy(&load.stderr)
            );
            return None;
        }
    }
    Some(DockerCli::new(Engine::Podman))
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

#[tokio::test]
async fn podman_runs_lists_stops_and_removes_like_docker() {
    let Some(cli) = podman() else { return };
    let (worker, task) = (unique("w"), unique("t"));
    let mut spec = RunSpec::new(Engine::Podman, IMAGE);
    spec.name = Some(clearml_docker::container_name(&task));
    spec.labels = vec![
        (LABEL_WORKER.into(), worker.clone()),
        (LABEL_TASK.into(), task.clone()),
    ];
    spec.network_host = true;
    spec.remove = false;
    // PID 1 ignores SIGTERM: stop must fall back to a kill after the grace.
    spec.command = vec!["sleep".into(), "300".into()];
    let id = cli.run_detached(&spec).await.expect("podman run -d");
    let found = cli
        .list_by_label(LABEL_WORKER, &worker)
        .await
        .expect("list");
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].state, "running");
    assert_eq!(found[0].name, clearml_docker::container_name(&task));
    assert_eq!(found[0].labels.get(LABEL_TASK), Some(&task));
    assert!(id.starts_with(&found[0].id) || found[0].id.starts_with(&id));
    let t = Instant::now();
    cli.stop(&id, Duration::from_secs(1)).await.expect("stop");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(!cli.is_running(&id).await.expect("inspect"));
    cli.remove(&id, true).await.expect("rm");
    assert!(
        cli.list_by_label(LABEL_WORKER, &worker)
            .await
            .expect("list")
            .is_empty()
    );
    // Gone: neither is an error.
    cli.remove(&id, true).await.expect("rm again");
    cli.stop(&id, Duration::from_secs(1))
        .await
        .expect("stop again");
}

#[tokio::test]
async fn podman_streams_an_attached_run_and_reports_its_exit_code() {
    let Some(cli) = podman() else { return };
    let mut spec = RunSpec::new(Engine::Podman, IMAGE);
    spec.name = Some(unique("attached"));
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        "echo out-line; echo err-line >&2; exit 3".into(),
    ];
    let mut lines = Vec::new();
    let mut on_line = |s: Stream, l: &str| lines.push((s, l.to_string()));
    let outcome = cli
        .run_attached(
            &spec,
            &mut on_line,
            std::future::pending(),
            Duration::from_secs(1),
        )
        .await
        .expect("run");
    assert_eq!(outcome.exit_code, Some(3));
    assert!(
        lines.contains(&(Stream::Stdout, "out-line".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stderr, "err-line".into())),
        "{lines:?}"
    );
    assert!(
        !cli.image_exists("clearml-agent-test/none:missing")
            .await
            .expect("inspect")
    );
    assert!(cli.image_id(IMAGE).await.expect("id").is_some());
}

#[tokio::test]
async fn the_image_glibc_is_read_from_the_image() {
    let docker = DockerCli::new(Engine::Docker);
    if docker.check_available().await.is_err() || !docker_image(IMAGE) {
        eprintln!("SKIPPED: docker or {IMAGE} is missing here");
        return;
    }
    // The test image is Debian bookworm, like this host: the same glibc as `getconf` says here.
    let host = Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let host = clearml_docker::parse_glibc_version_text(&host).expect("host glibc");
    assert_eq!(docker.image_glibc(IMAGE).await.expect("probe"), Some(host));
    if docker_image(OLD) {
        assert_eq!(docker.image_glibc(OLD).await.expect("probe"), Some((2, 31)));
    } else {
        eprintln!("(no {OLD} here: TEST_IMAGE_SUITE=bullseye scripts/test-image {OLD})");
    }
    // A missing image is the engine's error, not "no glibc".
    assert!(
        docker
            .image_glibc("clearml-agent-test/none:missing")
            .await
            .is_err()
    );
    if let Some(p) = podman() {
        assert_eq!(
            p.image_glibc(IMAGE).await.expect("podman probe"),
            Some(host)
        );
    }
}
