//! `tasks.*`: the task document, its status machine (server-api.md §4) and queue moves (§5).
//!
//! Layout: `status` (the status machine and queue moves), `fields` (the document and its
//! editable fields), `params` (hyperparameters and configuration), `artifacts`.

use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::queues;
use crate::req::{NameFilter, Req, doc_strings, get_path, new_id, now_iso, set_path};
use crate::store::{Doc, Tx};

mod artifacts;
mod fields;
mod params;
mod status;

use artifacts::*;
use fields::*;
use params::*;
use status::*;
// The bulk and project-wide endpoints dequeue with the same rules.
pub(crate) use status::dequeue_task;
pub use status::{change_status, stop_stale};

const KIND: &str = "tasks";

/// The real server's task status set (`TaskStatus`).
const STATUSES: &[&str] = &[
    "created",
    "queued",
    "in_progress",
    "stopped",
    "publishing",
    "published",
    "closed",
    "failed",
    "completed",
    "unknown",
];

const TASK_TYPES: &[&str] = &[
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
    "report",
];

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "create" => ctx.store.write(|tx| create(ctx, tx, req)),
        "get_by_id" => ctx.store.write(|tx| {
            let id = req.str("task")?;
            Ok(json!({ "task": load(tx, id)? }))
        }),
        "get_all" | "get_all_ex" => ctx.store.write(|tx| get_all(tx, req)),
        "edit" => ctx.store.write(|tx| edit(tx, req)),
        "update" => ctx.store.write(|tx| update(tx, req)),
        "started" => status_call(ctx, req, "in_progress"),
        "stopped" => status_call(ctx, req, "stopped"),
        "failed" => status_call(ctx, req, "failed"),
        "completed" => status_call(ctx, req, "completed"),
        "close" => status_call(ctx, req, "closed"),
        "publish" => status_call(ctx, req, "published"),
        "stop" => ctx.store.write(|tx| stop(ctx, tx, req)),
        "enqueue" => {
            let r = ctx.store.write(|tx| enqueue(ctx, tx, req));
            if r.is_ok() {
                ctx.queue_changed.notify_waiters();
            }
            r
        }
        "dequeue" => ctx.store.write(|tx| dequeue(tx, req)),
        "reset" => ctx.store.write(|tx| reset(tx, req)),
        "clone" => ctx.store.write(|tx| clone(ctx, tx, req)),
        "delete" => ctx.store.write(|tx| delete(tx, req)),
        "ping" => ctx.store.write(|tx| {
            let mut t = load(tx, req.str("task")?)?;
            t.insert("last_update".into(), Value::String(now_iso()));
            save(tx, &t)?;
            Ok(json!({}))
        }),
        "set_requirements" => ctx.store.write(|tx| {
            let mut t = load(tx, req.str("task")?)?;
            let requirements = req
                .object("requirements")?
                .cloned()
                .ok_or_else(|| ApiError::missing_field("requirements"))?;
            set_path(
                &mut t,
                "script.requirements",
                Value::Object(requirements.clone()),
            );
            touch(&mut t);
            save(tx, &t)?;
            Ok(json!({"updated": 1, "fields": {"script.requirements": requirements}}))
        }),
        "add_or_update_artifacts" => ctx.store.write(|tx| add_or_update_artifacts(tx, req)),
        "delete_artifacts" => ctx.store.write(|tx| delete_artifacts(tx, req)),
        "add_or_update_model" => ctx.store.write(|tx| add_or_update_model(tx, req)),
        "get_hyper_params" => ctx.store.write(|tx| get_hyper_params(tx, req)),
        "edit_hyper_params" => ctx.store.write(|tx| edit_hyper_params(tx, req)),
        "delete_hyper_params" => ctx.store.write(|tx| delete_hyper_params(tx, req)),
        "get_configurations" => ctx.store.write(|tx| get_configurations(tx, req)),
        "get_configuration_names" => ctx.store.write(|tx| get_configuration_names(tx, req)),
        "edit_configuration" => ctx.store.write(|tx| edit_configuration(tx, req)),
        "get_types" => ctx.store.write(|tx| {
            let mut types: Vec<String> = tx
                .all(KIND)?
                .iter()
                .filter_map(|t| t.get("type").and_then(Value::as_str).map(str::to_string))
                .collect();
            types.sort();
            types.dedup();
            Ok(json!({ "types": types }))
        }),
        _ => return None,
    };
    Some(r)
}

pub fn load(tx: &Tx<'_>, id: &str) -> Result<Doc, ApiError> {
    tx.get(KIND, id)?.ok_or_else(|| ApiError::invalid_task(id))
}

pub fn save(tx: &mut Tx<'_>, t: &Doc) -> Result<(), ApiError> {
    let id = t
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::internal("task without id"))?
        .to_string();
    tx.put(KIND, &id, t)
}

fn touch(t: &mut Doc) {
    let now = Value::String(now_iso());
    t.insert("last_update".into(), now.clone());
    t.insert("last_change".into(), now);
}

fn id_of(t: &Doc) -> String {
    t.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn task_ids(req: &Req) -> Result<Vec<String>, ApiError> {
    req.str_list("tasks")?
        .ok_or_else(|| ApiError::missing_field("tasks"))
}

fn get_all(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req.str_list("id")?;
    let search_hidden = req.bool_or("search_hidden", false)? || ids.is_some();
    let name = req.opt_str("name")?.map(NameFilter::new);
    let list_filters: Vec<(&str, Vec<String>)> = [
        "project",
        "status",
        "type",
        "tags",
        "system_tags",
        "user",
        "parent",
        "execution.queue",
    ]
    .into_iter()
    .map(|f| Ok((f, req.str_list(f)?)))
    .collect::<Result<Vec<_>, ApiError>>()?
    .into_iter()
    .filter_map(|(f, v)| v.map(|v| (f, v)))
    .collect();
    let mut docs: Vec<Doc> = match &ids {
        Some(ids) => ids
            .iter()
            .filter_map(|id| tx.get(KIND, id).transpose())
            .collect::<Result<Vec<_>, _>>()?,
        None => tx.all(KIND)?,
    };
    docs.retain(|t| {
        if !search_hidden && doc_strings(t, "system_tags").iter().any(|s| s == "hidden") {
            return false;
        }
        if let Some(pattern) = &name {
            let n = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if !pattern.is_match(n) {
                return false;
            }
        }
        list_filters
            .iter()
            .all(|(f, wanted)| crate::query::matches_list(get_path(t, f), wanted))
    });
    Ok(json!({ "tasks": crate::query::order_page_project(docs, req)? }))
}
