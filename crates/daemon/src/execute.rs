//! `execute` (one task, here and now), its `--disable-monitoring` child half, `build`
//! (environment only) and `list` (workers).

use std::path::PathBuf;
use std::sync::Arc;

use clearml_api::{Client, ClientConfig};
use clearml_config::Config;
use clearml_report::StatusReporter;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::daemon::child_command;
use crate::identity;
use crate::monitor::{self, Ending};
use crate::prepare::{self, PrepareOptions, PrepareSettings};
use crate::settings::DaemonSettings;
use crate::{Console, DaemonError};

/// `execute`'s command line.
#[derive(Clone, Debug, Default)]
pub struct ExecuteOptions {
    /// A task id or name.
    pub task: String,
    pub clone: bool,
    pub require_queue: bool,
    pub full_monitoring: bool,
    pub log_file: Option<PathBuf>,
    pub config_file: Option<PathBuf>,
    pub debug: bool,
    /// `--docker [IMAGE]`: run the task in a container.
    pub docker: Option<crate::DockerMode>,
    /// Variables for the task's process (`-O`, `--log-level`, `--git-user`, `--git-pass`).
    pub extra_env: Vec<(String, String)>,
    /// `--gpus` / `--cpu-only` (`none`) for the task's process.
    pub visible: Option<String>,
}

/// `build`'s command line.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    pub task: String,
    pub target: Option<PathBuf>,
    pub python_version: Option<String>,
}

/// Set to `1` in the task process's environment by `--standalone-mode`.
pub const STANDALONE_VAR: &str = "CLEARML_AGENT_STANDALONE_MODE";

pub(crate) fn client_for(
    config: &Config,
    worker: Option<String>,
) -> Result<Arc<Client>, DaemonError> {
    // A task run as its owner (`daemon --use-owner-token`) gets the owner's token: every call
    // acts as the owner, as the SDK's calls do with the same variable. Its configuration may
    // have no keys at all (a container's).
    let Some(token) = crate::owner::token_from_env() else {
        let mut c = ClientConfig::from_config(config)?;
        c.worker = worker;
        return Ok(Arc::new(Client::new(c)?));
    };
    let mut c = match ClientConfig::from_config(config) {
        Ok(c) => c,
        Err(_) => {
            let api = config.api()?;
            ClientConfig {
                api_server: api.api_server.ok_or_else(|| {
                    DaemonError::Task("no API server configured (api.api_server)".into())
                })?,
                access_key: String::new(),
                secret_key: String::new(),
                verify_certificate: api.verify_certificate,
                method: api.default_method.unwrap_or_else(|| "post".into()),
                worker: None,
                retry_for: std::time::Duration::from_secs(60),
                timeout: std::time::Duration::from_secs(30),
            }
        }
    };
    c.worker = worker;
    Ok(Arc::new(Client::with_token(c, &token)?))
}

/// The worker id of a one-off `execute`: the daemon's (inherited), the configured one, or
/// `<name>:<pid>` as the Python agent names it.
pub(crate) fn execute_worker_id(config: &Config) -> Result<String, DaemonError> {
    if let Some(id) = config
        .env()
        .get("CLEARML_WORKER_ID")
        .filter(|s| !s.is_empty())
    {
        return Ok(id.to_string());
    }
    let agent = config.agent()?;
    Ok(agent.worker_id.unwrap_or_else(|| {
        format!(
            "{}:{}",
            agent.worker_name.unwrap_or_else(identity::host_name),
            std::process::id()
        )
    }))
}

