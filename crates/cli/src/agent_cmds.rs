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
use tracing_subscriber::filter::LevelFilter;

/// Flags every task-running command shares (`daemon`, `execute`, `build`): they override the
/// configuration for this run only and reach the task's process as environment variables.
#[derive(Clone, Debug, Args, Default)]
pub struct RunFlags {
    /// Run the task's Python with optimizations (-O; repeat for -OO)
    ///
    /// Sets PYTHONOPTIMIZE for the task's process, which Python treats exactly as -O given
    /// that many times.
    #[arg(short = 'O', action = clap::ArgAction::Count)]
    pub optimize: u8,
    /// git user name for repository access (overrides agent.git_user for this run)
    #[arg(long, value_name = "GIT_USER")]
    pub git_user: Option<String>,
    /// git password or access token for repository access (overrides agent.git_pass)
    #[arg(long, value_name = "GIT_PASS")]
    pub git_pass: Option<String>,
    /// Set by the global `--log-level` (which also sets this agent's own diagnostics level):
    /// the task's SDK log level, CLEARML_LOG_LEVEL.
    #[arg(skip)]
    pub log_level: Option<LevelFilter>,
}

impl RunFlags {
    /// The variables that carry these flags to the task (and to the child agent, whose
    /// configuration reads `CLEARML_AGENT_GIT_USER`/`_PASS`).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.optimize > 0 {
            out.push(("PYTHONOPTIMIZE".into(), self.optimize.to_string()));
        }
        if let Some(u) = &self.git_user {
            out.push(("CLEARML_AGENT_GIT_USER".into(), u.clone()));
        }
        if let Some(p) = &self.git_pass {
            out.push(("CLEARML_AGENT_GIT_PASS".into(), p.clone()));
        }
        if let Some(l) = self.log_level {
            let name = match l {
                LevelFilter::OFF => "CRITICAL",
                LevelFilter::ERROR => "ERROR",
                LevelFilter::WARN => "WARNING",
                LevelFilter::INFO => "INFO",
                _ => "DEBUG",
            };
            out.push(("CLEARML_LOG_LEVEL".into(), name.into()));
            out.push(("TRAINS_LOG_LEVEL".into(), name.into()));
        }
        out
    }

    /// `opts` with these flags' variables in its environment, so this process's own
    /// configuration (git credentials) sees them too.
    pub fn apply(&self, opts: &LoadOptions) -> LoadOptions {
        let mut opts = opts.clone();
        for (k, v) in self.env() {
            opts.env.set(k, v);
        }
        opts
    }
}

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
    /// Docker mode with podman: like --docker [IMAGE [ARGS]], run by podman (also as
    /// `--docker [IMAGE [ARGS]] --podman`)
    #[arg(long, num_args = 0.., value_name = "IMAGE")]
    pub podman: Option<Vec<String>>,
    /// Run several long-lived tasks at once, at most N (no N: no limit)
    ///
    /// Each task runs with its own worker id `<worker id>:service:<task id>`, its own work
    /// folder and its own console shipping; the daemon keeps pulling while they run. Implies
    /// --cpu-only. SIGTERM stops every running task and marks it stopped.
    #[arg(long, num_args = 0..=1, default_missing_value = "0", value_name = "N")]
    pub services_mode: Option<usize>,
    /// Hours in which to take tasks, "<hours> <days>", e.g. "17-20 SUN,TUE"
    ///
    /// Hours are H or H-K (K:00 exclusive, wrapping past midnight when K < H), days SUN..SAT
    /// as a comma list or ranges (MON-FRI); no days means every day. Outside the window the
    /// daemon takes no task but keeps reporting. Overrides agent.uptime. A queue tagged
    /// force_workers:on is served anyway, one tagged force_workers:off never.
    #[arg(long, num_args = 0.., value_name = "HOURS DAYS", conflicts_with = "downtime")]
    pub uptime: Option<Vec<String>>,
    /// Hours in which to take no task, same format as --uptime (overrides agent.downtime)
    #[arg(long, num_args = 0.., value_name = "HOURS DAYS")]
    pub downtime: Option<Vec<String>>,
    /// List this machine's agents (worker id, queues, pid, current task, since when), and exit
    #[arg(long, conflicts_with_all = ["detached", "stop"])]
    pub status: bool,
    /// With --stop: let the running task finish, take nothing new, then exit
    ///
    /// Plain --stop ends the running task at once and marks it stopped (never completed).
    #[arg(long, requires = "stop")]
    pub wait: bool,
    /// Split --gpus between the queues: --queue q=N (N GPUs per task) or q=MIN-MAX
    ///
    /// Example: --dynamic-gpus --gpus 0-3 --queue dual_gpus=2 single_gpu=1. Each task gets
    /// free GPUs from the --gpus pool for as long as it runs.
    #[arg(long, requires = "gpus")]
    pub dynamic_gpus: bool,
    /// Build no environment and install nothing: tasks run with the Python as it is
    ///
    /// agent.python_binary, else the task's Python version on PATH. The code is still
    /// checked out (through the repository cache).
    #[arg(long)]
    pub standalone_mode: bool,
    /// Run each task as its owner: the task's calls use the owner's identity, not the agent's
    ///
    /// The agent's key must be an admin's (refused at start otherwise). For each task the agent
    /// logs in with X-Clearml-Impersonate-As: <owner> and hands the owner's token to the task
    /// instead of its own keys. Works with `clearml-agent server` (its admin keys) and servers
    /// that allow impersonation; where the server refuses, the task fails with the reason.
    #[arg(long)]
    pub use_owner_token: bool,
    /// Accepted for compatibility; changes nothing
    ///
    /// The Python agent checks a clearml-agent-bootstrap package; this agent is one binary
    /// with nothing to bootstrap, so there is nothing to check.
    #[arg(long)]
    pub check_bootstrap: bool,
    /// Accepted for compatibility; changes nothing
    ///
    /// The Python agent pip-installs itself inside each container; this agent mounts its own
    /// running binary into the container, so the container always runs this version.
    #[arg(long)]
    pub force_current_version: bool,
    #[command(flatten)]
    pub run: RunFlags,
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
    /// GPUs the task may use (sets NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES)
    #[arg(long)]
    pub gpus: Option<String>,
    /// Run without GPUs
    #[arg(long)]
    pub cpu_only: bool,
    /// Build no environment and install nothing: run the task with the Python as it is
    ///
    /// agent.python_binary, else the task's Python version on PATH. The code is still
    /// checked out (through the repository cache).
    #[arg(long)]
    pub standalone_mode: bool,
    #[command(flatten)]
    pub run: RunFlags,
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
    /// With --docker: use the agent's image (--docker IMAGE or agent.default_docker), never
    /// the task's own
    #[arg(long)]
    pub force_docker: bool,
    /// Let the environment see the system's site-packages (agent.package_manager.
    /// system_site_packages for this build)
    #[arg(long)]
    pub install_globally: bool,
    /// Accepted for compatibility: how a committed --docker image starts the task
    ///
    /// The Python agent sets the image's ENTRYPOINT to `execute --id T [--clone]`. Our images
    /// hold the environment, not the agent (the agent is mounted when it runs them), so they
    /// are run with `execute --docker IMAGE --id T` (add --clone to run a clone); this value
    /// is checked and otherwise changes nothing.
    #[arg(long, value_name = "ENTRY", value_parser = ["reuse_task", "clone_task"])]
    pub entry_point: Option<String>,
    /// GPUs the build may use (docker mode)
    #[arg(long)]
    pub gpus: Option<String>,
    /// Build without GPUs
    #[arg(long)]
    pub cpu_only: bool,
    #[command(flatten)]
    pub run: RunFlags,
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

