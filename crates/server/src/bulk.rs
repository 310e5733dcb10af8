//! The web UI's bulk and listing endpoints: `tasks.*_many` (each id through the single call,
//! `{succeeded, failed}` as upstream), `tasks.archive`, the tag lists
//! (`projects.get_task_tags` / `get_model_tags` / `get_project_tags`,
//! `organization.get_tags`), `projects.validate_delete`, `projects.get_hyperparam_values`
//! `queues.move_task_forward` / `move_task_backward`, and `events.get_task_latest_scalar_values`
//! (the web UI's scalar table).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, doc_strings, now_iso};
use crate::store::{Doc, Tx};

pub fn tasks(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let single = match action {
        "stop_many" => "stop",
        "enqueue_many" => "enqueue",
        "dequeue_many" => "dequeue",
        "reset_many" => "reset",
        "delete_many" => "delete",
        "publish_many" => "publish",
        "archive" => return Some(ctx.store.write(|tx| archive(tx, req))),
        _ => return None,
    };
    Some(many(ctx, single, req))
}

pub fn projects(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "get_task_tags" => ctx.store.write(|tx| tags(tx, req, &["tasks"], true)),
        "get_model_tags" => ctx.store.write(|tx| tags(tx, req, &["models"], true)),
        "get_project_tags" => ctx.store.write(|tx| tags(tx, req, &["projects"], false)),
        "validate_delete" => ctx.store.write(|tx| validate_delete(tx, req)),
        "get_hyperparam_values" => ctx.store.write(|tx| hyperparam_values(tx, req)),
        _ => return None,
    };
    Some(r)
}

pub fn organization(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    match action {
        "get_tags" => Some(
            ctx.store
                .write(|tx| tags(tx, req, &["tasks", "models"], false)),
        ),
        _ => None,
    }
}

pub fn events(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    match action {
        "get_task_latest_scalar_values" => Some(ctx.store.write(|tx| latest_scalars(tx, req))),
        _ => None,
    }
}

/// Per metric and variant: the last reported value and the average of the last 100 (in
/// iteration order, as reported), plus the task's name, status and last iteration.
fn latest_scalars(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task_id = req.str("task")?;
    let task = crate::tasks::load(tx, task_id)?;
    let mut series: std::collections::BTreeMap<(String, String), Vec<(i64, f64)>> =
        Default::default();
    let mut last_timestamp = 0;
    let mut last_iter = 0;
    for e in tx.events(task_id, Some("training_stats_scalar"))? {
        let (Some(metric), Some(variant), Some(value)) = (
            e.get("metric").and_then(Value::as_str),
            e.get("variant").and_then(Value::as_str),
            e.get("value").and_then(Value::as_f64),
        ) else {
            continue;
        };
        let iter = e.get("iter").and_then(Value::as_i64).unwrap_or(0);
        last_iter = last_iter.max(iter);
        last_timestamp =
            last_timestamp.max(e.get("timestamp").and_then(Value::as_i64).unwrap_or(0));
        series
            .entry((metric.to_string(), variant.to_string()))
            .or_default()
            .push((iter, value));
    }
    let mut metrics: Vec<(String, Vec<Value>)> = Vec::new();
    for ((metric, variant), mut points) in series {
        // Stable: equal iterations keep the order they were reported in.
        points.sort_by_key(|p| p.0);
        let tail = &points[points.len().saturating_sub(100)..];
        let last = tail.last().map_or(0.0, |p| p.1);
        let avg = tail.iter().map(|p| p.1).sum::<f64>() / tail.len().max(1) as f64;
        let v = json!({"name": variant, "last_value": last, "last_100_value": avg});
        match metrics.last_mut() {
            Some((m, vs)) if *m == metric => vs.push(v),
            _ => metrics.push((metric, vec![v])),
        }
    }
    let metrics: Vec<Value> = metrics
        .into_iter()
        .map(|(name, variants)| json!({"name": name, "variants": variants}))
        .collect();
    Ok(json!({
        "metrics": metrics,
        "last_iter": last_iter,
        "name": task.get("name").cloned().unwrap_or(json!("")),
        "status": task.get("status").cloned().unwrap_or(json!("")),
        "last_timestamp": last_timestamp,
    }))
}

pub fn queues(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let forward = match action {
        "move_task_forward" => true,
        "move_task_backward" => false,
        _ => return None,
    };
    Some(ctx.store.write(|tx| move_task(tx, req, forward)))
}

/// Runs the single call for each id; one id's failure does not stop the others.
fn many(ctx: &Ctx, single: &str, req: &Req) -> Result<Value, ApiError> {
    let ids = req
        .str_list("ids")?
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::missing_field("ids"))?;
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for id in ids {
        let mut body = req.body.clone();
        body.remove("ids");
        body.insert("task".into(), json!(id));
        let one = Req {
            body,
            lines: None,
            bad_lines: Vec::new(),
            caller: req.caller.clone(),
            worker_header: req.worker_header.clone(),
        };
        match crate::tasks::call(ctx, single, &one) {
            Some(Ok(Value::Object(mut reply))) => {
                reply.insert("id".into(), json!(id));
                ok.push(Value::Object(reply));
            }
            Some(Ok(_)) => ok.push(json!({ "id": id })),
            Some(Err(e)) => failed.push(json!({
                "id": id,
                "error": {"codes": [e.code, e.subcode], "msg": e.msg, "data": {}},
            })),
            None => return Err(ApiError::internal(format!("no tasks.{single}"))),
        }
    }
    if single == "enqueue" {
        ctx.queue_changed.notify_waiters();
    }
    Ok(json!({"succeeded": ok, "failed": failed}))
}

