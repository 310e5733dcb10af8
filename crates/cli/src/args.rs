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

    /// Print the version and exit
    #[arg(long)]
    pub version: bool,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check the configuration and print it (secrets hidden)
    Config(ConfigArgs),
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