/// The daemon's runtime: one thread. It only waits (on the queue, on its children's pipes,
/// on timers), and every worker thread costs resident memory (its stack pages and a malloc
/// arena) for as long as the daemon idles.
fn daemon_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn code(n: i32) -> ExitCode {
    ExitCode::from(u8::try_from(n.rem_euclid(256)).unwrap_or(1))
}

pub fn daemon(
    opts: &LoadOptions,
    args: &DaemonArgs,
    debug: bool,
    log_level: Option<LevelFilter>,
) -> anyhow::Result<ExitCode> {
    if args.print_systemd_unit {
        return crate::service::print(opts);
    }
    let run = RunFlags {
        log_level,
        ..args.run.clone()
    };
    let opts = &run.apply(opts);
    let config = Config::load(opts)?;
    if args.status {
        return status(&config);
    }
    if let Some(ids) = &args.stop {
        return stop_agents(&config, ids, args.wait);
    }
    if args.cpu_only && args.gpus.is_some() {
        bail!("--cpu-only and --gpus cannot be used together");
    }
    // --dynamic-gpus: `--queue name=N` entries and the --gpus pool.
    let (queues, dynamic_gpus) = if args.dynamic_gpus {
        if args.services_mode.is_some() {
            bail!("--dynamic-gpus and --services-mode cannot be used together");
        }
        let shares = clearml_daemon::parse_queues(&args.queues)?;
        let pool = clearml_daemon::parse_pool(args.gpus.as_deref().unwrap_or_default())?;
        let names = shares.iter().map(|q| q.queue.clone()).collect();
        (
            names,
            Some(clearml_daemon::DynamicGpus {
                pool,
                queues: shares,
            }),
        )
    } else {
        (args.queues.clone(), None)
    };
    // --uptime/--downtime, else agent.uptime/agent.downtime: checked before detaching.
    clearml_daemon::schedule_for(&config, &args.uptime, &args.downtime)?;
    if args.detached {
        detach()?;
    }
    let (docker, podman) = match (&args.podman, &args.docker) {
        (Some(p), Some(d)) if p.is_empty() => (Some(d.clone()), true),
        (Some(_), Some(_)) => {
            anyhow::bail!("give the image to --docker or to --podman, not to both")
        }
        (Some(p), None) => (Some(p.clone()), true),
        (None, d) => (d.clone(), false),
    };
    let options = DaemonOptions {
        queues,
        create_queue: args.create_queue,
        order_fairness: args.order_fairness,
        polling_interval: args.polling_interval,
        foreground: args.foreground,
        cpu_only: args.cpu_only,
        gpus: args.gpus.clone(),
        child_report_tags: args.child_report_tags.clone(),
        config_file: opts.config_file.clone(),
        debug,
        docker: docker_mode(&docker, podman, &args.gpus, args.cpu_only),
        extra_env: child_env(&run, args.standalone_mode),
        uptime: args.uptime.clone(),
        downtime: args.downtime.clone(),
        services_mode: args.services_mode,
        dynamic_gpus,
        use_owner_token: args.use_owner_token,
    };
    let n = daemon_runtime()?.block_on(clearml_daemon::run_daemon(&config, options, &Lines))?;
    Ok(code(n))
}