/// The task `wanted` names (an id or a name, by the rule of `clearml_api::lookup`), in full.
pub(crate) async fn resolve_task(client: &Client, wanted: &str) -> Result<Value, DaemonError> {
    // An id (what a daemon passes) is fetched in one call; a miss falls back to the lookup,
    // which also tries it as a name.
    if clearml_api::lookup::looks_like_id(wanted.trim())
        && let Ok(r) = client
            .call("tasks.get_by_id", json!({"task": wanted.trim()}))
            .await
        && let Some(t) = r.get("task").filter(|t| t.is_object())
    {
        return Ok(t.clone());
    }
    let found = match clearml_api::lookup::task(client, wanted).await {
        Ok(f) => f,
        Err(clearml_api::lookup::LookupError::NotFound { .. }) => {
            return Err(DaemonError::Task(format!(
                "Could not find task id={wanted} (for host {})",
                client.config().api_server
            )));
        }
        Err(clearml_api::lookup::LookupError::Api(e)) => return Err(e.into()),
        Err(e) => return Err(DaemonError::Task(e.to_string())),
    };
    let r = client
        .call("tasks.get_by_id", json!({"task": found.id}))
        .await?;
    r.get("task")
        .filter(|t| t.is_object())
        .cloned()
        .ok_or_else(|| DaemonError::Task(format!("Could not find task id={wanted}")))
}

