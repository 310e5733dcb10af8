//! `task`, `queue` and `worker`: what `clearml-task` and the web UI offer, for people without
//! the Python SDK. Every call is a standard ClearML REST endpoint with the fields the SDK
//! sends, so the commands work against a real ClearML server as well as the embedded one.
//!
//! Output conventions: listings and `show` go to stdout; progress and notes go to stderr;
//! commands that create something (`task create`, `queue create`) print the new id alone on
//! the last stdout line so scripts can capture it. Errors are one line (printed by `main`)
//! with exit code 1.

mod create;
mod enqueue;
mod logs;
mod queue;
mod show;
mod worker;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use clap::{ArgGroup, Args, Subcommand};
use clearml_api::lookup::{self, LookupError, looks_like_id};
use clearml_api::{ApiError, Client, ClientConfig};
use clearml_config::{Config, LoadOptions};
use serde_json::{Map, Value, json};

use create::*;
use enqueue::*;
use logs::*;
use queue::*;
use show::*;
use worker::*;

const TASK_STATUSES: &[&str] = &[
    "created",
    "queued",
    "in_progress",
    "stopped",
    "published",
    "publishing",
    "closed",
    "failed",
    "completed",
    "unknown",
];

/// Page size for `events.get_task_log` and the `get_all` listings.
const LOG_BATCH: usize = 500;
const LIST_PAGE: usize = 500;

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Create a task from a git repository or a local folder (what `clearml-task` does)
    Create(Box<CreateArgs>),
    /// Put a task in a queue, for an agent to run
    Enqueue {
        /// Task id (or name)
        task: String,
        /// Queue name or id (default: the server's default queue)
        #[arg(long)]
        queue: Option<String>,
    },
    /// Abort a task: a queued task is stopped at once, a running one is asked to stop
    Abort {
        /// Task id (or name)
        task: String,
    },
    /// Print a task's status, project, queue, code and times
    Show {
        /// Task id (or name)
        task: String,
        /// Print the task document as JSON
        #[arg(long)]
        json: bool,
    },
    /// Print a task's console log
    Logs {
        /// Task id (or name)
        task: String,
        /// Keep printing new lines until the task finishes; exit 0 if it completed, 1 otherwise
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// List tasks, newest first
    List {
        /// Only tasks of this project (name or id)
        #[arg(long)]
        project: Option<String>,
        /// Only tasks with this status (repeat for several)
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TASK_STATUSES))]
        status: Vec<String>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").args(["repo", "folder"])))]
