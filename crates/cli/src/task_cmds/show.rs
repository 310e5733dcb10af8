//! `task show` and `task list`.

use super::*;

/// `2024-01-01T12:00:00.123+00:00` as `2024-01-01 12:00:00 UTC`.
pub(super) fn when(v: &Value, path: &str) -> String {
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

pub(super) async fn show(api: &Api, task: &str, as_json: bool) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let mut t = task_doc(api, &id).await?;
    if let Some(Value::String(repo)) = t.pointer_mut("/script/repository") {
        *repo = clearml_config::mask_url_passwords(repo);
    }
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
        // A repository URL can carry a password (`https://user:token@host/repo.git`).
        rows.push((label, clearml_config::mask_url_passwords(s(&t, key))));
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
        let value = crate::term::for_stdout(&value);
        println!("{:<13} {value}", format!("{label}:"));
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints rows as left-aligned columns.
pub(super) fn print_table(header: &[&str], rows: &[Vec<String>]) {
    // Names come from the server: a control character in one must not move the cursor or
    // split a row.
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.iter()
                .map(|c| crate::term::table_cell(c).into_owned())
                .collect()
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
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
        line(r);
    }
}

pub(super) async fn list_tasks(
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
