//! Environment build time of one task, cold and warm, for our agent and for the Python
//! `clearml-agent==3.0.3`, both running `execute --id` against our server on this machine in
//! the same run.
//!
//! The task is a small git repository whose requirements.txt (a few small packages) is also
//! stored on the task as its pip requirements, so each agent installs the same set and the
//! Python agent's venv cache can key it (it never caches requirements read through `-r`).
//!
//! Per agent, each run on a fresh identical task:
//! 1. prime: a throwaway home, so the package download cache (uv's, pip's) is warm;
//! 2. cold: a new home, so an empty venv cache, with the warm package cache;
//! 3. warm: the same home again, so a venv cache hit.
//!
//! The time is from process start to the agent's "Environment setup completed successfully"
//! line (both print it just before starting the task), which covers fetching the task, the
//! clone and the environment. The agents run with their default package managers (ours: uv,
//! clearml-agent 3.0.3: pip) and default venv caches.
//!
//! Usage: env-bench [--agent PATH] [--python-agent PATH] [--packages "six==1.16.0 ..."]
//! Without --python-agent it installs clearml-agent==3.0.3 with pip into
//! `<workspace>/.cache/bench-venv`. Without --agent it uses the `clearml-agent` next to this
//! binary (build both with the same profile).
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};

const KEY: &str = "BENCHENVACCESSKEY";
const SECRET: &str = "BENCH-ENV-SECRET-98f00b204e9800998";
const READY: &str = "Environment setup completed successfully";

use clearml_bench::{Kill, git, run, spawn_server, workspace};

#[derive(Clone, Copy, PartialEq)]
enum Which {
    Ours,
    Python,
}

struct Bench {
    dir: PathBuf,
    conf: PathBuf,
    api: String,
    agent: PathBuf,
    python_agent: PathBuf,
    uv: Option<PathBuf>,
    work: PathBuf,
}

struct Measured {
    env_secs: f64,
    total_secs: f64,
    cache_hit: bool,
}

impl Bench {
    fn command(&self, which: Which, home: &Path) -> Command {
        let mut c = match which {
            Which::Ours => Command::new(&self.agent),
            Which::Python => Command::new(&self.python_agent),
        };
        c.arg("--config-file")
            .arg(&self.conf)
            .env("HOME", home)
            .env("CLEARML_API_HOST", &self.api)
            .env("CLEARML_API_ACCESS_KEY", KEY)
            .env("CLEARML_API_SECRET_KEY", SECRET)
            // Shared download caches: warm after the priming run, for both agents.
            .env("UV_CACHE_DIR", self.dir.join("uv-cache"))
            .env("PIP_CACHE_DIR", self.dir.join("pip-cache"))
            .env_remove("CLEARML_WORKER_ID")
            .env_remove("VIRTUAL_ENV");
        if let (Which::Ours, Some(uv)) = (which, &self.uv) {
            c.env("CLEARML_BOOTSTRAP_UV_EXEC", uv);
        }
        c
    }

    fn create_task(&self, name: &str) -> anyhow::Result<String> {
        let out = run(self
            .command(Which::Ours, &self.dir.join("home-create"))
            .args(["task", "create", "--project", "env-bench", "--name", name])
            .arg("--folder")
            .arg(&self.work)
            .args(["--script", "main.py", "--requirements"])
            .arg(self.work.join("requirements.txt")))?;
        Ok(out.lines().last().unwrap_or_default().trim().to_string())
    }

    fn execute(&self, which: Which, home: &Path, task: &str) -> anyhow::Result<Measured> {
        std::fs::create_dir_all(home)?;
        let started = Instant::now();
        let mut child = self
            .command(which, home)
            .args(["execute", "--id", task])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the agent")?;
        let stderr = child.stderr.take().context("stderr")?;
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let stdout = child.stdout.take().context("stdout")?;
        let mut env_secs = None;
        let mut cache_hit = false;
        let mut log = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            if env_secs.is_none() && line.contains(READY) {
                env_secs = Some(started.elapsed().as_secs_f64());
            }
            cache_hit |= line.contains("Using Cached environment");
            log.push_str(&line);
            log.push('\n');
        }
        let status = child.wait()?;
        let total_secs = started.elapsed().as_secs_f64();
        let errors = err_reader.join().unwrap_or_default();
        let log_file = self.dir.join(format!(
            "{}-{task}.log",
            if which == Which::Ours {
                "ours"
            } else {
                "python"
            }
        ));
        std::fs::write(&log_file, format!("{log}\n--- stderr ---\n{errors}"))?;
        if !status.success() || !log.contains("six version") {
            bail!(
                "the task failed ({status}); log in {}:\n{}",
                log_file.display(),
                log.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        Ok(Measured {
            env_secs: env_secs.unwrap_or(total_secs),
            total_secs,
            cache_hit,
        })
    }
}

fn ensure_python_agent(venv: &Path) -> anyhow::Result<PathBuf> {
    let exe = venv.join("bin/clearml-agent");
    if exe.is_file() {
        return Ok(exe);
    }
    eprintln!("installing clearml-agent==3.0.3 into {}", venv.display());
    run(Command::new("python3").args(["-m", "venv"]).arg(venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "clearml-agent==3.0.3"]))?;
    Ok(exe)
}

