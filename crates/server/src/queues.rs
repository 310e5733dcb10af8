//! `queues.*`: FIFO queues of task ids (server-api.md §5). A queue is one document whose
//! `entries` list is changed inside a transaction, so a pop is atomic.

use serde_json::{Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{NameFilter, Req, new_id, now_iso, project};
use crate::store::{Doc, Tx};

const KIND: &str = "queues";

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "create" => ctx.store.write(|tx| {
            let name = req.str("name")?;
            let tags = req.str_list("tags")?.unwrap_or_default();
            let system_tags = req.str_list("system_tags")?.unwrap_or_default();
            let id = create_queue(ctx, tx, name, &tags, &system_tags)?;
            if let Some(display) = req.opt_str("display_name")? {
                let mut q = load(tx, &id)?;
                q.insert("display_name".into(), json!(display));
                tx.put(KIND, &id, &q)?;
            }
            Ok(json!({ "id": id }))
        }),
        "get_all" | "get_all_ex" => ctx.store.write(|tx| get_all(tx, req)),
        "get_by_id" => ctx.store.write(|tx| {
            let q = load(tx, req.str("queue")?)?;
            Ok(json!({ "queue": limit_entries(q, req)? }))
        }),
        "get_default" => ctx.store.write(|tx| {
            let id = default_queue(tx)?;
            let q = load(tx, &id)?;
            Ok(json!({"id": id, "name": q.get("name").cloned().unwrap_or(Value::Null)}))
        }),
        "add_task" => {
            let r = ctx.store.write(|tx| {
                let queue = req.str("queue")?;
                let task = req.str("task")?;
                crate::tasks::load(tx, task)?;
                push(tx, queue, task)?;
                if req.bool_or("update_execution_queue", true)? {
                    let mut t = crate::tasks::load(tx, task)?;
                    crate::req::set_path(&mut t, "execution.queue", json!(queue));
                    crate::tasks::save(tx, &t)?;
                }
                Ok(json!({"added": 1}))
            });
            if r.is_ok() {
                ctx.queue_changed.notify_waiters();
            }
            r
        }
        "move_task_to_front" | "move_task_to_back" => ctx.store.write(|tx| {
            let queue = req.str("queue")?;
            let task = req.str("task")?;
            let mut q = load(tx, queue)?;
            let mut e = entries(&q);
            let Some(at) = e
                .iter()
                .position(|x| x.get("task").and_then(Value::as_str) == Some(task))
            else {
                return Err(ApiError::new(
                    400,
                    703,
                    format!("Task not found in queue: task={task}, queue={queue}"),
                ));
            };
            let entry = e.remove(at);
            let position = if action == "move_task_to_front" {
                e.insert(0, entry);
                0
            } else {
                e.push(entry);
                e.len() - 1
            };
            q.insert("entries".into(), Value::Array(e));
            q.insert("last_update".into(), json!(now_iso()));
            tx.put(KIND, queue, &q)?;
            Ok(json!({"position": position}))
        }),
        "remove_task" => ctx.store.write(|tx| {
            let queue = req.str("queue")?;
            let task = req.str("task")?;
            let removed = remove_from(tx, queue, task)?;
            if removed == 0 {
                return Err(ApiError::new(
                    400,
                    703,
                    format!("Invalid queue id or task not in queue: queue={queue}, task={task}"),
                ));
            }
            if req.bool_or("update_task_status", false)? {
                restore_status(tx, task)?;
            }
            Ok(json!({ "removed": removed }))
        }),
        "get_next_task" => ctx.store.write(|tx| get_next_task(tx, req)),
        "peek_task" => ctx.store.write(|tx| {
            let q = load(tx, req.str("queue")?)?;
            let first = entries(&q).first().cloned();
            Ok(json!({"task": first.and_then(|e| e.get("task").cloned())}))
        }),
        "get_num_entries" => ctx.store.write(|tx| {
            let q = load(tx, req.str("queue")?)?;
            Ok(json!({"num": entries(&q).len()}))
        }),
        "clear_queue" => ctx.store.write(|tx| {
            let id = req.str("queue")?;
            let mut q = load(tx, id)?;
            let tasks: Vec<String> = entries(&q)
                .iter()
                .filter_map(|e| e.get("task").and_then(Value::as_str).map(str::to_string))
                .collect();
            q.insert("entries".into(), json!([]));
            tx.put(KIND, id, &q)?;
            for t in &tasks {
                restore_status(tx, t)?;
            }
            Ok(json!({ "removed_tasks": tasks }))
        }),
        "delete" => ctx.store.write(|tx| {
            let id = req.str("queue")?;
            let q = load(tx, id)?;
            if !entries(&q).is_empty() && !req.bool_or("force", false)? {
                return Err(ApiError::new(
                    400,
                    702,
                    "Queue is not empty (use force to delete it)",
                ));
            }
            for e in entries(&q) {
                if let Some(t) = e.get("task").and_then(Value::as_str) {
                    restore_status(tx, t)?;
                }
            }
            tx.delete(KIND, id)?;
            Ok(json!({"deleted": 1}))
        }),
        "update" => ctx.store.write(|tx| {
            let id = req.str("queue")?;
            let mut q = load(tx, id)?;
            let mut fields = serde_json::Map::new();
            if let Some(name) = req.opt_str("name")? {
                if find_by_name(tx, name)?.is_some_and(|other| other != id) {
                    return Err(ApiError::not_unique(&format!("name={name}")));
                }
                q.insert("name".into(), json!(name));
                fields.insert("name".into(), json!(name));
            }
            for key in ["tags", "system_tags"] {
                if let Some(v) = req.str_list(key)? {
                    q.insert(key.into(), json!(v));
                    fields.insert(key.into(), json!(v));
                }
            }
            tx.put(KIND, id, &q)?;
            Ok(json!({"updated": 1, "fields": fields}))
        }),
        "add_or_update_metadata" => ctx.store.write(|tx| {
            let id = req.str("queue")?;
            let mut q = load(tx, id)?;
            let items = req
                .array("metadata")?
                .ok_or_else(|| ApiError::missing_field("metadata"))?;
            let mut meta = if req.bool_or("replace_metadata", false)? {
                serde_json::Map::new()
            } else {
                q.get("metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default()
            };
            for m in items {
                let key = m
                    .get("key")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::validation("metadata items need a key"))?;
                meta.insert(key.to_string(), m.clone());
            }
            q.insert("metadata".into(), Value::Object(meta));
            tx.put(KIND, id, &q)?;
            Ok(json!({"updated": 1}))
        }),
        "delete_metadata" => ctx.store.write(|tx| {
            let id = req.str("queue")?;
            let mut q = load(tx, id)?;
            let keys = req
                .str_list("keys")?
                .ok_or_else(|| ApiError::missing_field("keys"))?;
            if let Some(Value::Object(meta)) = q.get_mut("metadata") {
                for k in &keys {
                    meta.remove(k);
                }
            }
            tx.put(KIND, id, &q)?;
            Ok(json!({"updated": 1}))
        }),
        "get_queue_metrics" => crate::metrics_series::queue_metrics(ctx, req),
        _ => return None,
    };
    Some(r)
}

