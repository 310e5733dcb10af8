//! `clearml-agent completions bash|zsh|fish`: the shell completion script, generated from the
//! same clap definition the binary parses with, so it never lags behind a new flag.

use std::process::ExitCode;

use clap::{CommandFactory as _, ValueEnum};

/// The shells a completion script can be printed for.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script for `shell` to stdout.
pub fn print(shell: Shell) -> anyhow::Result<ExitCode> {
    let mut cmd = crate::args::Cli::command();
    let mut script = Vec::new();
    let generator = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(generator, &mut cmd, "clearml-agent", &mut script);
    if let Shell::Bash = shell {
        script = fix_bash_names(&script);
    }
    crate::term::write_stdout(&script)?;
    Ok(ExitCode::SUCCESS)
}

/// clap_complete's bash script tracks the subcommand typed so far in `cmd`, built from the
/// binary's name with `-` turned into `__` (`clearml__agent__subcmd__daemon`), but spells its
/// `case` labels with `-` turned into `__subcmd__` (`clearml__subcmd__agent__subcmd__daemon`), so
/// no subcommand's flags were ever offered. The labels are brought in line with `cmd`.
fn fix_bash_names(script: &[u8]) -> Vec<u8> {
    String::from_utf8_lossy(script)
        .replace("clearml__subcmd__agent", "clearml__agent")
        .into_bytes()
}