fn main() -> anyhow::Result<()> {
    let mut agent = None;
    let mut python_agent = None;
    let mut packages = "six==1.16.0 tabulate==0.9.0 attrs==23.2.0".to_string();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--agent" => agent = Some(PathBuf::from(value()?)),
            "--python-agent" => python_agent = Some(PathBuf::from(value()?)),
            "--packages" => packages = value()?,
            "-h" | "--help" => {
                println!(
                    "env-bench [--agent PATH] [--python-agent PATH] [--packages \"a==1 b==2\"]"
                );
                return Ok(());
            }
            other => bail!("unknown argument {other}"),
        }
    }
    let agent = match agent {
        Some(a) => a,
        None => std::env::current_exe()?
            .parent()
            .context("no folder")?
            .join("clearml-agent"),
    };
    if !agent.is_file() {
        bail!(
            "{} is missing: cargo build --release -p clearml-agent",
            agent.display()
        );
    }
    let python_agent = match python_agent {
        Some(p) => p,
        None => ensure_python_agent(&workspace().join(".cache/bench-venv"))?,
    };
    let uv = [".cache/test-tools/uv-venv/bin/uv"]
        .iter()
        .map(|p| workspace().join(p))
        .find(|p| p.is_file());

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let (child, port, files_port) = spawn_server(
        Command::new(&agent)
            .args(["server", "--port", "0", "--files-port", "0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("CLEARML_SERVER_ACCESS_KEY", KEY)
            .env("CLEARML_SERVER_SECRET_KEY", SECRET)
            .env("HOME", dir.join("home-server"))
            .stderr(Stdio::null()),
    )?;
    let api = format!("http://127.0.0.1:{port}");
    let _server = Kill(child);
    let conf = dir.join("clearml.conf");
    std::fs::write(
        &conf,
        format!(
            "api {{\n  api_server: {api}\n  web_server: {api}\n  files_server: \"http://127.0.0.1:{files_port}\"\n  credentials {{\"access_key\": \"{KEY}\", \"secret_key\": \"{SECRET}\"}}\n}}\n\
             agent {{\n  disable_agent_update_check: true\n  pip_download_cache.path: \"{}\"\n}}\n\
             sdk.development.suppress_update_message: true\n",
            dir.join("pip-download-cache").display()
        ),
    )?;

    // The task's repository.
    let remote = dir.join("remote.git");
    let work = dir.join("work");
    std::fs::create_dir_all(&remote)?;
    git(&remote, &["init", "--bare", "-q"])?;
    git(
        &dir,
        &["clone", "-q", &remote.display().to_string(), "work"],
    )?;
    let reqs: Vec<&str> = packages.split_whitespace().collect();
    std::fs::write(work.join("requirements.txt"), reqs.join("\n") + "\n")?;
    std::fs::write(
        work.join("main.py"),
        "import six\nprint('six version', six.__version__)\n",
    )?;
    git(&work, &["add", "."])?;
    git(&work, &["commit", "-q", "-m", "bench"])?;
    git(&work, &["push", "-q", "origin", "HEAD:main"])?;

    let bench = Bench {
        dir: dir.clone(),
        conf,
        api,
        agent,
        python_agent,
        uv,
        work,
    };
    let mut rows = Vec::new();
    for (which, label) in [
        (Which::Ours, "ours (uv)"),
        (Which::Python, "clearml-agent 3.0.3 (pip)"),
    ] {
        let tag = if which == Which::Ours { "ours" } else { "py" };
        let prime_home = dir.join(format!("home-{tag}-prime"));
        let home = dir.join(format!("home-{tag}"));
        let t = bench.create_task(&format!("{tag}-prime"))?;
        let prime = bench.execute(which, &prime_home, &t)?;
        eprintln!("{label}: prime {:.2}s", prime.env_secs);
        let t = bench.create_task(&format!("{tag}-cold"))?;
        let cold = bench.execute(which, &home, &t)?;
        eprintln!("{label}: cold {:.2}s", cold.env_secs);
        let t = bench.create_task(&format!("{tag}-warm"))?;
        let warm = bench.execute(which, &home, &t)?;
        eprintln!(
            "{label}: warm {:.2}s (cache hit: {})",
            warm.env_secs, warm.cache_hit
        );
        rows.push((label, cold, warm));
    }

    println!("packages: {packages}");
    println!("seconds from `execute --id` start to \"{READY}\" (whole process in brackets)\n");
    println!(
        "| agent | cold: empty venv cache, warm package cache | warm: venv cache | warm cache hit |"
    );
    println!("|---|---:|---:|---|");
    for (label, cold, warm) in &rows {
        println!(
            "| {label} | {:.2} ({:.2}) | {:.2} ({:.2}) | {} |",
            cold.env_secs,
            cold.total_secs,
            warm.env_secs,
            warm.total_secs,
            if warm.cache_hit { "yes" } else { "no" }
        );
    }
    if let [(_, oc, ow), (_, pc, pw)] = &rows[..] {
        println!(
            "| ratio (Python / ours) | {:.1}x | {:.1}x | |",
            pc.env_secs / oc.env_secs,
            pw.env_secs / ow.env_secs
        );
    }
    Ok(())
}
