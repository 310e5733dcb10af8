//! Docker mode, side by side: our daemon and clearml-agent 3.0.3's, each in docker mode.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::json;

use clearml_bench::{Kill, run};

use crate::{Bench, IMAGE, Which};

/// Docker mode side by side: per agent, a daemon in docker mode on its own queue runs the same
/// task in the same image three times (the first fills the caches); enqueue to `completed`.
/// And a bare `docker run --rm IMAGE python3 -c pass`, the floor.
#[derive(Default)]
pub(crate) struct DockerFigures {
    pub(crate) ours_cold: Option<f64>,
    pub(crate) ours_warm: Option<f64>,
    pub(crate) py_cold: Option<f64>,
    pub(crate) py_warm: Option<f64>,
    pub(crate) bare: Option<f64>,
}

fn docker_daemon_runs(
    b: &Bench,
    which: Which,
    conf: &Path,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let tag = which.tag();
    let qname = format!("bench-docker-{tag}");
    let queue = b.queue(&qname)?;
    let home = b.dir.join(format!("home-docker-{tag}"));
    std::fs::create_dir_all(&home)?;
    let log = std::fs::File::create(b.dir.join(format!("daemon-docker-{tag}.log")))?;
    let mut cmd = b.command_with(which, &home, conf);
    // 3.0.3 passes `--gpus all` unless told not to; this CPU-only engine refuses that.
    cmd.env("CLEARML_DOCKER_SKIP_GPUS_FLAG", "1")
        .args(["daemon", "--queue", &qname, "--docker", IMAGE])
        .stdout(log.try_clone()?)
        .stderr(log);
    let _d = Kill(cmd.spawn()?);
    let mut times = Vec::new();
    for i in 0..runs {
        let t = b.create_task(&format!("docker-{tag}-{i}"), "main.py")?;
        let at = Instant::now();
        b.call("tasks.enqueue", json!({"task": t, "queue": queue}))?;
        let mut last = String::new();
        b.wait_for("the docker task", Duration::from_secs(600), || {
            last = b.status(&t)?;
            Ok(matches!(last.as_str(), "completed" | "failed" | "stopped"))
        })?;
        let took = at.elapsed().as_secs_f64();
        let text = b.log_text(&t)?;
        if last != "completed" || !text.contains("six version") {
            let f = b.dir.join(format!("docker-{tag}-{t}.log"));
            std::fs::write(&f, &text)?;
            bail!(
                "{tag}: the docker task ended {last}; its log: {}",
                f.display()
            );
        }
        eprintln!("{tag}: docker task {i}: {took:.2} s");
        times.push(took);
    }
    Ok(times)
}

pub(crate) fn side_by_side(b: &Bench, python: bool) -> DockerFigures {
    let mut f = DockerFigures::default();
    // Cold is the first run; warm the best of the later ones.
    let split = |t: &[f64]| {
        let cold = t.first().copied();
        let warm = t.iter().skip(1).copied().reduce(f64::min);
        (cold, warm)
    };
    match docker_daemon_runs(b, Which::Ours, &b.conf, 3) {
        Ok(t) => (f.ours_cold, f.ours_warm) = split(&t),
        Err(e) => eprintln!("docker (ours): {e:#}"),
    }
    if python {
        // The Python agent does not switch to the host network for a loopback server, and
        // clones inside the container: it gets the host network and the bench folder (the
        // task's git remote) at the same path, plus the CA bundle its pip needs.
        let mut args = vec![
            "--network".to_string(),
            "host".into(),
            "-v".into(),
            format!("{d}:{d}", d = b.dir.display()),
        ];
        if let Ok(ca) = std::env::var("PIP_CERT")
            && !ca.is_empty()
        {
            args.extend([
                "-v".into(),
                format!("{ca}:{ca}:ro"),
                "-e".into(),
                format!("SSL_CERT_FILE={ca}"),
                "-e".into(),
                format!("PIP_CERT={ca}"),
                "-e".into(),
                format!("REQUESTS_CA_BUNDLE={ca}"),
            ]);
        }
        let list = args
            .iter()
            .map(|a| format!("{a:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let base = std::fs::read_to_string(&b.conf).unwrap_or_default();
        let conf = b.dir.join("clearml-docker-py.conf");
        let written = std::fs::write(
            &conf,
            format!("{base}\nagent.extra_docker_arguments: [{list}]\n"),
        );
        match written
            .map_err(anyhow::Error::from)
            .and_then(|()| docker_daemon_runs(b, Which::Python, &conf, 2))
        {
            Ok(t) => (f.py_cold, f.py_warm) = split(&t),
            Err(e) => eprintln!("docker (clearml-agent 3.0.3): {e:#}"),
        }
    }
    let mut bare = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        if run(Command::new("docker").args(["run", "--rm", IMAGE, "python3", "-c", "pass"])).is_ok()
        {
            bare.push(started.elapsed().as_secs_f64());
        }
    }
    bare.sort_by(f64::total_cmp);
    f.bare = bare.get(bare.len() / 2).copied();
    eprintln!(
        "docker: ours cold {:?} warm {:?}; 3.0.3 cold {:?} warm {:?}; bare docker run {:?}",
        f.ours_cold, f.ours_warm, f.py_cold, f.py_warm, f.bare
    );
    f
}
