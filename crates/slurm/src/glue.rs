//! The glue: pull tasks, submit them as jobs, follow the jobs until their tasks end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use clearml_config::Config;
use clearml_daemon::{DaemonSettings, Queue};
use clearml_report::StatusReporter;
use serde_json::{Value, json};

use crate::slurm::{self, JobInfo};
use crate::template::{self, Vars, shell_quote};
use crate::{Console, SlurmError, comment_prefix, console_line, task_state, text};

/// `clearml-agent slurm`'s command line.
#[derive(Clone, Debug, Default)]
pub struct GlueOptions {
    /// Queue names or ids, highest priority first (none: the server's default queue).
    pub queues: Vec<String>,
    /// One template for all queues, one per queue, or none for the built-in one.
    pub templates: Vec<PathBuf>,
    /// Jobs in flight (pending or running) at most; none means no limit.
    pub max_jobs: Option<usize>,
    pub create_queue: bool,
    /// `--config-file`, passed on to the jobs.
    pub config_file: Option<PathBuf>,
    pub debug: bool,
    /// Seconds between passes (default: the daemon's polling interval).
    pub polling_interval: Option<f64>,
}

/// A job the glue follows.
struct Tracked {
    task: String,
    last_message: String,
    last_ping: Instant,
    /// When the job was first seen ended with its task still running.
    ended_since: Option<Instant>,
}

/// How long a job may be over while its task still runs before the task is failed: the job's
/// supervisor sets the status just before it exits.
const END_GRACE: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(60);
/// How long a pass in progress may go on after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(5);

struct Glue<'a> {
    client: Arc<Client>,
    worker_id: String,
    prefix: String,
    queues: Vec<Queue>,
    templates: Vec<(String, String)>,
    state_dir: PathBuf,
    agent_exe: PathBuf,
    config_file: Option<PathBuf>,
    debug: bool,
    max_jobs: usize,
    tracked: BTreeMap<String, Tracked>,
    /// Ended jobs already dealt with (squeue lists them for a while).
    done: BTreeSet<String>,
    console: &'a dyn Console,
}

