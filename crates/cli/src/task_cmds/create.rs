//! `task create`: a task from a git repository, a local folder or a single script, with the
//! fields the SDK sets (what `clearml-task` does).

use super::*;

pub(super) async fn create(api: &Api, a: &CreateArgs) -> anyhow::Result<ExitCode> {
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

pub(super) fn describe_script(script: &Map<String, Value>) {
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
pub(super) fn args_hyperparams(args: &[String]) -> anyhow::Result<Map<String, Value>> {
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
pub(super) fn requirements_text(a: &CreateArgs) -> anyhow::Result<Option<String>> {
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
pub(super) fn binary_for(a: &CreateArgs, entry_point: &str) -> String {
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
pub(super) fn script_section(
    a: &CreateArgs,
    has_requirements: bool,
) -> anyhow::Result<Map<String, Value>> {
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
pub(super) fn clean_rel(p: &str) -> String {
    p.split(['/', '\\'])
        .filter(|x| !x.is_empty() && *x != ".")
        .collect::<Vec<_>>()
        .join("/")
}

pub(super) fn remote_repo_script(a: &CreateArgs, repo: &str) -> anyhow::Result<Map<String, Value>> {
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

pub(super) fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    let p = std::path::absolute(p).context("cannot read the current directory")?;
    Ok(std::fs::canonicalize(&p).unwrap_or(p))
}

pub(super) fn folder_script(
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
pub(super) fn literal_script(
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
pub(super) fn git_script(
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
