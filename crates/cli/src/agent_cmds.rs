//! `daemon`, `execute`, `build` and `list`: the agent's own commands, flag for flag as the
//! Python clearml-agent has them. The work is in `clearml-daemon`; this file reads flags,
//! picks how output looks and turns results into exit codes.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use clearml_config::{Config, LoadOptions};
use clearml_daemon::{BuildOptions, DaemonOptions, ExecuteOptions};

use crate::progress::{Lines, for_stdout};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Queues to pull tasks from, highest priority first (names or ids); default: the
    /// server's default queue
    #[arg(long = "queue", num_args = 1.., value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// Create the queues that do not exist
    #[arg(long)]
    pub create_queue: bool,
    /// Take turns between the queues instead of always preferring the first
    #[arg(long)]
    pub order_fairness: bool,
    /// Seconds between queue polls when the server cannot long-poll (at least 5)
    #[arg(long, value_name = "SECONDS")]
    pub polling_interval: Option<f64>,
    /// Stay attached and show progress and the tasks' output
    #[arg(long)]
    pub foreground: bool,
    /// Run in the background (detach from the terminal); output goes to a log file
    #[arg(short = 'd', long)]
    pub detached: bool,
    /// Stop this user's agents on this machine: the given worker ids, or without ids every
    /// agent whose worker id is `<worker name>:...` (agent.worker_name, default: the host name)
    /// or equals agent.worker_id, whatever HOME or config file it was started with. Other
    /// users' agents and pid files that do not name a running clearml-agent daemon are skipped
    #[arg(long, num_args = 0.., value_name = "WORKER_ID")]
    pub stop: Option<Vec<String>>,
    /// GPUs the tasks may use (sets CUDA_VISIBLE_DEVICES / NVIDIA_VISIBLE_DEVICES)
    #[arg(long)]
    pub gpus: Option<String>,
    /// Run without GPUs
    #[arg(long)]
    pub cpu_only: bool,
    /// Tags to send with the worker's status reports
    #[arg(long, num_args = 1.., value_name = "TAG")]
    pub child_report_tags: Vec<String>,
    /// Docker mode: run each task in a container (the task's image, else this IMAGE and
    /// ARGS, else agent.default_docker)
    #[arg(long, num_args = 0.., value_name = "IMAGE")]
    pub docker: Option<Vec<String>>,
    /// Print a systemd unit that runs this daemon command as a service, and exit
    #[arg(long, conflicts_with_all = ["detached", "stop"])]
    pub print_systemd_unit: bool,
    /// Use podman instead of docker
    #[arg(long)]
    pub podman: bool,
}

#[derive(Debug, Args)]
pub struct ExecuteArgs {
    /// The task to run (id or name)
    #[arg(long)]
    pub id: String,
    /// Run a clone of the task instead of the task itself
    #[arg(long)]
    pub clone: bool,
    /// Fail unless the task is queued (it is taken out of its queue)
    #[arg(long)]
    pub require_queue: bool,
    /// Also register as a worker and send status reports while the task runs
    #[arg(long)]
    pub full_monitoring: bool,
    /// Prepare and run the task in this process, with no supervision (what the daemon
    /// starts for each task)
    #[arg(long)]
    pub disable_monitoring: bool,
    /// Also write the task's console to this file
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<PathBuf>,
    /// Run the task in a container (the task's image, else this IMAGE, else
    /// agent.default_docker)
    #[arg(long, num_args = 0.., value_name = "IMAGE")]
    pub docker: Option<Vec<String>>,
    /// Use podman instead of docker
    #[arg(long)]
    pub podman: bool,
    /// GPUs the container may use (docker mode)
    #[arg(long)]
    pub gpus: Option<String>,
    /// Run without GPUs
    #[arg(long)]
    pub cpu_only: bool,
}

