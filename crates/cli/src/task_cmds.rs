//! `task`, `queue` and `worker`: what `clearml-task` and the web UI offer, for people without
//! the Python SDK. Every call is a standard ClearML REST endpoint with the fields the SDK
//! sends, so the commands work against a real ClearML server as well as the embedded one.
//!
//! Output conventions: listings and `show` go to stdout; progress and notes go to stderr;
//! commands that create something (`task create`, `queue create`) print the new id alone on
//! the last stdout line so scripts can capture it. Errors are one line (printed by `main`)
//! with exit code 1.

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

// ------------------------------------------------------------------------------------------
// task create

async fn create(api: &Api, a: &CreateArgs) -> anyhow::Result<ExitCode> {
    let hyperparams = args_hyperparams(&a.args)?;
    let requirements = requirements_text(a)?;
    let script = script_section(a, requirements.is_some())?;
    // Resolve the queue before creating anything, so a typo leaves no task behind.
    let queue = match &a.queue {
        Some(q) => Some(resolve_queue(api, q).await?),
        None => None,
    };
    let project = ensure_project(api, &a.project).await?;

    let mut script = script;
    if let Some(pip) = &requirements {
        script.insert("requirements".into(), json!({ "pip": pip }));
    }
    let mut body = json!({
        "name": a.name,
        "project": project,
        "type": a.task_type,
        "comment": "Created by clearml-agent task create",
        "script": Value::Object(script.clone()),
    });
    if !hyperparams.is_empty() {
        body["hyperparams"] = json!({ "Args": hyperparams });
    }
    if !a.tags.is_empty() {
        body["tags"] = json!(a.tags);
    }
    if let Some(uri) = &a.output_uri {
        body["output_dest"] = json!(uri);
    }
    if a.docker.is_some() || a.docker_args.is_some() || a.docker_bash_setup_script.is_some() {
        let setup = match &a.docker_bash_setup_script {
            Some(x) if Path::new(x).is_file() => {
                let text = std::fs::read_to_string(x)
                    .with_context(|| format!("cannot read the docker setup script {x}"))?;
                // The shebang line is dropped, as clearml-task does.
                text.lines()
                    .skip_while(|l| l.trim().starts_with("#!"))
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            Some(x) => x.clone(),
            None => String::new(),
        };
        body["container"] = json!({
            "image": a.docker.clone().unwrap_or_default(),
            "arguments": a.docker_args.clone().unwrap_or_default(),
            "setup_shell_script": setup,
        });
    }

    let data = api
        .call("tasks.create", body)
        .await
        .map_err(|e| explain(e, "cannot create the task"))?;
    let id = s(&data, "id").to_string();
    if id.is_empty() {
        bail!("the server created a task but did not say its id");
    }
    describe_script(&script);
    eprintln!("New task created id={id}");
    match queue {
        Some((qid, qname)) => {
            api.call("tasks.enqueue", json!({"task": id, "queue": qid}))
                .await
                .map_err(|e| explain(e, &format!("task {id} was created but not enqueued")))?;
            eprintln!("Task id={id} sent for execution on queue {qname}");
        }
        None => eprintln!(
            "No queue given: the task stays a draft (enqueue it with `clearml-agent task enqueue {id} --queue QUEUE`)"
        ),
    }
    println!("{id}");
    Ok(ExitCode::SUCCESS)
}

fn describe_script(script: &Map<String, Value>) {
    let v = Value::Object(script.clone());
    if s(&v, "repository").is_empty() {
        eprintln!("Standalone script: {}", s(&v, "entry_point"));
    } else {
        eprintln!("Repository: {}", s(&v, "repository"));
        for (label, key) in [
            ("  branch", "branch"),
            ("  commit", "version_num"),
            ("  working dir", "working_dir"),
            ("  entry point", "entry_point"),
        ] {
            if !s(&v, key).is_empty() {
                eprintln!("{label}: {}", s(&v, key));
            }
        }
        let diff = s(&v, "diff");
        if !diff.is_empty() {
            eprintln!(
                "  uncommitted changes: {} lines of diff",
                diff.lines().count()
            );
        }
    }
    let pip = s(&v, "requirements.pip");
    if !pip.is_empty() {
        eprintln!(
            "Requirements: {}",
            pip.lines()
                .filter(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

/// `--args`: `key=value` as clearml-task stores it (section "Args", values as strings); an
/// option form `--some-key=value` is stored under argparse's destination name `some_key`,
/// which is what the SDK's argparse binding looks up.
fn args_hyperparams(args: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut out = Map::new();
    for a in args {
        let Some((key, value)) = a.split_once('=') else {
            bail!("argument {a:?} must be in key=value form (or --key=value)");
        };
        let name = if key.starts_with('-') {
            key.trim_start_matches('-').replace('-', "_")
        } else {
            key.to_string()
        };
        if name.is_empty() {
            bail!("argument {a:?} has no name before '='");
        }
        out.insert(
            name.clone(),
            json!({"section": "Args", "name": name, "value": value, "type": "str", "description": ""}),
        );
    }
    Ok(out)
}

/// `--requirements` lines plus `--packages`, as one pip requirements text.
fn requirements_text(a: &CreateArgs) -> anyhow::Result<Option<String>> {
    let mut lines = Vec::new();
    if let Some(file) = &a.requirements {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read requirements file {}", file.display()))?;
        lines.extend(text.lines().map(|l| l.trim().to_string()));
    }
    lines.extend(a.packages.iter().cloned());
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    Ok((!lines.is_empty()).then(|| lines.join("\n")))
}

/// Default interpreter: bash for `.sh` entry points, else python3.
fn binary_for(a: &CreateArgs, entry_point: &str) -> String {
    if let Some(b) = &a.binary {
        return b.clone();
    }
    let e = entry_point.trim().to_lowercase();
    if e.ends_with(".sh") && !e.starts_with("-m ") {
        "/bin/bash".into()
    } else {
        "python3".into()
    }
}

/// The task's `script` section (without requirements).
fn script_section(a: &CreateArgs, has_requirements: bool) -> anyhow::Result<Map<String, Value>> {
    match (&a.repo, &a.folder) {
        (Some(repo), _) => remote_repo_script(a, repo),
        (None, Some(folder)) => folder_script(a, folder, has_requirements),
        (None, None) => {
            // A lone local script: its folder is the code.
            let Some(script) = &a.script else {
                bail!("--module needs --repo or --folder");
            };
            let path = Path::new(script);
            if !path.is_file() {
                bail!(
                    "script {script} is not a local file; with a remote repository, pass --repo URL"
                );
            }
            let folder = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            folder_script(a, folder, has_requirements)
        }
    }
}

/// Normalises a relative path written with `/`: drops `.` and empty parts.
fn clean_rel(p: &str) -> String {
    p.split(['/', '\\'])
        .filter(|x| !x.is_empty() && *x != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn remote_repo_script(a: &CreateArgs, repo: &str) -> anyhow::Result<Map<String, Value>> {
    let cwd = clean_rel(a.cwd.as_deref().unwrap_or("."));
    if a.cwd.as_deref().is_some_and(|c| c.starts_with('/')) {
        bail!("--cwd must be relative to the repository root with --repo");
    }
    let entry_point = match (&a.module, &a.script) {
        (Some(m), _) => format!("-m {m}"),
        (None, Some(script)) => {
            if script.starts_with('/') {
                bail!("--script must be relative to the repository root with --repo");
            }
            let e = clean_rel(script);
            match e.strip_prefix(&format!("{cwd}/")) {
                Some(rest) if !cwd.is_empty() => rest.to_string(),
                _ => e,
            }
        }
        (None, None) => bail!("pass --script or --module"),
    };
    let mut m = Map::new();
    m.insert("repository".into(), json!(repo));
    if let Some(b) = &a.branch {
        m.insert("branch".into(), json!(b));
    }
    if let Some(c) = &a.commit {
        m.insert("version_num".into(), json!(c));
    }
    m.insert("binary".into(), json!(binary_for(a, &entry_point)));
    m.insert("entry_point".into(), json!(entry_point));
    m.insert(
        "working_dir".into(),
        json!(if cwd.is_empty() { ".".into() } else { cwd }),
    );
    m.insert("diff".into(), json!(""));
    Ok(m)
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let p = std::path::absolute(p).context("cannot read the current directory")?;
    Ok(std::fs::canonicalize(&p).unwrap_or(p))
}

fn folder_script(
    a: &CreateArgs,
    folder: &Path,
    has_requirements: bool,
) -> anyhow::Result<Map<String, Value>> {
    if !folder.is_dir() {
        bail!("folder {} does not exist", folder.display());
    }
    let folder = absolute(folder)?;
    let cwd = match &a.cwd {
        Some(c) => {
            let d = folder.join(c);
            if !d.is_dir() {
                bail!("working directory {} does not exist", d.display());
            }
            absolute(&d)?
        }
        None => folder.clone(),
    };
    // The entry file: as given, else inside the folder, else inside --cwd.
    let script_file = match &a.script {
        Some(script) => {
            let candidates = [PathBuf::from(script), folder.join(script), cwd.join(script)];
            let Some(found) = candidates.iter().find(|p| p.is_file()) else {
                bail!(
                    "script {script} not found (looked in the current directory, {} and {})",
                    folder.display(),
                    cwd.display()
                );
            };
            Some(absolute(found)?)
        }
        None => None,
    };

    let root = clearml_vcs::repository_root(&folder)?;
    let in_repo = |p: &Path| root.as_ref().is_some_and(|r| p.starts_with(r));
    match (&root, &script_file) {
        (Some(root), Some(file)) if in_repo(file) && in_repo(&cwd) => {
            git_script(a, root, &cwd, Some(file), has_requirements)
        }
        (Some(root), None) if in_repo(&cwd) => git_script(a, root, &cwd, None, has_requirements),
        (_, Some(file)) => literal_script(a, file, has_requirements),
        (_, None) => bail!(
            "--module needs code in a git repository; {} is not in one",
            folder.display()
        ),
    }
}

/// A script stored whole in `script.diff` with no repository (agent-inventory §5.3).
fn literal_script(
    a: &CreateArgs,
    file: &Path,
    has_requirements: bool,
) -> anyhow::Result<Map<String, Value>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read script {}", file.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "untitled.py".into());
    eprintln!(
        "note: {} is not in a git repository: only the script itself is stored on the task",
        file.display()
    );
    if !has_requirements && !name.ends_with(".sh") {
        eprintln!(
            "note: no --requirements or --packages given: the agent installs no packages for this script"
        );
    }
    let mut m = Map::new();
    m.insert("repository".into(), json!(""));
    m.insert("binary".into(), json!(binary_for(a, &name)));
    m.insert("entry_point".into(), json!(name));
    m.insert("working_dir".into(), json!("."));
    m.insert("diff".into(), json!(text));
    Ok(m)
}

/// The git state of a local checkout (see `clearml_vcs::capture_local`): where the agent can
/// clone it from, the commit to check out, and the changes on top of it. Notes go to stderr.
fn git_script(
    a: &CreateArgs,
    root: &Path,
    cwd: &Path,
    file: Option<&Path>,
    has_requirements: bool,
) -> anyhow::Result<Map<String, Value>> {
    let note = |l: &str| eprintln!("{l}");
    let clearml_vcs::LocalCheckout {
        repository,
        commit,
        branch,
        diff,
    } = clearml_vcs::capture_local(root, file, &note)?;

    let working_dir = clearml_vcs::relative_path(cwd, root);
    let entry_point = match (&a.module, file) {
        (Some(m), _) => format!("-m {m}"),
        (None, Some(f)) => clearml_vcs::relative_path(f, cwd),
        (None, None) => bail!("pass --script or --module"),
    };
    if !has_requirements
        && !root.join("requirements.txt").is_file()
        && !root.join("pyproject.toml").is_file()
        && !entry_point.ends_with(".sh")
    {
        eprintln!(
            "note: no --requirements/--packages and no requirements.txt or pyproject.toml in the repository: the agent installs no packages"
        );
    }
    let mut m = Map::new();
    m.insert("repository".into(), json!(repository));
    if let Some(b) = branch {
        m.insert("branch".into(), json!(b));
    }
    m.insert("version_num".into(), json!(commit));
    m.insert("binary".into(), json!(binary_for(a, &entry_point)));
    m.insert("entry_point".into(), json!(entry_point));
    m.insert("working_dir".into(), json!(working_dir));
    m.insert("diff".into(), json!(diff));
    Ok(m)
}

// ------------------------------------------------------------------------------------------
// enqueue, abort

async fn enqueue(api: &Api, task: &str, queue: Option<&str>) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let (qid, qname) = match queue {
        Some(q) => resolve_queue(api, q).await?,
        None => {
            let d = api
                .call("queues.get_default", json!({}))
                .await
                .map_err(|e| {
                    explain(
                        e,
                        "no --queue given and the server has no default queue; pass --queue",
                    )
                })?;
            (s(&d, "id").to_string(), s(&d, "name").to_string())
        }
    };
    match api
        .call("tasks.enqueue", json!({"task": id, "queue": qid}))
        .await
    {
        Ok(_) => {
            eprintln!("Task {id} enqueued in {qname}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.codes() == Some((400, 110)) => {
            let status = task_status(api, &id).await.unwrap_or_default();
            bail!(
                "cannot enqueue task {id}: it is {status} (created, stopped and failed tasks can be enqueued)"
            )
        }
        Err(e) => Err(explain(e, &format!("cannot enqueue task {id}"))),
    }
}

async fn task_doc(api: &Api, id: &str) -> anyhow::Result<Value> {
    match api.call("tasks.get_by_id", json!({ "task": id })).await {
        Ok(d) => d
            .get("task")
            .cloned()
            .ok_or_else(|| anyhow!("the server returned no task for {id}")),
        Err(e) if e.codes() == Some((400, 101)) => bail!("unknown task id {id}"),
        Err(e) => Err(explain(e, &format!("cannot read task {id}"))),
    }
}

async fn task_status(api: &Api, id: &str) -> anyhow::Result<String> {
    let t = api
        .list(
            "tasks.get_all",
            json!({"id": [id], "only_fields": ["id", "status", "status_message"], "search_hidden": true}),
            "tasks",
        )
        .await?;
    t.first()
        .map(|t| s(t, "status").to_string())
        .ok_or_else(|| anyhow!("unknown task id {id}"))
}

async fn abort(api: &Api, task: &str) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    match api.call("tasks.stop", json!({ "task": id })).await {
        Ok(_) => {}
        Err(e) if e.codes() == Some((400, 110)) => {
            let status = task_status(api, &id).await.unwrap_or_default();
            bail!("cannot abort task {id}: it is {status}, not queued or running")
        }
        Err(e) => return Err(explain(e, &format!("cannot abort task {id}"))),
    }
    let t = task_doc(api, &id).await?;
    let status = s(&t, "status");
    if status == "stopped" {
        eprintln!("Task {id} stopped");
    } else if s(&t, "status_message").contains("stopping") {
        let worker = s(&t, "last_worker");
        if worker.is_empty() {
            eprintln!("Task {id} is {status}: its worker was asked to stop it");
        } else {
            eprintln!("Task {id} is {status}: worker {worker} was asked to stop it");
        }
    } else {
        eprintln!("Task {id} is {status}");
    }
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------------------------
// show, list

/// `2024-01-01T12:00:00.123+00:00` as `2024-01-01 12:00:00 UTC`.
fn when(v: &Value, path: &str) -> String {
    let t = s(v, path);
    if t.len() < 19 || !t.is_char_boundary(19) {
        return t.to_string();
    }
    let (head, tail) = t.split_at(19);
    let zone = if tail.ends_with("+00:00") || tail.ends_with('Z') {
        " UTC"
    } else if tail.len() >= 6 && tail.is_char_boundary(tail.len() - 6) {
        &tail[tail.len() - 6..]
    } else {
        ""
    };
    format!("{}{zone}", head.replacen('T', " ", 1))
}

async fn show(api: &Api, task: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let t = task_doc(api, &id).await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(ExitCode::SUCCESS);
    }
    let project_id = s(&t, "project");
    let project = if project_id.is_empty() {
        String::new()
    } else {
        project_names(api, &[project_id.to_string()])
            .await
            .remove(project_id)
            .unwrap_or_else(|| project_id.to_string())
    };
    let queue_id = s(&t, "execution.queue");
    let mut queue = String::new();
    if !queue_id.is_empty() {
        queue = match api
            .call("queues.get_by_id", json!({ "queue": queue_id }))
            .await
        {
            Ok(d) => {
                let name = s(&d, "queue.name").to_string();
                let pos = at(&d, "queue.entries")
                    .and_then(Value::as_array)
                    .and_then(|e| e.iter().position(|x| s(x, "task") == id));
                match pos {
                    Some(p) if s(&t, "status") == "queued" => {
                        format!("{name} ({queue_id}), position {} in line", p + 1)
                    }
                    _ => format!("{name} ({queue_id})"),
                }
            }
            Err(_) => queue_id.to_string(),
        };
    }
    let mut rows: Vec<(&str, String)> = vec![
        ("id", id.clone()),
        ("name", s(&t, "name").into()),
        ("project", project),
        ("type", s(&t, "type").into()),
    ];
    let mut status = s(&t, "status").to_string();
    for extra in ["status_message", "status_reason"] {
        let m = s(&t, extra);
        if !m.is_empty() {
            status = format!("{status} ({m})");
            break;
        }
    }
    rows.push(("status", status));
    rows.push(("queue", queue));
    for (label, key) in [
        ("repository", "script.repository"),
        ("branch", "script.branch"),
        ("tag", "script.tag"),
        ("commit", "script.version_num"),
        ("working dir", "script.working_dir"),
        ("entry point", "script.entry_point"),
        ("binary", "script.binary"),
    ] {
        rows.push((label, s(&t, key).into()));
    }
    let diff = s(&t, "script.diff");
    if !diff.is_empty() {
        let kind = if diff.trim_start().to_lowercase().starts_with("diff ") {
            "uncommitted changes"
        } else {
            "literal script"
        };
        rows.push(("diff", format!("{kind}, {} lines", diff.lines().count())));
    }
    let pip = s(&t, "script.requirements.pip");
    if !pip.is_empty() {
        let pkgs: Vec<&str> = pip
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        rows.push(("requirements", pkgs.join(", ")));
    }
    let image = s(&t, "container.image");
    if !image.is_empty() {
        let args = s(&t, "container.arguments");
        rows.push(("docker", format!("{image} {args}").trim().to_string()));
    }
    if let Some(Value::Object(params)) = at(&t, "hyperparams.Args") {
        let list: Vec<String> = params
            .iter()
            .map(|(k, p)| format!("{k}={}", s(p, "value")))
            .collect();
        rows.push(("args", list.join(" ")));
    }
    rows.push(("last worker", s(&t, "last_worker").into()));
    for (label, key) in [
        ("created", "created"),
        ("started", "started"),
        ("completed", "completed"),
        ("last update", "last_update"),
    ] {
        rows.push((label, when(&t, key)));
    }
    for (label, value) in rows.into_iter().filter(|(_, v)| !v.is_empty()) {
        println!("{:<13} {value}", format!("{label}:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as left-aligned columns.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let text: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                if i == last {
                    c
                } else {
                    format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0))
                }
            })
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        line(r.clone());
    }
}

async fn list_tasks(
    api: &Api,
    project: Option<&str>,
    status: &[String],
    as_json: bool,
) -> anyhow::Result<ExitCode> {
    let mut body = json!({
        "only_fields": ["id", "name", "status", "type", "project", "last_update", "last_worker"],
        "order_by": ["-last_update"],
        "search_hidden": false,
    });
    if let Some(p) = project {
        let pid = match find_project(api, p).await? {
            Some(id) => id,
            None if looks_like_id(p) => p.to_string(),
            None => bail!("project {p} does not exist"),
        };
        body["project"] = json!([pid]);
    }
    if !status.is_empty() {
        body["status"] = json!(status);
    }
    let tasks = api.list_all("tasks.get_all", body, "tasks").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut pids: Vec<String> = tasks
        .iter()
        .map(|t| s(t, "project").to_string())
        .filter(|p| !p.is_empty())
        .collect();
    pids.sort();
    pids.dedup();
    let names = project_names(api, &pids).await;
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let pid = s(t, "project");
            vec![
                s(t, "id").to_string(),
                s(t, "status").to_string(),
                names.get(pid).cloned().unwrap_or_else(|| pid.to_string()),
                when(t, "last_update"),
                s(t, "name").to_string(),
            ]
        })
        .collect();
    print_table(&["ID", "STATUS", "PROJECT", "LAST UPDATE", "NAME"], &rows);
    Ok(ExitCode::SUCCESS)
}

