//! The status machine: transitions, the status endpoints, queue moves and the watchdog.

use super::*;

pub(super) fn status_of(t: &Doc) -> &str {
    t.get("status").and_then(Value::as_str).unwrap_or("created")
}

/// The real server's transition table (apiserver/bll/task/utils.py). Same-status moves are
/// allowed; `force` skips the check.
pub(super) fn allowed(from: &str, to: &str) -> bool {
    if from == to {
        return true;
    }
    let targets: &[&str] = match from {
        "created" => &["queued", "in_progress"],
        "queued" => &["created", "in_progress", "stopped"],
        "in_progress" => &["stopped", "failed", "created", "completed"],
        "stopped" => &[
            "closed",
            "created",
            "failed",
            "queued",
            "in_progress",
            "published",
            "publishing",
            "completed",
        ],
        "closed" => &["created", "failed", "published", "publishing", "stopped"],
        "failed" => &["created", "stopped", "published", "queued"],
        "publishing" => &["published"],
        "completed" => &["published", "in_progress", "created"],
        _ => &[],
    };
    targets.contains(&to)
}

/// Moves a task to `new`, checking the status machine unless `force`.
pub fn change_status(
    t: &mut Doc,
    new: &str,
    force: bool,
    reason: &str,
    message: &str,
) -> Result<Map<String, Value>, ApiError> {
    let current = status_of(t).to_string();
    if !force && !allowed(&current, new) {
        return Err(ApiError::invalid_status(&current, new));
    }
    let now = now_iso();
    let mut fields = Map::new();
    fields.insert("status".into(), json!(new));
    fields.insert("status_reason".into(), json!(reason));
    fields.insert("status_message".into(), json!(message));
    fields.insert("status_changed".into(), json!(now));
    fields.insert("last_update".into(), json!(now));
    fields.insert("last_change".into(), json!(now));
    match new {
        "in_progress" if t.get("started").is_none_or(Value::is_null) => {
            fields.insert("started".into(), json!(now));
        }
        "stopped" | "completed" | "failed" => {
            fields.insert("completed".into(), json!(now));
        }
        "published" => {
            fields.insert("published".into(), json!(now));
        }
        "queued" => {
            let tags: Vec<String> = doc_strings(t, "system_tags")
                .into_iter()
                .filter(|s| s != "development")
                .collect();
            fields.insert("system_tags".into(), json!(tags));
        }
        _ => {}
    }
    for (k, v) in &fields {
        t.insert(k.clone(), v.clone());
    }
    Ok(fields)
}

pub(super) fn status_call(ctx: &Ctx, req: &Req, new: &str) -> Result<Value, ApiError> {
    ctx.store.write(|tx| {
        let mut t = load(tx, req.str("task")?)?;
        let force = req.bool_or("force", false)?;
        let reason = req.opt_str("status_reason")?.unwrap_or_default();
        let message = req.opt_str("status_message")?.unwrap_or_default();
        let fields = change_status(&mut t, new, force, reason, message)?;
        save(tx, &t)?;
        let mut out = json!({"updated": 1, "fields": fields});
        if new == "in_progress" {
            out["started"] = json!(1);
        }
        if new == "published" {
            out["committed_versions_results"] = json!([]);
        }
        Ok(out)
    })
}

/// `tasks.stop` (the UI's abort): stopped at once when nothing runs the task, otherwise the
/// status stays and the message becomes "stopping", which the agent or SDK acts on.
pub(super) fn stop(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let force = req.bool_or("force", false)?;
    let status = status_of(&t).to_string();
    let reason = req
        .opt_str("status_reason")?
        .unwrap_or_default()
        .to_string();
    let development = doc_strings(&t, "system_tags")
        .iter()
        .any(|s| s == "development");
    let last_worker = t
        .get("last_worker")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .is_some();
    let fresh = t
        .get("last_update")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .is_some_and(|d| {
            (chrono::Utc::now() - d.with_timezone(&chrono::Utc)).num_seconds()
                < ctx.task_update_timeout_sec
        });
    let fields = if status == "queued" {
        queues::remove_task_everywhere(tx, &id_of(&t))?;
        change_status(&mut t, "stopped", true, &reason, "Stopped by user")?
    } else if status == "in_progress" && last_worker && fresh && !development && !force {
        t.insert("status_message".into(), json!("stopping"));
        t.insert("status_reason".into(), json!(reason));
        touch(&mut t);
        let mut f = Map::new();
        f.insert("status_message".into(), json!("stopping"));
        f
    } else {
        change_status(&mut t, "stopped", force, &reason, "Stopped by user")?
    };
    save(tx, &t)?;
    Ok(json!({"updated": 1, "fields": fields}))
}