/// Runs until SIGTERM/SIGINT; jobs in flight keep running and are found again next time.
pub async fn run_glue(
    config: &Config,
    opts: GlueOptions,
    console: &dyn Console,
) -> Result<i32, SlurmError> {
    let agent = config.agent()?;
    let worker_id = agent.worker_id.clone().unwrap_or_else(|| {
        format!(
            "{}:slurm",
            agent
                .worker_name
                .clone()
                .unwrap_or_else(clearml_config::host_name)
        )
    });
    if opts.max_jobs == Some(0) {
        return Err(SlurmError::Usage(
            "--max-jobs must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    if !slurm::available() {
        return Err(SlurmError::Slurm(
            "sbatch is not on PATH: install Slurm's client commands (and SLURM_CONF if the \
             configuration is not in /etc/slurm)"
                .into(),
        ));
    }
    let mut cc = ClientConfig::from_config(config)?;
    cc.worker = Some(worker_id.clone());
    let client = Arc::new(Client::new(cc)?);
    let queues = resolve_queues(&client, &opts.queues, opts.create_queue).await?;
    let templates = load_templates(&opts.templates, queues.len())?;
    let settings = DaemonSettings::from_config(config, opts.polling_interval)?;
    let home = config.env().get("HOME").unwrap_or("/tmp").to_string();
    let safe_worker: String = worker_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let state_dir = Path::new(&home)
        .join(".clearml")
        .join("slurm")
        .join(safe_worker);
    std::fs::create_dir_all(&state_dir).map_err(|source| SlurmError::Io {
        what: format!("cannot create {}", state_dir.display()),
        source,
    })?;

    console.line(&format!(
        "Slurm glue \"{worker_id}\" - submitting tasks of these queues as sbatch jobs (at most {}):",
        opts.max_jobs
            .map_or("unlimited".to_string(), |n| format!("{n} at a time"))
    ));
    for (q, (name, _)) in queues.iter().zip(&templates) {
        console.line(&format!("  {}  {}  template: {name}", q.id, q.name));
    }
    let queue_ids: Vec<String> = queues.iter().map(|q| q.id.clone()).collect();
    let (reporter, registered) = StatusReporter::register(
        client.clone(),
        worker_id.clone(),
        queue_ids,
        settings.status_report,
        vec!["slurm".into()],
    )
    .await;
    if let Err(e) = registered {
        console.line(&format!("Warning: could not register the worker: {e}"));
    }
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });

    let mut glue = Glue {
        prefix: comment_prefix(&worker_id),
        client: client.clone(),
        worker_id: worker_id.clone(),
        queues,
        templates,
        state_dir,
        agent_exe: settings.agent_exe.clone(),
        config_file: opts.config_file.clone(),
        debug: opts.debug,
        max_jobs: opts.max_jobs.unwrap_or(usize::MAX).max(1),
        tracked: BTreeMap::new(),
        done: BTreeSet::new(),
        console,
    };
    while !*stop.borrow() {
        // A pass can hang in the client's retries while the server is down; a stop request
        // gives it a moment to finish (a task it popped gets submitted) and then wins.
        let watching = stop.clone();
        let stopped = {
            let pass = glue.pass(&watching);
            tokio::pin!(pass);
            let mut s = stop.clone();
            tokio::select! {
                _ = &mut pass => false,
                _ = s.wait_for(|v| *v) => {
                    let _ = tokio::time::timeout(STOP_GRACE, &mut pass).await;
                    true
                }
            }
        };
        if stopped {
            break;
        }
        let _ = tokio::time::timeout(settings.poll_interval, stop.changed()).await;
    }
    signals.abort();
    reporter.stop().await;
    let _ = client
        .call("workers.unregister", json!({"worker": worker_id}))
        .await;
    console.line(&format!(
        "Slurm glue \"{worker_id}\" stopped; {} job(s) keep running and report on their own",
        glue.tracked.len()
    ));
    Ok(0)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn load_templates(files: &[PathBuf], queues: usize) -> Result<Vec<(String, String)>, SlurmError> {
    let read = |f: &PathBuf| {
        std::fs::read_to_string(f)
            .map(|t| (f.display().to_string(), t))
            .map_err(|source| SlurmError::Io {
                what: format!("cannot read the template {}", f.display()),
                source,
            })
    };
    match files.len() {
        0 => Ok(vec![
            (
                "(built-in)".to_string(),
                template::DEFAULT_TEMPLATE.to_string()
            );
            queues
        ]),
        1 => Ok(vec![read(&files[0])?; queues]),
        n if n == queues => files.iter().map(read).collect(),
        n => Err(SlurmError::Usage(format!(
            "{n} templates for {queues} queues: give one template for all queues or one per queue"
        ))),
    }
}

impl Glue<'_> {
    async fn pass(&mut self, stop: &tokio::sync::watch::Receiver<bool>) {
        match slurm::squeue(&self.prefix).await {
            Ok(jobs) => self.follow(&jobs).await,
            Err(e) => self
                .console
                .line(&format!("Warning: cannot read Slurm's queue: {e}")),
        }
        while self.tracked.len() < self.max_jobs && !*stop.borrow() {
            match self.next_task().await {
                Ok(Some((task, idx))) => self.submit(&task, idx).await,
                Ok(None) => break,
                Err(e) => {
                    self.console
                        .line(&format!("Warning: could not access the task queues: {e}"));
                    break;
                }
            }
        }
    }

    /// Acts on what Slurm and the server say about each job.
    async fn follow(&mut self, jobs: &[JobInfo]) {
        // Jobs of an earlier run of this glue: active ones are followed again; ended ones get
        // one look (a job cancelled while the glue was down must still fail its task).
        for job in jobs {
            if !self.tracked.contains_key(&job.id) && !self.done.contains(&job.id) {
                let task = job.comment[self.prefix.len()..].to_string();
                if job.is_active() {
                    self.console.line(&format!(
                        "Following Slurm job {} ({}) of task {task} again",
                        job.id, job.state
                    ));
                }
                self.tracked.insert(
                    job.id.clone(),
                    Tracked {
                        task,
                        last_message: String::new(),
                        last_ping: Instant::now(),
                        ended_since: None,
                    },
                );
            }
        }
        let ids: Vec<String> = self.tracked.keys().cloned().collect();
        for id in ids {
            let info = jobs.iter().find(|j| j.id == id);
            if self.follow_one(&id, info).await {
                self.tracked.remove(&id);
                self.done.insert(id);
            }
        }
        // Forget ended jobs Slurm no longer lists.
        self.done.retain(|id| jobs.iter().any(|j| &j.id == id));
    }

    /// Returns true when the job needs no more attention.
    async fn follow_one(&mut self, id: &str, info: Option<&JobInfo>) -> bool {
        let Some(tr) = self.tracked.get_mut(id) else {
            return true;
        };
        let task = tr.task.clone();
        let active = info.is_some_and(JobInfo::is_active);
        let t = match task_state(&self.client, &task).await {
            Ok(Some(t)) => t,
            Ok(None) => {
                self.console.line(&format!(
                    "Task {task} was deleted: cancelling Slurm job {id}"
                ));
                self.cancel(id).await;
                return true;
            }
            Err(e) => {
                self.console
                    .line(&format!("Warning: cannot read task {task}: {e}"));
                return false;
            }
        };
        // The task was re-run elsewhere since: this job is stale.
        let recorded = t
            .get("runtime")
            .and_then(|r| r.get("slurm_job_id"))
            .and_then(Value::as_str)
            .unwrap_or(id);
        if recorded != id {
            if active {
                self.console.line(&format!(
                    "Task {task} now belongs to Slurm job {recorded}: cancelling job {id}"
                ));
                self.cancel(id).await;
            }
            return true;
        }
        let status = text(&t, "status");
        let message = text(&t, "status_message");
        let aborted =
            status == "stopped" || (status == "in_progress" && message.contains("stopping"));
        if aborted {
            if active {
                self.console.line(&format!(
                    "Task {task} was aborted: cancelling Slurm job {id}"
                ));
                self.cancel(id).await;
                console_line(
                    &self.client,
                    &task,
                    &self.worker_id,
                    "info",
                    &format!("Task aborted: Slurm job {id} cancelled"),
                )
                .await;
            }
            if status != "stopped" {
                let _ = self
                    .client
                    .call(
                        "tasks.stopped",
                        json!({"task": task, "force": true,
                               "status_reason": "task was stopped by tasks.stop",
                               "status_message": format!("Slurm job {id} cancelled")}),
                    )
                    .await;
            }
            return true;
        }
        match status {
            "completed" | "failed" | "published" | "closed" | "stopped" => return !active,
            "queued" | "created" => {
                if active {
                    self.console.line(&format!(
                        "Task {task} is {status} again: cancelling Slurm job {id}"
                    ));
                    self.cancel(id).await;
                }
                return true;
            }
            _ => {}
        }
        // The task runs (or waits) in this job.
        match info {
            Some(j) if j.is_pending() => {
                let msg = format!("Slurm job {id} pending: {}", j.reason);
                if msg != tr.last_message && !message.contains("stopping") {
                    tr.last_message = msg.clone();
                    // Servers before 3.22.3 refuse in_progress -> in_progress unless forced.
                    let body = json!({"task": task, "status_reason": "waiting for Slurm",
                                      "status_message": msg});
                    if self
                        .client
                        .call("tasks.started", body.clone())
                        .await
                        .is_err()
                    {
                        let mut forced = body;
                        forced["force"] = json!(true);
                        let _ = self.client.call("tasks.started", forced).await;
                    }
                }
                if tr.last_ping.elapsed() >= PING_EVERY {
                    tr.last_ping = Instant::now();
                    let _ = self.client.call("tasks.ping", json!({"task": task})).await;
                }
                false
            }
            Some(j) if j.is_active() => false,
            _ => {
                let since = *tr.ended_since.get_or_insert_with(Instant::now);
                if since.elapsed() < END_GRACE {
                    return false;
                }
                let reason = match info {
                    Some(j) => format!(
                        "Slurm job {id} ended {} (reason: {}) before the task finished",
                        j.state, j.reason
                    ),
                    None => format!("Slurm job {id} is gone from Slurm before the task finished"),
                };
                self.console.line(&format!("Task {task}: {reason}"));
                console_line(&self.client, &task, &self.worker_id, "error", &reason).await;
                let _ = self
                    .client
                    .call(
                        "tasks.failed",
                        json!({"task": task, "force": true, "status_reason": reason,
                               "status_message": format!("Changed by clearml-agent {}", self.worker_id)}),
                    )
                    .await;
                true
            }
        }
    }

    async fn cancel(&self, id: &str) {
        if let Err(e) = slurm::scancel(id).await {
            self.console
                .line(&format!("Warning: cannot cancel Slurm job {id}: {e}"));
        }
    }

    /// The next task of the first queue that has one.
    async fn next_task(&self) -> Result<Option<(String, usize)>, SlurmError> {
        for (idx, q) in self.queues.iter().enumerate() {
            let r = self
                .client
                .call("queues.get_next_task", json!({"queue": q.id}))
                .await?;
            if let Some(task) = r
                .get("entry")
                .and_then(|e| e.get("task"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                return Ok(Some((task.to_string(), idx)));
            }
        }
        Ok(None)
    }

    async fn fail(&self, task: &str, reason: &str) {
        self.console.line(&format!("Task {task} failed: {reason}"));
        console_line(&self.client, task, &self.worker_id, "error", reason).await;
        let _ = self
            .client
            .call(
                "tasks.failed",
                json!({"task": task, "force": true, "status_reason": reason,
                       "status_message": format!("Changed by clearml-agent {}", self.worker_id)}),
            )
            .await;
    }

    async fn submit(&mut self, task_id: &str, idx: usize) {
        let queue = self.queues[idx].clone();
        let (template_name, template_text) = self.templates[idx].clone();
        let doc = match self
            .client
            .call("tasks.get_by_id", json!({"task": task_id}))
            .await
        {
            Ok(r) => r.get("task").cloned().unwrap_or(Value::Null),
            Err(e) => {
                self.console
                    .line(&format!("Warning: cannot read task {task_id}: {e}"));
                return;
            }
        };
        let project_name = self.project_name(text(&doc, "project")).await;
        let execute = self.execute_command(task_id);
        let vars = Vars {
            task: &doc,
            project_name,
            queue_name: queue.name.clone(),
            queue_id: queue.id.clone(),
            worker_id: self.worker_id.clone(),
            execute,
        };
        let body = match template::render(&template_text, &vars) {
            Ok(b) => b,
            Err(e) => {
                self.fail(task_id, &format!("Slurm template {template_name}: {e}"))
                    .await;
                return;
            }
        };
        let script = self.job_script(task_id, &body);
        let path = self.state_dir.join(format!("{task_id}.sh"));
        if let Err(e) = std::fs::write(&path, script) {
            self.fail(
                task_id,
                &format!("cannot write the job script {}: {e}", path.display()),
            )
            .await;
            return;
        }
        let _ = self
            .client
            .call(
                "tasks.started",
                json!({"task": task_id, "force": true, "status_reason": "submitted to Slurm",
                       "status_message": "submitting to Slurm"}),
            )
            .await;
        let comment = format!("{}{task_id}", self.prefix);
        let job = match slurm::sbatch(&path, &comment, &self.state_dir).await {
            Ok(j) => j,
            Err(e) => {
                self.fail(task_id, &format!("Slurm refused the job: {e}"))
                    .await;
                return;
            }
        };
        let mut runtime = doc
            .get("runtime")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        runtime.insert("slurm_job_id".into(), json!(job));
        runtime.insert("slurm_worker".into(), json!(self.worker_id));
        if let Err(e) = self
            .client
            .call(
                "tasks.edit",
                json!({"task": task_id, "force": true, "runtime": runtime}),
            )
            .await
        {
            self.console.line(&format!(
                "Warning: cannot record Slurm job {job} on task {task_id}: {e}"
            ));
        }
        console_line(
            &self.client,
            task_id,
            &self.worker_id,
            "info",
            &format!(
                "Submitted to Slurm as job {job} by {} (queue {}, template {template_name})",
                self.worker_id, queue.name
            ),
        )
        .await;
        self.console.line(&format!(
            "Task {task_id} from queue {} submitted as Slurm job {job}",
            queue.name
        ));
        self.tracked.insert(
            job,
            Tracked {
                task: task_id.to_string(),
                last_message: String::new(),
                last_ping: Instant::now(),
                ended_since: None,
            },
        );
    }

    async fn project_name(&self, id: &str) -> Option<String> {
        if id.is_empty() {
            return None;
        }
        let r = self
            .client
            .call(
                "projects.get_all",
                json!({"id": [id], "only_fields": ["id", "name"]}),
            )
            .await
            .ok()?;
        r.get("projects")?
            .as_array()?
            .first()?
            .get("name")?
            .as_str()
            .map(str::to_string)
    }

    /// This binary with the glue's configuration file: `<agent> [args] <rest>`.
    fn agent_words(&self) -> Vec<String> {
        let mut w = vec![shell_quote(&self.agent_exe.display().to_string())];
        if let Some(f) = &self.config_file {
            w.push("--config-file".into());
            w.push(shell_quote(&f.display().to_string()));
        }
        if self.debug {
            w.push("--debug".into());
        }
        w
    }

    fn execute_command(&self, task: &str) -> String {
        let mut w = self.agent_words();
        w.extend([
            "execute".into(),
            "--disable-monitoring".into(),
            "--id".into(),
            shell_quote(task),
        ]);
        w.join(" ")
    }

    fn job_script(&self, task: &str, body: &str) -> String {
        job_script(&self.agent_words(), task, &self.worker_id, body)
    }
}

/// The script sbatch gets: the rendered template's header (shebang and leading comment lines, so
/// every `#SBATCH` option applies), then the whole rendered template written to a file in the
/// job (a here-document whose delimiter the body does not contain) and run under
/// `clearml-agent slurm job`. `agent` is this binary with its global flags, each word quoted.
fn job_script(agent: &[String], task: &str, worker_id: &str, body: &str) -> String {
    let header: Vec<&str> = body
        .lines()
        .take_while(|l| {
            let t = l.trim_start();
            t.is_empty() || t.starts_with('#')
        })
        .collect();
    let mut delim = format!("CLEARML_SLURM_BODY_{}", shell_quote(task).replace('\'', ""));
    while body.lines().any(|l| l.trim_start_matches('\t') == delim) {
        delim.push('_');
    }
    let interpreter: Vec<String> = template::interpreter(body)
        .iter()
        .map(|w| shell_quote(w))
        .collect();
    let mut job = agent.to_vec();
    job.extend([
        "slurm".into(),
        "job".into(),
        "--task".into(),
        shell_quote(task),
        "--worker".into(),
        shell_quote(worker_id),
        "--remove".into(),
        "\"$CLEARML_SLURM_BODY\"".into(),
        "--".into(),
    ]);
    job.extend(interpreter);
    job.push("\"$CLEARML_SLURM_BODY\"".into());
    let mut s = String::new();
    if !header.first().is_some_and(|l| l.starts_with("#!")) {
        s.push_str("#!/bin/bash\n");
    }
    for l in &header {
        s.push_str(l);
        s.push('\n');
    }
    s.push_str(&format!(
        "# clearml-agent: the template runs below under `clearml-agent slurm job`, which \
         sends all of its output to the task's console.\n\
         CLEARML_SLURM_BODY=\"$(mktemp \"${{TMPDIR:-/tmp}}/clearml-slurm-job.XXXXXX\")\" || exit 1\n\
         cat > \"$CLEARML_SLURM_BODY\" <<'{delim}'\n{body}{nl}{delim}\n\
         exec {}\n",
        job.join(" "),
        nl = if body.ends_with('\n') { "" } else { "\n" },
    ));
    s
}

/// Queue names or ids to queues, creating missing ones when asked. (The daemon has the same
/// rules in a private module; this is the part the glue needs.)
async fn resolve_queues(
    client: &Client,
    names: &[String],
    create: bool,
) -> Result<Vec<Queue>, SlurmError> {
    let all = |r: &Value| -> Vec<Queue> {
        r.get("queues")
            .and_then(Value::as_array)
            .map(|qs| {
                qs.iter()
                    .filter_map(|q| {
                        Some(Queue {
                            id: q.get("id")?.as_str()?.to_string(),
                            name: text(q, "name").to_string(),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    if names.is_empty() {
        let r = client.call("queues.get_default", json!({})).await?;
        return Ok(vec![Queue {
            id: text(&r, "id").to_string(),
            name: text(&r, "name").to_string(),
        }]);
    }
    let mut out: Vec<Queue> = Vec::new();
    for name in names {
        let r = client
            .call(
                "queues.get_all",
                json!({"only_fields": ["id", "name"], "search_hidden": true}),
            )
            .await?;
        let queues = all(&r);
        let found = queues
            .iter()
            .find(|q| q.id == *name)
            .or_else(|| queues.iter().find(|q| q.name.eq_ignore_ascii_case(name)))
            .cloned();
        let q = match found {
            Some(q) => q,
            None if create => {
                let r = client.call("queues.create", json!({"name": name})).await?;
                Queue {
                    id: text(&r, "id").to_string(),
                    name: name.clone(),
                }
            }
            None => {
                return Err(SlurmError::Usage(format!(
                    "queue '{name}' does not exist (use --create-queue to create it)"
                )));
            }
        };
        if !out.iter().any(|o| o.id == q.id) {
            out.push(q);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The job script writes the body back byte for byte (even one that contains the
    /// here-document's first-choice delimiter) and hands it to `slurm job`.
    #[test]
    fn job_script_carries_the_body_intact() {
        let dir = tempfile::tempdir().unwrap();
        let body = "#!/bin/bash\n#SBATCH --cpus-per-task=2\necho '$HOME' \"x\" `y`\nCLEARML_SLURM_BODY_t1\ncat <<EOF\n$(z)\nEOF\n";
        // A stand-in for the agent: prints the body file it gets after `--`, and its flags.
        let fake = dir.path().join("fake-agent");
        std::fs::write(&fake, "#!/bin/bash\nwhile [ \"$1\" != -- ]; do echo \"arg: $1\"; shift; done\nshift\necho \"run: $1\"\ncat \"$2\"\n").unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = job_script(
            &[shell_quote(&fake.display().to_string())],
            "t1",
            "w:slurm",
            body,
        );
        assert!(
            script.starts_with("#!/bin/bash\n#SBATCH --cpus-per-task=2\n# clearml-agent"),
            "{script}"
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("TMPDIR", dir.path())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).to_string();
        let expected_args = "arg: slurm\narg: job\narg: --task\narg: t1\narg: --worker\narg: w:slurm\narg: --remove\n";
        assert!(out.starts_with(expected_args), "{out}");
        assert!(out.contains("run: /bin/bash\n"), "{out}");
        assert!(out.ends_with(body), "{out}");
    }
}
