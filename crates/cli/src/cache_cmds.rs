//! `clearml-agent cache status|prune`. (Being written; see issue 5.)

use std::process::ExitCode;

use clap::Subcommand;
use clearml_config::LoadOptions;

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Show what the agent's caches hold and the size policy
    Status,
}

pub fn run(_opts: &LoadOptions, _c: &CacheCommand) -> anyhow::Result<ExitCode> {
    anyhow::bail!("cache commands are not available yet")
}