pub(super) fn enqueue(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let task_id = id_of(&t);
    let force = req.bool_or("force", false)?;
    let queue_id = match (req.opt_str("queue")?, req.opt_str("queue_name")?) {
        (Some(q), _) if !q.is_empty() => {
            queues::load(tx, q)?;
            q.to_string()
        }
        (_, Some(name)) if !name.is_empty() => match queues::find_by_name(tx, name)? {
            Some(q) => q,
            None => queues::create_queue(ctx, tx, name, &[], &[])?,
        },
        _ => queues::default_queue(tx)?,
    };
    let previous = status_of(&t).to_string();
    let reason = req.opt_str("status_reason")?.unwrap_or_default();
    let message = req.opt_str("status_message")?.unwrap_or_default();
    let mut fields = change_status(&mut t, "queued", force, reason, message)?;
    if previous != "queued" {
        t.insert("enqueue_status".into(), json!(previous));
    }
    queues::remove_task_everywhere(tx, &task_id)?;
    queues::push(tx, &queue_id, &task_id)?;
    if req.bool_or("update_execution_queue", true)? {
        set_path(&mut t, "execution.queue", json!(queue_id));
        fields.insert("execution.queue".into(), json!(queue_id));
    }
    save(tx, &t)?;
    let mut out = json!({"queued": 1, "updated": 1, "fields": fields});
    if req.bool_or("verify_watched_queue", false)? {
        let now = chrono::Utc::now().timestamp();
        let watched = ctx
            .workers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .any(|w| {
                crate::workers::is_alive(w, now, ctx.worker_timeout_sec)
                    && w.get("queues")
                        .and_then(Value::as_array)
                        .is_some_and(|qs| qs.iter().any(|q| q.get("id") == Some(&json!(queue_id))))
            });
        out["queue_watched"] = json!(watched);
    }
    Ok(out)
}

/// Takes a task out of its queue(s) and puts it back to the status it had before `enqueue`.
pub fn dequeue_task(
    tx: &mut Tx<'_>,
    t: &mut Doc,
    new_status: Option<&str>,
    remove_from_all: bool,
    reason: &str,
    message: &str,
) -> Result<Map<String, Value>, ApiError> {
    let id = id_of(t);
    let status = status_of(t).to_string();
    if status == "queued" || remove_from_all {
        queues::remove_task_everywhere(tx, &id)?;
    }
    let mut fields = Map::new();
    if status == "queued" || status == "in_progress" {
        let target = new_status
            .map(str::to_string)
            .or_else(|| {
                t.get("enqueue_status")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "created".into());
        fields = change_status(t, &target, true, reason, message)?;
    }
    t.remove("enqueue_status");
    Ok(fields)
}

pub(super) fn dequeue(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let id = req.str("task")?;
    let Some(mut t) = tx.get(KIND, id)? else {
        queues::remove_task_everywhere(tx, id)?;
        return Ok(json!({"dequeued": 1, "updated": 0, "fields": {}}));
    };
    let was = status_of(&t).to_string();
    let fields = dequeue_task(
        tx,
        &mut t,
        req.opt_str("new_status")?,
        req.bool_or("remove_from_all_queues", false)?,
        req.opt_str("status_reason")?.unwrap_or_default(),
        req.opt_str("status_message")?.unwrap_or_default(),
    )?;
    save(tx, &t)?;
    let updated = i32::from(was == "queued" || was == "in_progress");
    Ok(json!({"dequeued": updated, "updated": updated, "fields": fields}))
}

pub(super) fn reset(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let force = req.bool_or("force", false)?;
    if status_of(&t) == "published" && !force {
        return Err(ApiError::task_status("cannot reset a published task"));
    }
    let id = id_of(&t);
    dequeue_task(tx, &mut t, Some("created"), true, "reset", "reset")?;
    for key in [
        "started",
        "completed",
        "published",
        "active_duration",
        "last_worker",
    ] {
        t.remove(key);
    }
    t.insert("last_iteration".into(), json!(0));
    t.insert("last_metrics".into(), json!({}));
    t.insert("runtime".into(), json!({}));
    set_path(&mut t, "models.output", json!([]));
    if let Some(Value::Array(arts)) = get_path(&t, "execution.artifacts").cloned() {
        let kept: Vec<Value> = arts
            .into_iter()
            .filter(|a| a.get("mode").and_then(Value::as_str) == Some("input"))
            .collect();
        set_path(&mut t, "execution.artifacts", Value::Array(kept));
    }
    set_path(&mut t, "execution.queue", Value::Null);
    let fields = change_status(&mut t, "created", true, "reset", "reset")?;
    tx.delete_events(&id)?;
    save(tx, &t)?;
    Ok(json!({"updated": 1, "fields": fields, "dequeued": {}, "deleted_models": 0, "urls": {}}))
}

/// The non-responsive task watchdog: tasks left `in_progress` without any report for
/// `timeout_sec` are stopped, as the real server does every 15 minutes.
pub fn stop_stale(ctx: &Ctx, timeout_sec: i64) -> Result<usize, ApiError> {
    ctx.store.write(|tx| {
        let now = chrono::Utc::now();
        let mut n = 0;
        for mut t in tx.all(KIND)? {
            if status_of(&t) != "in_progress" {
                continue;
            }
            let stale = t
                .get("last_update")
                .and_then(Value::as_str)
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .is_none_or(|d| (now - d.with_timezone(&chrono::Utc)).num_seconds() > timeout_sec);
            if stale {
                change_status(
                    &mut t,
                    "stopped",
                    true,
                    "Forced stop (non-responsive)",
                    "Forced stop (non-responsive)",
                )?;
                save(tx, &t)?;
                n += 1;
            }
        }
        Ok(n)
    })
}