pub fn load(tx: &Tx<'_>, id: &str) -> Result<Doc, ApiError> {
    tx.get(KIND, id)?.ok_or_else(|| ApiError::invalid_queue(id))
}

fn entries(q: &Doc) -> Vec<Value> {
    q.get("entries")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn limit_entries(mut q: Doc, req: &Req) -> Result<Doc, ApiError> {
    if let Some(max) = req.i64_opt("max_task_entries")? {
        let e: Vec<Value> = entries(&q).into_iter().take(max.max(0) as usize).collect();
        q.insert("entries".into(), Value::Array(e));
    }
    Ok(q)
}

pub fn find_by_name(tx: &Tx<'_>, name: &str) -> Result<Option<String>, ApiError> {
    Ok(tx
        .all(KIND)?
        .into_iter()
        .find(|q| q.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|q| q.get("id").and_then(Value::as_str).map(str::to_string)))
}

pub fn create_queue(
    ctx: &Ctx,
    tx: &mut Tx<'_>,
    name: &str,
    tags: &[String],
    system_tags: &[String],
) -> Result<String, ApiError> {
    if name.chars().count() < 3 {
        return Err(ApiError::validation(
            "queue name must have at least 3 characters",
        ));
    }
    if find_by_name(tx, name)?.is_some() {
        return Err(ApiError::not_unique(&format!("name={name}")));
    }
    let id = new_id();
    let now = now_iso();
    let q = json!({
        "id": id,
        "name": name,
        "display_name": name,
        "company": ctx.company(),
        "user": ctx.user(),
        "created": now,
        "last_update": now,
        "tags": tags,
        "system_tags": system_tags,
        "entries": [],
        "metadata": {},
    });
    if let Value::Object(q) = q {
        tx.put(KIND, &id, &q)?;
    }
    Ok(id)
}

/// The queue tagged `default` (400/707 if none, 400/708 if several).
pub fn default_queue(tx: &Tx<'_>) -> Result<String, ApiError> {
    let ids: Vec<String> = tx
        .all(KIND)?
        .into_iter()
        .filter(|q| {
            q.get("system_tags")
                .and_then(Value::as_array)
                .is_some_and(|t| t.iter().any(|s| s == "default"))
        })
        .filter_map(|q| q.get("id").and_then(Value::as_str).map(str::to_string))
        .collect();
    match ids.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(ApiError::new(
            400,
            707,
            "No queue is tagged as the default queue",
        )),
        _ => Err(ApiError::new(
            400,
            708,
            "More than one queue is tagged as the default queue",
        )),
    }
}