// ------------------------------------------------------------------------------------------
// logs

/// Reads the task log forward from where it left off. `events.get_task_log` pages on
/// `from_timestamp` (exclusive); lines that share the last timestamp are re-read from
/// `last - 1` and the ones already printed skipped, so none is lost or printed twice whether
/// or not the server extends a page to the end of a timestamp (the real server does).
struct LogCursor {
    task: String,
    last_ts: Option<i64>,
    seen_at_last: usize,
}

impl LogCursor {
    /// Prints the new lines; returns how many.
    async fn pump(&mut self, api: &Api) -> anyhow::Result<usize> {
        let mut printed = 0;
        let mut strict = false;
        loop {
            let mut body = json!({
                "task": self.task,
                "batch_size": LOG_BATCH,
                "navigate_earlier": false,
                "order": "asc",
            });
            if let Some(ts) = self.last_ts {
                body["from_timestamp"] = json!(if strict { ts } else { ts - 1 });
            }
            let data = match api.call("events.get_task_log", body).await {
                Ok(d) => d,
                Err(e) if e.codes() == Some((404, 0)) => {
                    bail!("the server does not serve task logs (events.get_task_log: {e})")
                }
                Err(e) => return Err(explain(e, "cannot read the task log")),
            };
            let events = data
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if events.is_empty() {
                return Ok(printed);
            }
            let mut skip = if strict { 0 } else { self.seen_at_last };
            let mut new = 0;
            for e in &events {
                let ts = e.get("timestamp").and_then(Value::as_f64).map(|t| t as i64);
                if let (Some(ts), Some(last)) = (ts, self.last_ts) {
                    if ts < last {
                        continue;
                    }
                    if ts == last && skip > 0 {
                        skip -= 1;
                        continue;
                    }
                }
                print_log_line(s(e, "msg"));
                new += 1;
                match ts {
                    Some(t) if Some(t) == self.last_ts => self.seen_at_last += 1,
                    Some(t) => {
                        self.last_ts = Some(t);
                        self.seen_at_last = 1;
                    }
                    None => {}
                }
            }
            printed += new;
            if new == 0 {
                // A whole page of lines already printed: the server cut a run of lines that
                // share one timestamp; step over it.
                if !strict && events.len() >= LOG_BATCH {
                    strict = true;
                    continue;
                }
                return Ok(printed);
            }
            strict = false;
        }
    }
}

