//! `clearml-agent server keys list|revoke`: the access keys of the embedded server's data
//! folder, worked on in its database (a running server sees a revocation within seconds).

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ServerCommand {
    /// List or revoke the access keys the server accepts
    #[command(subcommand)]
    Keys(KeysCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the access keys (secrets are never shown)
    List,
    /// Revoke an access key: it can no longer log in, and its tokens stop working
    Revoke {
        /// The access key to revoke
        access_key: String,
    },
}

pub fn run(data_dir: &Path, command: &ServerCommand) -> anyhow::Result<ExitCode> {
    let ServerCommand::Keys(keys) = command;
    match keys {
        KeysCommand::List => {
            for key in clearml_server::list_keys(data_dir)? {
                println!("{key}");
            }
            Ok(ExitCode::SUCCESS)
        }
        KeysCommand::Revoke { access_key } => {
            if clearml_server::revoke_key(data_dir, access_key)? {
                println!("revoked {access_key}");
                Ok(ExitCode::SUCCESS)
            } else {
                anyhow::bail!(
                    "no access key {access_key} in {} (see `server keys list`)",
                    data_dir.display()
                )
            }
        }
    }
}