/// Creates the `default` queue on first start when there are no queues at all, as the real
/// server does.
pub fn ensure_default(ctx: &Ctx) -> Result<(), ApiError> {
    ctx.store.write(|tx| {
        if tx.all(KIND)?.is_empty() {
            create_queue(ctx, tx, "default", &[], &["default".to_string()])?;
        }
        Ok(())
    })
}

/// Appends a task (400/706 if it is already in this queue).
pub fn push(tx: &mut Tx<'_>, queue: &str, task: &str) -> Result<(), ApiError> {
    let mut q = load(tx, queue)?;
    let mut e = entries(&q);
    if e.iter()
        .any(|x| x.get("task").and_then(Value::as_str) == Some(task))
    {
        return Err(ApiError::new(
            400,
            706,
            format!("Task already in queue: task={task}, queue={queue}"),
        ));
    }
    e.push(json!({"task": task, "added": now_iso()}));
    q.insert("entries".into(), Value::Array(e));
    q.insert("last_update".into(), json!(now_iso()));
    tx.put(KIND, queue, &q)
}

fn remove_from(tx: &mut Tx<'_>, queue: &str, task: &str) -> Result<usize, ApiError> {
    let mut q = load(tx, queue)?;
    let mut e = entries(&q);
    let before = e.len();
    e.retain(|x| x.get("task").and_then(Value::as_str) != Some(task));
    let removed = before - e.len();
    if removed > 0 {
        q.insert("entries".into(), Value::Array(e));
        q.insert("last_update".into(), json!(now_iso()));
        tx.put(KIND, queue, &q)?;
    }
    Ok(removed)
}

/// Takes a task out of every queue.
pub fn remove_task_everywhere(tx: &mut Tx<'_>, task: &str) -> Result<(), ApiError> {
    for q in tx.all(KIND)? {
        let holds = entries(&q)
            .iter()
            .any(|x| x.get("task").and_then(Value::as_str) == Some(task));
        if holds && let Some(id) = q.get("id").and_then(Value::as_str) {
            remove_from(tx, id, task)?;
        }
    }
    Ok(())
}

