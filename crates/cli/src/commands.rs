//! What each command does, given the parsed command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::CommandFactory;
use clearml_config::{Config, Env, LoadOptions};

use crate::args::{Cli, Command, ConfigArgs, ServerArgs};

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
    // A completion script needs no configuration.
    if let Command::Completions { shell } = command {
        return crate::completions::print(*shell);
    }
    // `init` writes the file `--config-file` names, so only there may it not exist yet.
    let creates_config = matches!(command, Command::Init(_));
    let opts = load_options(&cli, creates_config)?;
    match command {
        Command::Config(args) => config(&opts, args),
        Command::Init(args) => crate::init::run(&opts, args),
        Command::Server(args) => server(&opts, args),
        Command::Daemon(args) => crate::agent_cmds::daemon(&opts, args, cli.debug, cli.log_level),
        Command::Execute(args) => crate::agent_cmds::execute(&opts, args, cli.debug, cli.log_level),
        Command::Build(args) => crate::agent_cmds::build(&opts, args, cli.log_level),
        Command::Cache(c) => crate::cache_cmds::run(&opts, c),
        Command::List(args) => crate::task_cmds::run_worker(
            &opts,
            &crate::task_cmds::WorkerCommand::List { json: args.json },
        ),
        Command::Task(c) => crate::task_cmds::run_task(&opts, c),
        Command::Queue(c) => crate::task_cmds::run_queue(&opts, c),
        Command::Worker(c) => crate::task_cmds::run_worker(&opts, c),
        Command::Slurm(args) => crate::slurm_cmd::run(&opts, args, cli.debug),
        Command::Doctor(args) => crate::doctor::run(&opts, args),
        Command::Completions { shell } => crate::completions::print(*shell),
    }
}

/// The environment every command works with. `--config-file` is exported as
/// `CLEARML_CONFIG_FILE` (and `TRAINS_CONFIG_FILE`) in it, so the processes the agent starts
/// read the same file, as with the Python agent; `--debug` sets `agent.debug`.
fn load_options(cli: &Cli, may_be_missing: bool) -> anyhow::Result<LoadOptions> {
    let mut env = Env::from_process();
    let mut config_file = None;
    if let Some(file) = &cli.config_file {
        let file = user_path(file, &env)?;
        if !file.is_file() && !may_be_missing {
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

/// `~` expanded (see `Env::expand_user`), then made absolute against the current folder.
fn user_path(p: &Path, env: &Env) -> anyhow::Result<PathBuf> {
    let p = match p.to_str() {
        Some(s) => PathBuf::from(env.expand_user(s)),
        None => p.to_path_buf(),
    };
    std::path::absolute(&p).context("cannot read the current directory")
}

/// `config`: load, check every typed setting, print with secrets hidden.
fn config(opts: &LoadOptions, args: &ConfigArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    // Reading the typed settings reports a wrong type with its key and location now, rather
    // than when a task runs.
    config.agent()?;
    config.api()?;
    config.storage_cache()?;
    config.vcs()?;
    config.venvs_cache()?;
    config.monitor()?;
    let docker = config.docker()?;
    let mut masked = config.masked();
    crate::derived::add_derived(&config, &mut masked);
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
    println!("Docker mode (effective values):\n----------------------");
    for l in crate::config_docker::effective_lines(&docker) {
        println!("{l}");
    }
    println!();
    Ok(ExitCode::SUCCESS)
}

/// `server`: run the embedded server until Ctrl-C or SIGTERM.
fn server(opts: &LoadOptions, args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let data_dir = match &args.data_dir {
        Some(d) => user_path(d, &opts.env)?,
        None => Path::new(
            opts.env
                .get("HOME")
                .context("HOME is not set; pass --data-dir")?,
        )
        .join(".clearml/server"),
    };
    if let Some(command) = &args.command {
        return crate::server_keys::run(&data_dir, command);
    }
    let mut config = clearml_server::ServerConfig::new(data_dir.clone());
    config.host = args.host.clone();
    config.port = args.port;
    config.files_port = args.files_port;
    config.web_port = Some(args.web_port);
    config.task_timeout_sec = args.task_timeout;
    if let (Some(access_key), Some(secret_key)) = (&args.access_key, &args.secret_key) {
        config.credential = Some(clearml_server::Credential {
            access_key: access_key.clone(),
            secret_key: secret_key.clone(),
        });
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let server = clearml_server::Server::start(config).await?;
        let api = format!("http://{}", server.api_addr());
        let files = format!("http://{}", server.files_addr());
        let web = server
            .web_addr()
            .map_or_else(|| api.clone(), |a| format!("http://{a}"));
        let c = server.credential();
        for warning in server.warnings() {
            eprintln!("warning: {warning}");
        }
        // The secret is shown once, when it is made; later starts show the key only.
        let secret = if server.generated_credentials() {
            println!("Created credentials (stored in {})", data_dir.display());
            c.secret_key.clone()
        } else {
            "<the secret key given with this access key>".to_string()
        };
        println!(
            "ClearML-compatible server listening: API {api}, files {files}, data in {}\n\
             Paste this into `clearml-agent init` (or put it in ~/clearml.conf):\n\n\
             api {{\n    web_server: {web}\n    api_server: {api}\n    files_server: {files}\n    \
             credentials {{\n        \"access_key\" = \"{}\"\n        \"secret_key\" = \"{}\"\n    }}\n}}\n",
            data_dir.display(),
            c.access_key,
            secret
        );
        match (server.web_addr(), server.web_signin_link(), server.web_error()) {
            (Some(addr), Some(link), _) => println!(
                "Dashboard: http://{addr} (sign in with the key pair above, or open this one-time link: {link})"
            ),
            (_, _, Some(e)) => println!("Dashboard not started: {e}"),
            _ => {}
        }
        server.run_until(shutdown_signal()).await;
        println!("server stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