/// `tasks.archive {tasks}`: the old single-call form; `{archived: n}`.
fn archive(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req
        .str_list("tasks")?
        .ok_or_else(|| ApiError::missing_field("tasks"))?;
    let mut n = 0;
    for id in ids {
        let mut t = crate::tasks::load(tx, &id)?;
        let mut tags = doc_strings(&t, "system_tags");
        if tags.iter().any(|s| s == "archived") {
            continue;
        }
        if t.get("status").and_then(Value::as_str) == Some("queued") {
            crate::tasks::dequeue_task(tx, &mut t, None, false, "", "")?;
        }
        tags.push("archived".into());
        t.insert("system_tags".into(), json!(tags));
        crate::tasks::save(tx, &t)?;
        n += 1;
    }
    Ok(json!({ "archived": n }))
}

fn in_projects(doc: &Doc, scope: &Option<BTreeSet<String>>) -> bool {
    match scope {
        None => true,
        Some(s) => doc
            .get("project")
            .and_then(Value::as_str)
            .is_some_and(|p| s.contains(p)),
    }
}

/// The project ids asked for (and their subprojects); `None` for all.
fn scope(tx: &Tx<'_>, req: &Req) -> Result<Option<BTreeSet<String>>, ApiError> {
    let ids = match req.str_list("projects")? {
        Some(p) => Some(p),
        None => req.opt_str("project")?.map(|p| vec![p.to_string()]),
    };
    crate::project_stats::project_scope(tx, ids, req.bool_or("include_subprojects", true)?)
}

fn tags(tx: &mut Tx<'_>, req: &Req, kinds: &[&str], scoped: bool) -> Result<Value, ApiError> {
    let scope = if scoped { scope(tx, req)? } else { None };
    let include_system = req.bool_or("include_system", false)?;
    let (mut tags, mut system) = (BTreeSet::new(), BTreeSet::new());
    for kind in kinds {
        for d in tx.all(kind)? {
            if !in_projects(&d, &scope) {
                continue;
            }
            tags.extend(doc_strings(&d, "tags"));
            if include_system {
                system.extend(doc_strings(&d, "system_tags"));
            }
        }
    }
    Ok(json!({"tags": tags, "system_tags": system}))
}

fn validate_delete(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let project = req.str("project")?.to_string();
    crate::projects::load(tx, &project)?;
    let scope = crate::project_stats::project_scope(tx, Some(vec![project]), true)?;
    let count = |kind: &str| -> Result<(usize, usize), ApiError> {
        let docs: Vec<Doc> = tx
            .all(kind)?
            .into_iter()
            .filter(|d| in_projects(d, &scope))
            .collect();
        let active = docs
            .iter()
            .filter(|d| {
                !doc_strings(d, "system_tags")
                    .iter()
                    .any(|s| s == "archived")
            })
            .count();
        Ok((docs.len(), active))
    };
    let (tasks, active_tasks) = count("tasks")?;
    let (models, active_models) = count("models")?;
    Ok(json!({
        "tasks": tasks, "non_archived_tasks": active_tasks,
        "models": models, "non_archived_models": active_models,
    }))
}

fn hyperparam_values(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let section = req.str("section")?.to_string();
    let name = req.str("name")?.to_string();
    let pattern = req.opt_str("pattern")?.map(crate::req::NameFilter::new);
    let scope = scope(tx, req)?;
    let mut values = BTreeSet::new();
    for t in tx.all("tasks")? {
        if !in_projects(&t, &scope) {
            continue;
        }
        let v = t
            .get("hyperparams")
            .and_then(|h| h.get(&section))
            .and_then(|s| s.get(&name))
            .and_then(|p| p.get("value"));
        let matching = v
            .and_then(Value::as_str)
            .filter(|v| pattern.as_ref().is_none_or(|p| p.is_match(v)));
        if let Some(v) = matching {
            values.insert(v.to_string());
        }
    }
    let total = values.len();
    let page_size = req.i64_opt("page_size")?.unwrap_or(500).clamp(1, 10_000) as usize;
    let page = req.i64_opt("page")?.unwrap_or(0).max(0) as usize;
    let values: Vec<String> = values
        .into_iter()
        .skip(page.saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(json!({"total": total, "values": values}))
}

/// Moves a queued task `count` places towards the front (forward) or the back.
fn move_task(tx: &mut Tx<'_>, req: &Req, forward: bool) -> Result<Value, ApiError> {
    let queue = req.str("queue")?.to_string();
    let task = req.str("task")?;
    let count = req.i64_opt("count")?.unwrap_or(1).max(1) as usize;
    let mut q = crate::queues::load(tx, &queue)?;
    let mut entries: Vec<Value> = q
        .get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(at) = entries
        .iter()
        .position(|e| e.get("task").and_then(Value::as_str) == Some(task))
    else {
        return Err(ApiError::new(
            400,
            703,
            format!("Task not found in queue: task={task}, queue={queue}"),
        ));
    };
    let entry = entries.remove(at);
    let to = if forward {
        at.saturating_sub(count)
    } else {
        (at + count).min(entries.len())
    };
    entries.insert(to, entry);
    q.insert("entries".into(), Value::Array(entries));
    q.insert("last_update".into(), json!(now_iso()));
    tx.put("queues", &queue, &q)?;
    Ok(json!({ "position": to }))
}
