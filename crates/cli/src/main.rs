//! `clearml-agent`: the command line. Parsing and printing live here; the work lives in the
//! library crates (`clearml-config`, `clearml-hocon`, ...), which never print: they report
//! through `clearml-progress` and `tracing`, and [`progress`] decides how that looks.
// The binary is the one place that prints (the workspace denies it everywhere else).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod agent_cmds;
mod args;
mod cache_cmds;
mod commands;
mod completions;
mod config_docker;
mod derived;
mod doctor;
mod init;
mod progress;
mod server_keys;
mod service;
mod slurm_cmd;
mod task_cmds;
mod term;

use std::process::ExitCode;

fn main() -> ExitCode {
    clearml_daemon::timing::main_entered();
    term::exit_quietly_on_broken_pipe();
    let argv = match args::expand_arg_files(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("clearml-agent: error: {e:#}");
            return ExitCode::from(2);
        }
    };
    let cli = args::parse(argv);
    progress::init_tracing(cli.log_level, cli.debug);
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("clearml-agent: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
