//! What each command does, given the parsed command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::CommandFactory;
use clearml_config::{Config, Env, LoadOptions};

use crate::args::{Cli, Command, ConfigArgs};

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.version {
        println!("CLEARML-AGENT version {VERSION} (rust)");
        return Ok(ExitCode::SUCCESS);
    }
    let Some(command) = &cli.command else {
        Cli::command().print_help()?;
        println!();
        return Ok(ExitCode::from(2));
    };
    let opts = load_options(&cli)?;
    match command {
        Command::Config(args) => config(&opts, args),
    }
}

/// The environment every command works with. `--config-file` is exported as
/// `CLEARML_CONFIG_FILE` (and `TRAINS_CONFIG_FILE`) in it, so the processes the agent starts
/// read the same file, as with the Python agent; `--debug` sets `agent.debug`.
fn load_options(cli: &Cli) -> anyhow::Result<LoadOptions> {
    let mut env = Env::from_process();
    let mut config_file = None;
    if let Some(file) = &cli.config_file {
        let file = absolute(&expand_user(file, &env))?;
        if !file.is_file() {
            bail!("configuration file {} does not exist", file.display());
        }
        let text = file.display().to_string();
        env.set("CLEARML_CONFIG_FILE", text.clone());
        env.set("TRAINS_CONFIG_FILE", text);
        config_file = Some(file);
    }
    if cli.debug {
        env.set("CLEARML_AGENT__AGENT__DEBUG", "true");
    }
    Ok(LoadOptions { config_file, env })
}

fn expand_user(p: &Path, env: &Env) -> PathBuf {
    match (p.strip_prefix("~"), env.get("HOME")) {
        (Ok(rest), Some(home)) => Path::new(home).join(rest),
        _ => p.to_path_buf(),
    }
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("cannot read the current directory")?
        .join(p))
}

/// `config`: load, check every typed setting, print with secrets hidden.
fn config(opts: &LoadOptions, args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    // Reading the typed settings reports a wrong type with its key and location now, rather
    // than when a task runs.
    config.agent()?;
    config.api()?;
    config.storage_cache()?;
    let masked = config.masked();
    if args.json {
        println!("{}", clearml_hocon::render_json(&masked));
        return Ok(ExitCode::SUCCESS);
    }
    let location = if config.files().is_empty() {
        "none, built-in defaults only".to_string()
    } else {
        config
            .files()
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "Current configuration (clearml_agent v{VERSION}, location: {location}):\n----------------------\n{}\n",
        clearml_hocon::render_properties(&masked)
    );
    Ok(ExitCode::SUCCESS)
}