fn print_log_line(msg: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(msg.as_bytes());
    if !msg.ends_with('\n') {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
}

async fn logs(api: &Api, task: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let mut cursor = LogCursor {
        task: id.clone(),
        last_ts: None,
        seen_at_last: 0,
    };
    if !follow {
        cursor.pump(api).await?;
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        // Status first, then the lines: every line written before the task ended is printed.
        let status = task_status(api, &id).await?;
        cursor.pump(api).await?;
        if status != "queued" && status != "in_progress" {
            return Ok(
                if matches!(status.as_str(), "completed" | "published" | "closed") {
                    eprintln!("Task {id} {status}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("Task {id} is {status}");
                    ExitCode::FAILURE
                },
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

// ------------------------------------------------------------------------------------------
// queues, workers

async fn list_queues(api: &Api, as_json: bool) -> anyhow::Result<ExitCode> {
    let queues = api.list("queues.get_all", json!({}), "queues").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |q: &Value, key: &str| -> Vec<String> {
        q.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut name = s(q, "name").to_string();
            if list(q, "system_tags").iter().any(|t| t == "default") {
                name.push_str(" (default)");
            }
            let entries = q
                .get("entries")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                s(q, "id").to_string(),
                entries.to_string(),
                list(q, "tags").join(","),
            ]
        })
        .collect();
    print_table(&["NAME", "ID", "QUEUED", "TAGS"], &rows);
    Ok(ExitCode::SUCCESS)
}

async fn create_queue(api: &Api, name: &str, tags: &[String]) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "name": name });
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    match api.call("queues.create", body).await {
        Ok(d) => {
            let id = s(&d, "id");
            eprintln!("Queue {name} created");
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.codes() == Some((400, 801)) => bail!("queue {name} already exists"),
        Err(e) => Err(explain(e, &format!("cannot create queue {name}"))),
    }
}

async fn list_workers(api: &Api, as_json: bool) -> anyhow::Result<ExitCode> {
    let workers = api
        .list("workers.get_all", json!({"last_seen": 0}), "workers")
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let queues: Vec<String> = w
                .get("queues")
                .and_then(Value::as_array)
                .map(|qs| {
                    qs.iter()
                        .map(|q| {
                            let n = s(q, "name");
                            if n.is_empty() { s(q, "id") } else { n }.to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let task = match (s(w, "task.id"), s(w, "task.name")) {
                ("", _) => String::new(),
                (id, "") => id.to_string(),
                (id, name) => format!("{id} ({name})"),
            };
            vec![
                s(w, "id").to_string(),
                queues.join(","),
                task,
                when(w, "last_activity_time"),
            ]
        })
        .collect();
    print_table(&["WORKER", "QUEUES", "TASK", "LAST ACTIVITY"], &rows);
    Ok(ExitCode::SUCCESS)
}