/// After a task left a queue by other means than being pulled: back to its status before
/// `enqueue`, and no execution queue.
fn restore_status(tx: &mut Tx<'_>, task: &str) -> Result<(), ApiError> {
    let Some(mut t) = tx.get("tasks", task)? else {
        return Ok(());
    };
    if t.get("status").and_then(Value::as_str) == Some("queued") {
        let target = t
            .get("enqueue_status")
            .and_then(Value::as_str)
            .unwrap_or("created")
            .to_string();
        crate::tasks::change_status(&mut t, &target, true, "", "")?;
    }
    t.remove("enqueue_status");
    crate::req::set_path(&mut t, "execution.queue", Value::Null);
    crate::tasks::save(tx, &t)
}

/// Pops the head of a queue. With `task`, only when that task is at the head. With
/// `queues` (our extension, used by the Rust agent's long-poll), the first non-empty queue of
/// that list in order is popped and named in the answer's `queue`.
fn get_next_task(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut id = req.str("queue")?.to_string();
    if let Some(list) = req.str_list("queues")? {
        let mut found = None;
        for q in &list {
            let queue = load(tx, q)?;
            if !entries(&queue).is_empty() {
                found = Some(q.clone());
                break;
            }
        }
        match found {
            Some(q) => id = q,
            None => return Ok(json!({})),
        }
    }
    let id = id.as_str();
    let mut q = load(tx, id)?;
    let mut e = entries(&q);
    let Some(head) = e.first().cloned() else {
        return Ok(json!({}));
    };
    let task = head
        .get("task")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(wanted) = req.opt_str("task")?
        && wanted != task
    {
        return Ok(json!({}));
    }
    e.remove(0);
    q.insert("entries".into(), Value::Array(e));
    q.insert("last_update".into(), json!(now_iso()));
    tx.put(KIND, id, &q)?;
    let mut out = json!({ "entry": head, "queue": id });
    if let Some(mut t) = tx.get("tasks", &task)? {
        // A task stopped while queued is put back to queued, as the real server does.
        if t.get("status").and_then(Value::as_str) == Some("stopped") {
            crate::tasks::change_status(&mut t, "queued", true, "", "")?;
            crate::tasks::save(tx, &t)?;
        }
        if req.bool_or("get_task_info", false)? {
            out["task_info"] = json!({
                "user": t.get("user").cloned().unwrap_or(Value::Null),
                "company": t.get("company").cloned().unwrap_or(Value::Null),
            });
        }
    }
    Ok(out)
}

fn get_all(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req.str_list("id")?;
    let name = req.opt_str("name")?.map(NameFilter::new);
    let tags = req.str_list("tags")?;
    let system_tags = req.str_list("system_tags")?;
    let search_hidden = req.bool_or("search_hidden", false)? || ids.is_some() || name.is_some();
    let mut docs = tx.all(KIND)?;
    docs.retain(|q| {
        let get_list = |k: &str| crate::req::doc_strings(q, k);
        let id = q.get("id").and_then(Value::as_str).unwrap_or_default();
        if ids.as_ref().is_some_and(|ids| !ids.iter().any(|i| i == id)) {
            return false;
        }
        if let Some(p) = &name {
            let n = q.get("name").and_then(Value::as_str).unwrap_or_default();
            if !p.is_match(n) {
                return false;
            }
        }
        let qtags = get_list("tags");
        if tags
            .as_ref()
            .is_some_and(|t| !t.iter().any(|x| qtags.contains(x)))
        {
            return false;
        }
        let qsys = get_list("system_tags");
        if system_tags
            .as_ref()
            .is_some_and(|t| !t.iter().any(|x| qsys.contains(x)))
        {
            return false;
        }
        search_hidden || !qsys.iter().any(|s| s == "k8s-glue")
    });
    let max = req.i64_opt("max_task_entries")?;
    let only = req.str_list("only_fields")?;
    let queues: Vec<Value> = docs
        .into_iter()
        .map(|mut q| {
            if let Some(max) = max {
                let e: Vec<Value> = entries(&q).into_iter().take(max.max(0) as usize).collect();
                q.insert("entries".into(), Value::Array(e));
            }
            Value::Object(project(&q, only.as_deref()))
        })
        .collect();
    Ok(json!({ "queues": queues }))
}