fn id_of(task: &Value) -> String {
    task.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// `execute --id T`: run one task here with full supervision (console, abort, status).
pub async fn execute_monitored(
    config: &Config,
    opts: ExecuteOptions,
    console: &dyn Console,
) -> Result<i32, DaemonError> {
    let worker_id = execute_worker_id(config)?;
    let client = client_for(config, Some(worker_id.clone()))?;
    let mut task = resolve_task(&client, &opts.task).await?;
    if opts.clone {
        let name = task
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let r = client
            .call(
                "tasks.clone",
                json!({"task": id_of(&task), "new_task_name": format!("Clone of {name}")}),
            )
            .await?;
        let id = r
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        task = resolve_task(&client, &id).await?;
    } else {
        let r = client
            .call(
                "tasks.dequeue",
                json!({"task": id_of(&task), "new_status": "in_progress"}),
            )
            .await;
        let updated = r
            .as_ref()
            .ok()
            .and_then(|r| r.get("updated"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if opts.require_queue && updated < 1 {
            return Err(DaemonError::Task(format!(
                "Execution required enqueued task, but task id={} is not queued.",
                id_of(&task)
            )));
        }
    }
    let task_id = id_of(&task);
    client
        .call(
            "tasks.started",
            json!({"task": task_id, "force": true, "status_reason": "starting execution soon"}),
        )
        .await?;
    let mut settings = DaemonSettings::from_config(config, None)?;
    settings.monitor.echo = true;
    settings.monitor.log_file = opts.log_file.clone();
    let reporter = if opts.full_monitoring {
        let (r, _) = StatusReporter::register(
            client.clone(),
            worker_id.clone(),
            Vec::new(),
            settings.status_report,
            Vec::new(),
        )
        .await;
        r.set_daemon(false);
        r.set_task(Some(task_id.clone()), None);
        Some(r)
    } else {
        None
    };
    let work_root = config
        .env()
        .get("CLEARML_AGENT_WORK_ROOT")
        .map(PathBuf::from)
        .unwrap_or(config.agent()?.venvs_dir);
    let mut cmd = child_command(
        &settings.agent_exe,
        &task_id,
        &worker_id,
        opts.config_file.as_deref(),
        opts.debug,
        &work_root,
        opts.visible.as_deref(),
    );
    cmd.envs(opts.extra_env.iter().map(|(k, v)| (k, v)));
    if let Some(d) = &opts.docker {
        d.apply(&mut cmd);
    }
    let (tx, shutdown) = watch::channel(false);
    let signals = tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    let quick = monitor::quick_client(&client);
    let shipper = monitor::start_shipper(
        quick.clone(),
        &task_id,
        &worker_id,
        settings.monitor.spool_dir.clone(),
    );
    let result = monitor::run_task(
        client.clone(),
        &worker_id,
        &task_id,
        cmd,
        &settings.monitor,
        shutdown,
        shipper,
    )
    .await;
    signals.abort();
    if let Some(d) = &opts.docker {
        d.remove_container(&task_id).await;
    }
    if let Some(r) = reporter {
        r.stop().await;
        let _ = quick
            .call("workers.unregister", json!({"worker": worker_id}))
            .await;
    }
    console.line(&format!(
        "Task '{task_id}' finished: {}",
        result.status.as_deref().unwrap_or("unknown status")
    ));
    Ok(match result.ending {
        Ending::Exited(code) => code,
        Ending::Interrupted => 254,
        _ => 1,
    })
}

/// `execute --disable-monitoring --id T`: prepare the task and become it. Returns only on
/// failure (the exit code to use).
///
/// Every line goes to `console`: in this process it is the task's console log, which the
/// supervising daemon reads from the pipe.
pub async fn execute_child(
    config: &Config,
    task: &str,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    crate::slot_state::die_with_parent(); // a task does not outlive a killed daemon
    if let Some(mode) = crate::docker_mode::DockerMode::from_env(config)? {
        return crate::docker_mode::run_host_side(config, task, mode, console).await;
    }
    if crate::docker_mode::build_only(config).is_some() {
        return crate::docker_mode::inner_build(config, task, console).await;
    }
    let mut timer =
        crate::timing::StepTimer::start(config.env().get(crate::timing::SPAWNED_AT_VAR));
    let code_ready = crate::docker_mode::code_from_env(config)?;
    let worker_id = execute_worker_id(config)?;
    let client = client_for(config, Some(worker_id.clone()))?;
    // Logging in here only moves the login out of the first call, so the timing shows it.
    client.token().await?;
    timer.mark("login");
    let task = resolve_task(&client, task).await?;
    let task_id = id_of(&task);
    let status_message = format!("Changed by clearml-agent {worker_id}");
    client
        .call(
            "tasks.started",
            json!({"task": task_id, "force": true, "status_reason": "worker started execution",
                   "status_message": status_message}),
        )
        .await?;
    timer.mark("task fetch");
    let mut settings = PrepareSettings::from_config(config)?;
    if let Some(root) = config.env().get("CLEARML_AGENT_WORK_ROOT") {
        settings.work_root = PathBuf::from(root);
    }
    let task_doc = task.clone();
    let progress = console.clone();
    let prebuilt_env = crate::docker_mode::prebuilt_env(config, &task_id);
    // `--standalone-mode` (set by the parent agent, see `STANDALONE_VAR`).
    let standalone = config.env().get(STANDALONE_VAR) == Some("1");
    let prepared = tokio::task::spawn_blocking(move || {
        let opts = PrepareOptions {
            code_ready,
            prebuilt_env,
            standalone,
            ..PrepareOptions::default()
        };
        prepare::prepare(&task_doc, &settings, &opts, progress.as_ref())
    })
    .await
    .map_err(|e| DaemonError::Task(format!("the preparation stopped: {e}")))?;
    let mut prepared = match prepared {
        Ok(p) => p,
        Err(e) => {
            console.line(&format!("clearml-agent: error: {e}"));
            let _ = client
                .call(
                    "tasks.failed",
                    json!({"task": task_id, "force": true, "status_reason": e.status_reason(),
                           "status_message": status_message}),
                )
                .await;
            return Ok(1);
        }
    };
    // Recording the packages runs beside the rest of the start (one round trip less to wait
    // for); it is awaited before the exec.
    let frozen = prepared.frozen.take();
    let write_back = async {
        if let Some(frozen) = &frozen {
            write_back_requirements(&client, &task, frozen, console.as_ref()).await;
        }
    };
    // The SDK inside the task talks to the same server with the same identity: the agent's
    // keys, or the owner's token (which the SDK prefers) and no keys at all.
    let api = config.api()?;
    let owner_token = crate::owner::token_from_env();
    let (access_key, secret_key) = match owner_token {
        Some(_) => (None, None),
        None => (api.access_key, api.secret_key),
    };
    for (k, v) in [
        ("CLEARML_API_HOST", api.api_server),
        ("CLEARML_WEB_HOST", api.web_server),
        ("CLEARML_FILES_HOST", api.files_server),
        ("CLEARML_API_ACCESS_KEY", access_key),
        ("CLEARML_API_SECRET_KEY", secret_key),
    ] {
        if let Some(v) = v {
            prepared.env.push((k.to_string(), Some(v)));
        }
    }
    if owner_token.is_some() {
        for k in ["CLEARML_API_ACCESS_KEY", "CLEARML_API_SECRET_KEY"] {
            prepared.env.push((k.to_string(), None));
        }
    }
    prepared
        .env
        .push(("CLEARML_WORKER_ID".into(), Some(worker_id.clone())));
    console.line(&format!("Running task id [{task_id}]:"));
    console.line(&format!(
        "[{}]$ {}",
        prepared.cwd.display(),
        prepare::display_command(&prepared)
    ));
    console.line("Environment setup completed successfully");
    console.line("");
    let started = client.call(
        "tasks.started",
        json!({"task": task_id, "force": true,
               "status_reason": "worker starting task execution",
               "status_message": status_message}),
    );
    let ((), started) = tokio::join!(write_back, started);
    started?;
    for (name, d) in &prepared.timings {
        timer.split(name, *d);
    }
    for (name, d) in &prepared.beside {
        timer.beside(name, *d);
    }
    timer.mark("status and exec");
    tracing::debug!("{}", timer.line());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let err = prepare::exec(&prepared);
    console.line(&format!(
        "clearml-agent: error: cannot start the task: {err}"
    ));
    Ok(1)
}

/// Records the environment's packages on the task; the first time, the requested list is
/// kept as `org_pip`, as the Python agent does.
async fn write_back_requirements(
    client: &Client,
    task: &Value,
    frozen: &[String],
    console: &dyn Console,
) {
    let mut req = task
        .get("script")
        .and_then(|s| s.get("requirements"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !req.contains_key("org_pip")
        && let Some(pip) = req.get("pip").cloned()
    {
        req.insert("org_pip".into(), pip);
    }
    let lines: Vec<&str> = frozen
        .iter()
        .map(String::as_str)
        .filter(|l| !l.contains("clearml-agent") && !l.contains("clearml_agent"))
        .collect();
    req.insert("pip".into(), Value::String(lines.join("\n")));
    if let Err(e) = client
        .call(
            "tasks.set_requirements",
            json!({"task": id_of(task), "requirements": req}),
        )
        .await
    {
        console.line(&format!(
            "Warning: could not store the installed packages on the task: {e}"
        ));
    }
}

/// `build --id T --target DIR`: the task's code and environment, nothing run, the task
/// untouched.
pub async fn build_environment(
    config: &Config,
    opts: BuildOptions,
    console: Arc<dyn Console>,
) -> Result<i32, DaemonError> {
    let client = client_for(config, None)?;
    let task = resolve_task(&client, &opts.task).await?;
    let mut settings = PrepareSettings::from_config(config)?;
    let target = match &opts.target {
        Some(t) if t.is_absolute() => t.clone(),
        Some(t) => std::env::current_dir()
            .map_err(|source| DaemonError::Io {
                what: "cannot read the current folder".into(),
                source,
            })?
            .join(t),
        None => settings.work_root.join("build"),
    };
    // The code goes next to the environment, not into the daemon's work folder.
    settings.work_root = target.with_extension("code");
    let popts = PrepareOptions {
        venv_target: Some(target.clone()),
        python_version: opts.python_version.clone(),
        ..PrepareOptions::default()
    };
    let progress = console.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        prepare::prepare(&task, &settings, &popts, progress.as_ref())
    })
    .await
    .map_err(|e| DaemonError::Task(format!("the build stopped: {e}")))??;
    console.line(&format!(
        "Environment ready in {} (python {}); code in {}",
        target.display(),
        prepared.python_version.as_deref().unwrap_or("-"),
        prepared.cwd.display()
    ));
    if let Some(frozen) = &prepared.frozen {
        console.line("Installed packages:");
        for l in frozen {
            console.line(&format!("  {l}"));
        }
    }
    Ok(0)
}

/// `list`: the workers the server knows.
pub async fn list_workers(config: &Config) -> Result<Value, DaemonError> {
    let client = client_for(config, None)?;
    Ok(client
        .call("workers.get_all", json!({"last_seen": 0}))
        .await?)
}
