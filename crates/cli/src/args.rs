//! The command line, flag for flag as the Python clearml-agent has it.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

const ABOUT: &str = "CLEARML-AGENT AI Orchestration DevOps (a Rust drop-in for clearml-agent)";

#[derive(Debug, Parser)]
#[command(
    name = "clearml-agent",
    about = ABOUT,
    version,
    disable_version_flag = true,
    after_help = "Arguments can also be read from a file, one per line: clearml-agent @args.txt"
)]
pub struct Cli {
    /// Use a different configuration file (default: ~/clearml.conf); it must exist
    #[arg(long, global = true, value_name = "CONFIG_FILE")]
    pub config_file: Option<PathBuf>,

    /// Print debug information (sets agent.debug)
    #[arg(short = 'd', long)]
    pub debug: bool,

    /// Diagnostics level on stderr: debug, info, warning, error or critical (default:
    /// warning; debug with --debug)
    #[arg(long, global = true, value_name = "LEVEL", value_parser = crate::progress::parse_level)]
    pub log_level: Option<tracing_subscriber::filter::LevelFilter>,

    /// Print the version and exit
    #[arg(long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up ~/clearml.conf: paste credentials, hosts, git and package index settings
    Init(crate::init::InitArgs),
    /// Check the configuration and print it (secrets hidden)
    Config(ConfigArgs),
    /// Pull tasks from queues and run them (the worker)
    Daemon(crate::agent_cmds::DaemonArgs),
    /// Run one task now, here
    Execute(crate::agent_cmds::ExecuteArgs),
    /// Build a task's environment (code and virtual environment) without running it
    Build(crate::agent_cmds::BuildArgs),
    /// List the workers the server knows
    List(crate::agent_cmds::ListArgs),
    /// Show and apply the size policy of the agent's caches
    #[command(subcommand)]
    Cache(crate::cache_cmds::CacheCommand),
    /// Run the embedded ClearML-compatible server (API + files server, SQLite)
    Server(ServerArgs),
    /// Create, enqueue, abort and inspect tasks (what `clearml-task` does)
    #[command(subcommand)]
    Task(crate::task_cmds::TaskCommand),
    /// Queues on the server
    #[command(subcommand)]
    Queue(crate::task_cmds::QueueCommand),
    /// Workers on the server
    #[command(subcommand)]
    Worker(crate::task_cmds::WorkerCommand),
    /// Run queued tasks as Slurm jobs (sbatch) on an existing cluster
    Slurm(crate::slurm_cmd::SlurmArgs),
    /// Check this machine is ready: config, servers, credentials, git, Python, uv, docker, disk, GPU
    Doctor(crate::doctor::DoctorArgs),
    /// Print a shell completion script (bash: `clearml-agent completions bash > /etc/bash_completion.d/clearml-agent`)
    Completions {
        #[arg(value_enum)]
        shell: crate::completions::Shell,
    },
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (loopback unless told otherwise)
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// API port
    #[arg(long, default_value_t = 8008)]
    pub port: u16,
    /// Files server port
    #[arg(long, default_value_t = 8081)]
    pub files_port: u16,
    /// Dashboard (web UI) port
    #[arg(long, default_value_t = 8080)]
    pub web_port: u16,
    /// Where the database and uploaded files live (default: ~/.clearml/server)
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Accept this access key (with --secret-key); without keys, a pair is generated on first start
    #[arg(long, requires = "secret_key", env = "CLEARML_SERVER_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// The secret key that goes with --access-key
    #[arg(
        long,
        requires = "access_key",
        env = "CLEARML_SERVER_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// Stop in-progress tasks that sent no report for this many seconds
    #[arg(long, default_value_t = 7200, value_name = "SECONDS")]
    pub task_timeout: i64,
    #[command(subcommand)]
    pub command: Option<crate::server_keys::ServerCommand>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print the effective configuration as JSON (secrets hidden) for scripts
    #[arg(long)]
    pub json: bool,
}

pub fn parse(argv: Vec<OsString>) -> Cli {
    Cli::parse_from(argv)
}

/// `@file` arguments are replaced by the file's lines, one argument per line, as Python's
/// argparse `fromfile_prefix_chars='@'` does.
pub fn expand_arg_files(argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let mut out = Vec::with_capacity(argv.len());
    for (i, arg) in argv.into_iter().enumerate() {
        let file = arg
            .to_str()
            .filter(|s| i > 0 && s.len() > 1)
            .and_then(|s| s.strip_prefix('@'))
            .map(PathBuf::from);
        match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read arguments from {}", path.display()))?;
                out.extend(text.lines().map(OsString::from));
            }
            None => out.push(arg),
        }
    }
    Ok(out)
}