#[command(group(ArgGroup::new("entry").args(["script", "module"]).required(true)))]
pub struct CreateArgs {
    /// Project name (created if missing)
    #[arg(long)]
    pub project: String,
    /// Task name
    #[arg(long)]
    pub name: String,
    /// Git URL of the code (anything `git clone` accepts)
    #[arg(long)]
    pub repo: Option<String>,
    /// Branch or tag to run (the latest commit on it); with --repo
    #[arg(long, requires = "repo", conflicts_with = "commit")]
    pub branch: Option<String>,
    /// Commit to run; with --repo
    #[arg(long, requires = "repo")]
    pub commit: Option<String>,
    /// A local folder: its git state (commit and uncommitted changes) is stored on the task;
    /// outside git, only the script itself is stored
    #[arg(long, value_name = "DIR")]
    pub folder: Option<PathBuf>,
    /// Entry point: with --repo relative to the repository root; with --folder a path to the
    /// file (absolute, relative to the current directory or to the folder)
    #[arg(long, value_name = "PATH")]
    pub script: Option<String>,
    /// Run a python module instead of a script, e.g. "pkg.train --epochs 3"
    #[arg(long, allow_hyphen_values = true)]
    pub module: Option<String>,
    /// Script arguments, stored as the task's "Args" hyperparameters: key=value (an option
    /// form is passed attached, --args=--batch-size=64, and stored as batch_size)
    #[arg(long, num_args = 1.., value_name = "ARG")]
    pub args: Vec<String>,
    /// Working directory: relative to the repository root with --repo, to the folder with
    /// --folder (default: the repository root, or the folder)
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,
    /// A requirements.txt file whose lines are the task's pip requirements
    #[arg(long, value_name = "FILE")]
    pub requirements: Option<PathBuf>,
    /// Pip packages to install (added to --requirements)
    #[arg(long, num_args = 1.., value_name = "PKG")]
    pub packages: Vec<String>,
    /// Docker image to run the task in
    #[arg(long, value_name = "IMAGE")]
    pub docker: Option<String>,
    /// Docker arguments, one string
    #[arg(
        long,
        alias = "docker_args",
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    pub docker_args: Option<String>,
    /// Bash script run inside the container before the environment is set up (file or text)
    #[arg(long, alias = "docker_bash_setup_script", value_name = "SCRIPT")]
    pub docker_bash_setup_script: Option<String>,
    /// Interpreter for the entry point (default: python3, /bin/bash for .sh scripts)
    #[arg(long)]
    pub binary: Option<String>,
    /// Task type
    #[arg(long = "type", alias = "task-type", default_value = "training", value_parser = clap::builder::PossibleValuesParser::new(lookup::TASK_TYPES))]
    pub task_type: String,
    /// Tags for the new task
    #[arg(long, num_args = 1..)]
    pub tags: Vec<String>,
    /// Where the task uploads its models and artifacts
    #[arg(long, value_name = "URI")]
    pub output_uri: Option<String>,
    /// Enqueue the new task in this queue (name or id); it must exist
    #[arg(long)]
    pub queue: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// List the queues: name, id, number of queued tasks, tags
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Create a queue; prints its id
    Create {
        /// Queue name (at least 3 characters)
        name: String,
        /// Tags for the queue
        #[arg(long, num_args = 1..)]
        tags: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum WorkerCommand {
    /// List the workers the server knows: id, queues, current task, last activity
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
}

pub fn run_task(opts: &LoadOptions, c: &TaskCommand) -> anyhow::Result<ExitCode> {
    let api = Api::connect(opts)?;
    block_on(async {
        match c {
            TaskCommand::Create(args) => create(&api, args).await,
            TaskCommand::Enqueue { task, queue } => enqueue(&api, task, queue.as_deref()).await,
            TaskCommand::Abort { task } => abort(&api, task).await,
            TaskCommand::Show { task, json } => show(&api, task, *json).await,
            TaskCommand::Logs { task, follow } => logs(&api, task, *follow).await,
            TaskCommand::List {
                project,
                status,
                json,
            } => list_tasks(&api, project.as_deref(), status, *json).await,
        }
    })
}

pub fn run_queue(opts: &LoadOptions, c: &QueueCommand) -> anyhow::Result<ExitCode> {
    let api = Api::connect(opts)?;
    block_on(async {
        match c {
            QueueCommand::List { json } => list_queues(&api, *json).await,
            QueueCommand::Create { name, tags } => create_queue(&api, name, tags).await,
        }
    })
}

pub fn run_worker(opts: &LoadOptions, c: &WorkerCommand) -> anyhow::Result<ExitCode> {
    let api = Api::connect(opts)?;
    block_on(async {
        match c {
            WorkerCommand::List { json } => list_workers(&api, *json).await,
        }
    })
}

fn block_on(f: impl Future<Output = anyhow::Result<ExitCode>>) -> anyhow::Result<ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(f)
}

// ------------------------------------------------------------------------------------------
// The server connection

struct Api {
    client: Client,
}

impl Api {
    fn connect(opts: &LoadOptions) -> anyhow::Result<Api> {
        let config = Config::load(opts)?;
        let mut cc = ClientConfig::from_config(&config)?;
        // A person is waiting: give up on an unreachable server sooner than the agent does.
        cc.retry_for = Duration::from_secs(10);
        Ok(Api {
            client: Client::new(cc)?,
        })
    }

