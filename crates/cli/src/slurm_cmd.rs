//! `slurm`: the Slurm glue (submit queued tasks as sbatch jobs) and its hidden job-side half
//! (`slurm job`, which the submitted scripts run). The work is in `clearml-slurm`.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use clearml_config::{Config, LoadOptions};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct SlurmArgs {
    #[command(subcommand)]
    pub command: Option<SlurmCommand>,
    /// Queues to pull tasks from, highest priority first (names or ids); default: the
    /// server's default queue
    #[arg(long = "queue", num_args = 1.., value_name = "QUEUE")]
    pub queues: Vec<String>,
    /// sbatch templates: one for all queues, or one per queue in --queue order (default: a
    /// built-in template)
    #[arg(long = "template", num_args = 1.., value_name = "FILE")]
    pub templates: Vec<PathBuf>,
    /// Jobs in flight (pending or running) at most; further tasks wait in their queues
    #[arg(long, value_name = "N")]
    pub max_jobs: Option<usize>,
    /// Create the queues that do not exist
    #[arg(long)]
    pub create_queue: bool,
    /// Seconds between passes over Slurm's queue and the task queues (at least 5, unless
    /// CLEARML_AGENT_QUEUE_POLL_FREQ_SEC says otherwise)
    #[arg(long, value_name = "SECONDS")]
    pub polling_interval: Option<f64>,
}

#[derive(Debug, Subcommand)]
pub enum SlurmCommand {
    /// Run a job's script for a task (what the submitted sbatch scripts call)
    #[command(hide = true)]
    Job(JobArgs),
}

#[derive(Debug, Args)]
pub struct JobArgs {
    #[arg(long)]
    pub task: String,
    #[arg(long)]
    pub worker: String,
    #[arg(long)]
    pub remove: Option<PathBuf>,
    /// The interpreter and script to run
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

struct Stdout;

impl clearml_slurm::Console for Stdout {
    fn line(&self, text: &str) {
        println!("{text}");
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

pub fn run(opts: &LoadOptions, args: &SlurmArgs, debug: bool) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    if let Some(SlurmCommand::Job(job)) = &args.command {
        let options = clearml_slurm::JobOptions {
            task: job.task.clone(),
            worker_id: job.worker.clone(),
            command: job.command.clone(),
            remove: job.remove.clone(),
            echo: Some(Box::new(|bytes: &[u8]| {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes);
                let _ = out.flush();
            })),
        };
        let n = runtime()?.block_on(clearml_slurm::run_job(&config, options))?;
        return Ok(ExitCode::from(u8::try_from(n.rem_euclid(256)).unwrap_or(1)));
    }
    let options = clearml_slurm::GlueOptions {
        queues: args.queues.clone(),
        templates: args.templates.clone(),
        max_jobs: args.max_jobs,
        create_queue: args.create_queue,
        config_file: opts.config_file.clone(),
        debug,
        polling_interval: args.polling_interval,
    };
    let n = runtime()?.block_on(clearml_slurm::run_glue(&config, options, &Stdout))?;
    Ok(ExitCode::from(u8::try_from(n.rem_euclid(256)).unwrap_or(1)))
}
