//! `clearml-agent`: the command line. Parsing and printing live here; the work lives in the
//! library crates (`clearml-config`, `clearml-hocon`, ...).

mod agent_cmds;
mod args;
mod cache_cmds;
mod commands;
mod init;
mod server_keys;
mod task_cmds;

use std::process::ExitCode;

fn main() -> ExitCode {
    let argv = match args::expand_arg_files(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("clearml-agent: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = args::parse(argv);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clearml-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