#[derive(Debug, Args)]
pub struct BuildArgs {
    /// The task whose environment to build (id or name)
    #[arg(long)]
    pub id: String,
    /// Where to create the virtual environment
    #[arg(long, value_name = "DIR")]
    pub target: Option<PathBuf>,
    /// Build with this Python version instead of the task's
    #[arg(long, value_name = "X.Y")]
    pub python_version: Option<String>,
    /// Build inside the task's image (or this IMAGE) and commit the result as image --target
    #[arg(long, num_args = 0.., value_name = "IMAGE")]
    pub docker: Option<Vec<String>>,
    /// Use podman instead of docker
    #[arg(long)]
    pub podman: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn code(n: i32) -> ExitCode {
    ExitCode::from(u8::try_from(n.rem_euclid(256)).unwrap_or(1))
}

pub fn daemon(opts: &LoadOptions, args: &DaemonArgs, debug: bool) -> anyhow::Result<ExitCode> {
    if args.print_systemd_unit {
        return crate::service::print(opts);
    }
    let config = Config::load(opts)?;
    if let Some(ids) = &args.stop {
        return stop_agents(&config, ids);
    }
    if args.cpu_only && args.gpus.is_some() {
        bail!("--cpu-only and --gpus cannot be used together");
    }
    if args.detached {
        detach()?;
    }
    let options = DaemonOptions {
        queues: args.queues.clone(),
        create_queue: args.create_queue,
        order_fairness: args.order_fairness,
        polling_interval: args.polling_interval,
        foreground: args.foreground,
        cpu_only: args.cpu_only,
        gpus: args.gpus.clone(),
        child_report_tags: args.child_report_tags.clone(),
        config_file: opts.config_file.clone(),
        debug,
        docker: docker_mode(&args.docker, args.podman, &args.gpus, args.cpu_only),
    };
    let n = runtime()?.block_on(clearml_daemon::run_daemon(&config, options, &Lines))?;
    Ok(code(n))
}

/// `--docker [IMAGE [ARGS]]` (one quoted "IMAGE ARGS" string is split like a shell line).
fn docker_mode(
    docker: &Option<Vec<String>>,
    podman: bool,
    gpus: &Option<String>,
    cpu_only: bool,
) -> Option<clearml_daemon::DockerMode> {
    let cli = docker.as_ref()?;
    let cli = match cli.as_slice() {
        [one] if one.contains(' ') => shell_words::split(one).unwrap_or_else(|_| cli.clone()),
        _ => cli.clone(),
    };
    Some(clearml_daemon::DockerMode {
        cli,
        podman,
        gpus: gpus.clone(),
        cpu_only,
    })
}

/// Double-forks into the background; output goes to a file in the temp folder.
fn detach() -> anyhow::Result<()> {
    let log = std::env::temp_dir().join(format!(
        ".clearml_agent_daemon_out.{}.txt",
        std::process::id()
    ));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    println!(
        "Running in the background; output goes to {}",
        log.display()
    );
    nix::unistd::daemon(true, true).context("cannot detach")?;
    nix::unistd::dup2_stdout(&file).context("cannot redirect stdout")?;
    nix::unistd::dup2_stderr(&file).context("cannot redirect stderr")?;
    Ok(())
}

/// `daemon --stop [ID ...]`: SIGTERM this user's matching agents, wait, then SIGKILL
/// (which pid files are trusted: `clearml_daemon::plan_stop`).
fn stop_agents(config: &Config, ids: &[String]) -> anyhow::Result<ExitCode> {
    let agent = config.agent()?;
    let name = agent.worker_name.unwrap_or_else(clearml_config::host_name);
    let plan = clearml_daemon::plan_stop(
        &std::env::temp_dir(),
        ids,
        &name,
        agent.worker_id.as_deref(),
    );
    for s in &plan.skipped {
        println!("Not stopping pid {} ({}): {}", s.pid, s.worker_id, s.why);
    }
    if plan.targets.is_empty() {
        println!("Could not find a running clearml-agent to stop");
        return Ok(ExitCode::FAILURE);
    }
    for agent in &plan.targets {
        println!("Stopping worker {} (pid {})", agent.worker_id, agent.pid);
        clearml_daemon::stop_agent(agent, Duration::from_secs(10));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn execute(opts: &LoadOptions, args: &ExecuteArgs, debug: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    let rt = runtime()?;
    if args.disable_monitoring {
        let n = rt.block_on(clearml_daemon::execute_child(
            &config,
            &args.id,
            std::sync::Arc::new(Lines),
        ))?;
        return Ok(code(n));
    }
    let options = ExecuteOptions {
        task: args.id.clone(),
        clone: args.clone,
        require_queue: args.require_queue,
        full_monitoring: args.full_monitoring,
        log_file: args.log_file.clone(),
        config_file: opts.config_file.clone(),
        debug,
        docker: docker_mode(&args.docker, args.podman, &args.gpus, args.cpu_only),
    };
    if args.cpu_only && args.gpus.is_some() {
        bail!("--cpu-only and --gpus cannot be used together");
    }
    let n = rt.block_on(clearml_daemon::execute_monitored(&config, options, &Lines))?;
    Ok(code(n))
}

pub fn build(opts: &LoadOptions, args: &BuildArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    if let Some(mode) = docker_mode(&args.docker, args.podman, &None, false) {
        let Some(target) = &args.target else {
            bail!("build --docker needs --target IMAGE_NAME (the image to commit)");
        };
        let n = runtime()?.block_on(clearml_daemon::build_in_docker(
            &config,
            &args.id,
            mode,
            &target.to_string_lossy(),
            for_stdout(),
        ))?;
        return Ok(code(n));
    }
    let options = BuildOptions {
        task: args.id.clone(),
        target: args.target.clone(),
        python_version: args.python_version.clone(),
    };
    let n = runtime()?.block_on(clearml_daemon::build_environment(
        &config,
        options,
        for_stdout(),
    ))?;
    Ok(code(n))
}
