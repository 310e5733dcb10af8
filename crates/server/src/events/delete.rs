//! Deleting a task's or model's events and clearing its log.

use super::*;

/// `delete_for_task` / `delete_for_model`: `{deleted: n}`. Published tasks and ready models
/// keep their events unless `allow_locked`.
pub(super) fn delete_for(tx: &mut Tx<'_>, req: &Req, model: bool) -> Result<Value, ApiError> {
    let id = req.str(if model { "model" } else { "task" })?;
    let doc = owner_doc(tx, id, model)?;
    check_unlocked(&doc, id, model, req.bool_or("allow_locked", false)?)?;
    let deleted = tx.events(id, None)?.len();
    tx.delete_events(id)?;
    Ok(json!({ "deleted": deleted }))
}

pub(super) fn check_unlocked(
    doc: &Doc,
    id: &str,
    model: bool,
    allow_locked: bool,
) -> Result<(), ApiError> {
    if allow_locked {
        return Ok(());
    }
    if model && doc.get("ready").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::new(
            400,
            201,
            format!("Invalid model id (Cannot update events for a published model): id={id}"),
        ));
    }
    if !model && LOCKED_STATUSES.contains(&str_field(doc, "status")) {
        return Err(ApiError::new(
            400,
            101,
            format!("Invalid task id (Cannot update events for a published task): id={id}"),
        ));
    }
    Ok(())
}

/// `clear_task_log {task, threshold_sec?, include_metrics?, exclude_metrics?, allow_locked}`:
/// deletes console lines (older than `threshold_sec`). The store deletes a task's events only
/// as a whole, so the kept events are written back in their original order.
pub(super) fn clear_task_log(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    let doc = owner_doc(tx, task, false)?;
    check_unlocked(&doc, task, false, req.bool_or("allow_locked", false)?)?;
    let cutoff = req
        .i64_opt("threshold_sec")?
        .filter(|t| *t > 0)
        .map(|t| now_ms() - t.saturating_mul(1000));
    let include = req.str_list("include_metrics")?.filter(|l| !l.is_empty());
    let exclude = req.str_list("exclude_metrics")?.unwrap_or_default();
    let all = tx.events(task, None)?;
    let doomed = |d: &Doc| {
        let metric = str_field(d, "metric").to_string();
        str_field(d, "type") == LOG
            && cutoff.is_none_or(|c| ts_of(d) < c)
            && include.as_ref().is_none_or(|l| l.contains(&metric))
            && !exclude.contains(&metric)
    };
    let deleted = all.iter().filter(|d| doomed(d)).count();
    if deleted > 0 {
        tx.delete_events(task)?;
        for d in all.iter().filter(|d| !doomed(d)) {
            tx.add_event(task, str_field(d, "type"), ts_of(d), d)?;
        }
    }
    Ok(json!({ "deleted": deleted }))
}