/// What the task's process gets from the shared flags (and `--standalone-mode`).
fn child_env(run: &RunFlags, standalone: bool) -> Vec<(String, String)> {
    let mut env = run.env();
    if standalone {
        env.push((clearml_daemon::STANDALONE_VAR.into(), "1".into()));
    }
    env
}

/// `daemon --status`: this machine's agents, with what the server knows of each.
fn status(config: &Config) -> anyhow::Result<ExitCode> {
    let local = clearml_daemon::running_agents(&std::env::temp_dir());
    if local.is_empty() {
        println!("No clearml-agent daemon runs on this machine");
        return Ok(ExitCode::SUCCESS);
    }
    let workers = runtime()?
        .block_on(clearml_daemon::list_workers(config))
        .ok()
        .and_then(|v| v.get("workers").and_then(|w| w.as_array()).cloned())
        .unwrap_or_default();
    println!(
        "{:<32} {:>8}  {:<24} {:<34} SINCE",
        "WORKER", "PID", "QUEUES", "TASK"
    );
    for a in &local {
        let w = workers
            .iter()
            .find(|w| w.get("id").and_then(|v| v.as_str()) == Some(a.worker_id.as_str()));
        let field = |path: &[&str]| -> String {
            let mut v = w;
            for p in path {
                v = v.and_then(|x| x.get(*p));
            }
            v.and_then(|x| x.as_str()).unwrap_or("-").to_string()
        };
        let queues = w
            .and_then(|w| w.get("queues"))
            .and_then(|q| q.as_array())
            .map(|qs| {
                qs.iter()
                    .filter_map(|q| {
                        q.get("name")
                            .or_else(|| q.get("id"))
                            .and_then(|v| v.as_str())
                            .or_else(|| q.as_str())
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into());
        let task = field(&["task", "id"]);
        let since = if task != "-" {
            field(&["task", "started"])
        } else {
            field(&["register_time"])
        };
        println!(
            "{:<32} {:>8}  {:<24} {:<34} {}",
            a.worker_id, a.pid, queues, task, since
        );
    }
    Ok(ExitCode::SUCCESS)
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
/// (which pid files are trusted: `clearml_daemon::plan_stop`). With `--wait`: SIGUSR1, which
/// makes a daemon finish its running task, take nothing new and exit; wait for that.
fn stop_agents(config: &Config, ids: &[String], wait: bool) -> anyhow::Result<ExitCode> {
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
        if wait {
            println!(
                "Stopping worker {} (pid {}) once its running task ends",
                agent.worker_id, agent.pid
            );
            clearml_daemon::drain_agent(agent);
        } else {
            println!("Stopping worker {} (pid {})", agent.worker_id, agent.pid);
            clearml_daemon::stop_agent(agent, Duration::from_secs(10));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn execute(
    opts: &LoadOptions,
    args: &ExecuteArgs,
    debug: bool,
    log_level: Option<LevelFilter>,
) -> anyhow::Result<ExitCode> {
    let run = RunFlags {
        log_level,
        ..args.run.clone()
    };
    let extra_env = child_env(&run, args.standalone_mode);
    if args.disable_monitoring && !extra_env.is_empty() && reexec_with(&extra_env)? {
        unreachable!("exec returned");
    }
    let opts = &run.apply(opts);
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
        extra_env,
        visible: if args.cpu_only {
            Some("none".into())
        } else {
            args.gpus.clone()
        },
    };
    if args.cpu_only && args.gpus.is_some() {
        bail!("--cpu-only and --gpus cannot be used together");
    }
    let n = rt.block_on(clearml_daemon::execute_monitored(&config, options, &Lines))?;
    Ok(code(n))
}

/// `execute --disable-monitoring` becomes the task with `exec`, so the flags' variables must
/// be in this process's own environment: run this same command again with them set (once:
/// the marker variable says it is done). Returns false when that already happened.
fn reexec_with(env: &[(String, String)]) -> anyhow::Result<bool> {
    use std::os::unix::process::CommandExt as _;
    const DONE: &str = "CLEARML_AGENT_FLAGS_IN_ENV";
    if std::env::var_os(DONE).is_some() {
        return Ok(false);
    }
    let exe = std::env::current_exe().context("cannot find this program")?;
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env(DONE, "1")
        .exec();
    Err(anyhow::Error::new(err).context("cannot re-run the agent with its flags"))
}

pub fn build(
    opts: &LoadOptions,
    args: &BuildArgs,
    log_level: Option<LevelFilter>,
) -> anyhow::Result<ExitCode> {
    let run = RunFlags {
        log_level,
        ..args.run.clone()
    };
    let mut opts = run.apply(opts);
    if args.force_docker {
        opts.env
            .set("CLEARML_AGENT__AGENT__DISABLE_TASK_DOCKER_OVERRIDE", "true");
    }
    if args.install_globally {
        opts.env.set(
            "CLEARML_AGENT__AGENT__PACKAGE_MANAGER__SYSTEM_SITE_PACKAGES",
            "true",
        );
    }
    if args.cpu_only && args.gpus.is_some() {
        bail!("--cpu-only and --gpus cannot be used together");
    }
    let config = Config::load(&opts)?;
    if let Some(mode) = docker_mode(&args.docker, args.podman, &args.gpus, args.cpu_only) {
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