    async fn call(&self, endpoint: &str, body: Value) -> Result<Value, ApiError> {
        self.client.call(endpoint, body).await
    }

    /// A `get_all`-style call's list under `key`.
    async fn list(&self, endpoint: &str, body: Value, key: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.call(endpoint, body).await?;
        Ok(data
            .get(key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }

    /// Every page of a paged `get_all`.
    async fn list_all(&self, endpoint: &str, body: Value, key: &str) -> anyhow::Result<Vec<Value>> {
        let mut out = Vec::new();
        for page in 0.. {
            let mut b = body.clone();
            b["page"] = json!(page);
            b["page_size"] = json!(LIST_PAGE);
            let items = self.list(endpoint, b, key).await?;
            let n = items.len();
            out.extend(items);
            if n < LIST_PAGE {
                break;
            }
        }
        Ok(out)
    }
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or_default()
}

fn at<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// The id of the task `key` (by the one rule of `clearml_api::lookup`: an existing id, else
/// the exact name, else the name ignoring case; a name several tasks share is an error).
async fn resolve_task(api: &Api, key: &str) -> anyhow::Result<String> {
    match lookup::task(&api.client, key).await {
        Ok(f) => Ok(f.id),
        Err(LookupError::NotFound { .. }) if looks_like_id(key) => bail!("unknown task id {key}"),
        Err(LookupError::NotFound { .. }) => {
            bail!("unknown task id {key} (and no task has that name)")
        }
        Err(e) => Err(e.into()),
    }
}

/// `(id, name)` of the queue `key` (by the same rule).
async fn resolve_queue(api: &Api, key: &str) -> anyhow::Result<(String, String)> {
    match lookup::queue(&api.client, key).await {
        Ok(f) => Ok((f.id, f.name)),
        Err(LookupError::NotFound { .. }) => {
            bail!("queue {key} does not exist; create it with `clearml-agent queue create {key}`")
        }
        Err(e) => Err(e.into()),
    }
}

/// The id of project `name`, creating it when missing.
async fn ensure_project(api: &Api, name: &str) -> anyhow::Result<String> {
    for attempt in 0..2 {
        if let Some(id) = find_project(api, name).await? {
            return Ok(id);
        }
        match api
            .call("projects.create", json!({"name": name, "description": ""}))
            .await
        {
            Ok(data) => {
                eprintln!("Created project {name}");
                return Ok(s(&data, "id").to_string());
            }
            // Someone created it meanwhile: look it up again.
            Err(e) if e.codes() == Some((400, 801)) && attempt == 0 => continue,
            Err(e) => return Err(anyhow!("cannot create project {name}: {e}")),
        }
    }
    bail!("cannot create project {name}")
}

async fn find_project(api: &Api, name: &str) -> anyhow::Result<Option<String>> {
    let found = api
        .list(
            "projects.get_all",
            json!({
                "name": lookup::exact_name_pattern(name),
                "only_fields": ["id", "name"],
                "shallow_search": false,
                "search_hidden": true,
            }),
            "projects",
        )
        .await?;
    Ok(found
        .iter()
        .find(|p| s(p, "name") == name)
        .map(|p| s(p, "id").to_string()))
}

/// Names of projects by id (best effort: empty where unknown).
async fn project_names(api: &Api, ids: &[String]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if ids.is_empty() {
        return out;
    }
    if let Ok(ps) = api
        .list(
            "projects.get_all",
            json!({"id": ids, "only_fields": ["id", "name"], "search_hidden": true}),
            "projects",
        )
        .await
    {
        for p in ps {
            out.insert(s(&p, "id").to_string(), s(&p, "name").to_string());
        }
    }
    out
}

/// One line for an API error the user can act on.
fn explain(e: ApiError, what: &str) -> anyhow::Error {
    match e {
        ApiError::Server { code, message, .. } => anyhow!("{what}: {message} (HTTP {code})"),
        other => anyhow!("{what}: {other}"),
    }
}
