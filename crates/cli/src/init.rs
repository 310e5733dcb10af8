//! `clearml-agent init`: the setup wizard. (Being written; see issue 6.)

use std::process::ExitCode;

use clap::Args;
use clearml_config::LoadOptions;

#[derive(Debug, Args)]
pub struct InitArgs {}

pub fn run(_opts: &LoadOptions, _args: &InitArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("init is not available yet")
}
