//! `tasks.*`: the task document, its status machine (server-api.md §4) and queue moves (§5).

use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::queues;
use crate::req::{Req, doc_strings, get_path, new_id, now_iso, regex_search, set_path};
use crate::store::{Doc, Tx};

const KIND: &str = "tasks";

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

fn status_of(t: &Doc) -> &str {
    t.get("status").and_then(Value::as_str).unwrap_or("created")
}

/// The real server's transition table (apiserver/bll/task/utils.py). Same-status moves are
/// allowed; `force` skips the check.
fn allowed(from: &str, to: &str) -> bool {
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

fn new_task_doc(ctx: &Ctx, id: &str, name: &str, kind: &str) -> Doc {
    let now = now_iso();
    let mut t = Map::new();
    let v = json!({
        "id": id,
        "name": name,
        "type": kind,
        "user": ctx.user(),
        "company": ctx.company(),
        "comment": "",
        "status": "created",
        "status_reason": "",
        "status_message": "",
        "status_changed": now,
        "created": now,
        "last_update": now,
        "last_change": now,
        "tags": [],
        "system_tags": [],
        "script": {"binary": "python", "repository": "", "entry_point": "", "working_dir": ".", "requirements": {}},
        "execution": {"parameters": {}, "artifacts": [], "model_desc": {}, "model_labels": {}},
        "output": {},
        "hyperparams": {},
        "configuration": {},
        "runtime": {},
        "container": {},
        "models": {"input": [], "output": []},
        "last_iteration": 0,
        "last_metrics": {},
    });
    if let Value::Object(m) = v {
        t = m;
    }
    t
}

/// Fields `create`, `edit` and `clone` overrides may set: (name, merge?) where embedded
/// documents are shallow-merged and maps are replaced, as the real server does.
const EDITABLE: &[(&str, bool)] = &[
    ("name", false),
    ("type", false),
    ("comment", false),
    ("tags", false),
    ("system_tags", false),
    ("parent", false),
    ("project", false),
    ("input", false),
    ("hyperparams", false),
    ("configuration", false),
    ("runtime", false),
    ("container", false),
    ("script", true),
    ("execution", true),
    ("output", true),
    ("models", true),
];

fn check_field(name: &str, v: &Value) -> Result<(), ApiError> {
    let ok = match name {
        "name" | "type" | "comment" | "parent" | "project" => v.is_string() || v.is_null(),
        "tags" | "system_tags" => {
            v.as_array().is_some_and(|a| a.iter().all(Value::is_string)) || v.is_null()
        }
        _ => v.is_object() || v.is_null(),
    };
    if !ok {
        return Err(ApiError::validation(format!(
            "field {name} has the wrong type"
        )));
    }
    if name == "type"
        && let Some(t) = v.as_str().filter(|t| !TASK_TYPES.contains(t))
    {
        return Err(ApiError::validation(format!("invalid task type {t}")));
    }
    Ok(())
}

/// Applies the editable fields of `body` to `t`; returns the changed fields.
fn apply_fields(t: &mut Doc, body: &Map<String, Value>) -> Result<Map<String, Value>, ApiError> {
    let mut fields = Map::new();
    for (name, merge) in EDITABLE {
        let Some(v) = body.get(*name) else { continue };
        check_field(name, v)?;
        if *merge && let (Some(Value::Object(existing)), Value::Object(new)) = (t.get_mut(*name), v)
        {
            for (k, x) in new {
                existing.insert(k.clone(), x.clone());
            }
            fields.insert((*name).into(), Value::Object(existing.clone()));
            continue;
        }
        t.insert((*name).into(), v.clone());
        fields.insert((*name).into(), v.clone());
    }
    if let Some(dest) = body.get("output_dest") {
        if !(dest.is_string() || dest.is_null()) {
            return Err(ApiError::validation("field output_dest must be a string"));
        }
        set_path(t, "output.destination", dest.clone());
        fields.insert("output.destination".into(), dest.clone());
    }
    Ok(fields)
}

fn check_project(tx: &Tx<'_>, t: &Doc) -> Result<(), ApiError> {
    if let Some(p) = t
        .get("project")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
        && tx.get("projects", p)?.is_none()
    {
        return Err(ApiError::invalid_project(p));
    }
    Ok(())
}

fn create(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let name = req.str("name")?;
    let kind = req.opt_str("type")?.unwrap_or("training");
    if !TASK_TYPES.contains(&kind) {
        return Err(ApiError::validation(format!("invalid task type {kind}")));
    }
    let id = new_id();
    let mut t = new_task_doc(ctx, &id, name, kind);
    apply_fields(&mut t, &req.body)?;
    check_project(tx, &t)?;
    save(tx, &t)?;
    Ok(json!({ "id": id }))
}

fn edit(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let force = req.bool_or("force", false)?;
    if !force && status_of(&t) != "created" {
        return Err(ApiError::task_status(format!(
            "edit is only allowed for created tasks unless forced: status={}",
            status_of(&t)
        )));
    }
    let mut fields = apply_fields(&mut t, &req.body)?;
    check_project(tx, &t)?;
    if let Some(status) = req.opt_str("status")? {
        t.insert("status".into(), json!(status));
        fields.insert("status".into(), json!(status));
    }
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1, "fields": fields}))
}

fn update(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let mut fields = Map::new();
    for key in [
        "name",
        "comment",
        "project",
        "status_reason",
        "status_message",
        "status",
    ] {
        if let Some(v) = req.opt_str(key)? {
            t.insert(key.into(), json!(v));
            fields.insert(key.into(), json!(v));
        }
    }
    for key in ["tags", "system_tags"] {
        if let Some(v) = req.str_list(key)? {
            t.insert(key.into(), json!(v));
            fields.insert(key.into(), json!(v));
        }
    }
    if let Some(err) = req.opt_str("output__error")? {
        set_path(&mut t, "output.error", json!(err));
    }
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1, "fields": fields}))
}

fn status_call(ctx: &Ctx, req: &Req, new: &str) -> Result<Value, ApiError> {
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
fn stop(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

fn id_of(t: &Doc) -> String {
    t.get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn enqueue(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

fn dequeue(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

fn reset(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

fn clone(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let src = load(tx, req.str("task")?)?;
    let id = new_id();
    let name = req
        .opt_str("new_task_name")?
        .map(str::to_string)
        .unwrap_or_else(|| {
            src.get("name")
                .and_then(Value::as_str)
                .unwrap_or("task")
                .to_string()
        });
    let kind = src
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("training");
    let mut t = new_task_doc(ctx, &id, &name, kind);
    for key in [
        "script",
        "hyperparams",
        "configuration",
        "container",
        "tags",
        "comment",
        "project",
    ] {
        if let Some(v) = src.get(key) {
            t.insert(key.into(), v.clone());
        }
    }
    if let Some(inputs) = get_path(&src, "models.input") {
        set_path(&mut t, "models.input", inputs.clone());
    }
    if let Some(dest) = get_path(&src, "output.destination") {
        set_path(&mut t, "output.destination", dest.clone());
    }
    if let Some(Value::Object(exec)) = src.get("execution") {
        let mut exec = exec.clone();
        exec.remove("queue");
        let inputs: Vec<Value> = exec
            .get("artifacts")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter(|x| x.get("mode").and_then(Value::as_str) == Some("input"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        exec.insert("artifacts".into(), Value::Array(inputs));
        t.insert("execution".into(), Value::Object(exec));
    }
    let tags: Vec<String> = doc_strings(&src, "system_tags")
        .into_iter()
        .filter(|s| s != "development" && s != "archived")
        .collect();
    t.insert("system_tags".into(), json!(tags));
    t.insert("parent".into(), json!(id_of(&src)));
    let overrides = [
        ("new_task_comment", "comment"),
        ("new_task_tags", "tags"),
        ("new_task_system_tags", "system_tags"),
        ("new_task_parent", "parent"),
        ("new_task_project", "project"),
        ("new_task_hyperparams", "hyperparams"),
        ("new_task_configuration", "configuration"),
        ("new_task_container", "container"),
        ("new_task_input_models", "models.input"),
    ];
    for (from, to) in overrides {
        if let Some(v) = req.get(from) {
            if to.contains('.') {
                set_path(&mut t, to, v.clone());
            } else {
                check_field(to, v)?;
                t.insert(to.into(), v.clone());
            }
        }
    }
    if let Some(Value::Object(over)) = req.get("execution_overrides") {
        let exec = t
            .entry("execution")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(exec) = exec {
            for (k, v) in over {
                exec.insert(k.clone(), v.clone());
            }
        }
    }
    let mut out = json!({ "id": id });
    if let Some(project_name) = req.opt_str("new_project_name")?.filter(|s| !s.is_empty()) {
        let pid = crate::projects::ensure(ctx, tx, project_name)?;
        t.insert("project".into(), json!(pid));
        out["new_project"] = json!({"id": pid, "name": project_name});
    }
    check_project(tx, &t)?;
    save(tx, &t)?;
    Ok(out)
}

fn delete(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let t = load(tx, req.str("task")?)?;
    let force = req.bool_or("force", false)?;
    let archived = doc_strings(&t, "system_tags")
        .iter()
        .any(|s| s == "archived");
    if !force && !archived && !matches!(status_of(&t), "created") {
        return Err(ApiError::new(
            400,
            123,
            "Task cannot be deleted (only created or archived tasks, unless forced)",
        ));
    }
    let id = id_of(&t);
    queues::remove_task_everywhere(tx, &id)?;
    tx.delete_events(&id)?;
    tx.delete(KIND, &id)?;
    Ok(
        json!({"deleted": true, "updated_children": 0, "updated_models": 0, "events": {}, "urls": {}}),
    )
}

fn require_editable(t: &Doc, force: bool) -> Result<(), ApiError> {
    let s = status_of(t);
    if s == "created" || s == "in_progress" || force && s != "published" {
        Ok(())
    } else {
        Err(ApiError::task_status(format!(
            "only created or in_progress tasks can be changed: status={s}"
        )))
    }
}

fn add_or_update_artifacts(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let s = status_of(&t);
    if s != "created" && s != "in_progress" {
        return Err(ApiError::task_status(format!(
            "artifacts can only change on created or in_progress tasks: status={s}"
        )));
    }
    let new = req
        .array("artifacts")?
        .ok_or_else(|| ApiError::missing_field("artifacts"))?;
    if new.is_empty() {
        return Err(ApiError::validation("artifacts must not be empty"));
    }
    let key_of = |a: &Value| -> Result<(String, String), ApiError> {
        let key = a
            .get("key")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::validation("every artifact needs a string key"))?;
        let mode = a.get("mode").and_then(Value::as_str).unwrap_or("output");
        Ok((key.to_string(), mode.to_string()))
    };
    let mut current: Vec<Value> = get_path(&t, "execution.artifacts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for a in new {
        if !a.is_object() {
            return Err(ApiError::validation("every artifact must be an object"));
        }
        let k = key_of(a)?;
        let mut a = a.clone();
        if a.get("mode").is_none() {
            a["mode"] = json!("output");
        }
        match current
            .iter_mut()
            .find(|x| key_of(x).ok().as_ref() == Some(&k))
        {
            Some(slot) => *slot = a,
            None => current.push(a),
        }
    }
    current.sort_by(|a, b| {
        let ka = a.get("key").and_then(Value::as_str).unwrap_or_default();
        let kb = b.get("key").and_then(Value::as_str).unwrap_or_default();
        ka.cmp(kb)
    });
    set_path(&mut t, "execution.artifacts", Value::Array(current));
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1}))
}

fn delete_artifacts(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    require_editable(&t, req.bool_or("force", false)?)?;
    let gone: Vec<(String, String)> = req
        .array("artifacts")?
        .ok_or_else(|| ApiError::missing_field("artifacts"))?
        .iter()
        .filter_map(|a| {
            Some((
                a.get("key")?.as_str()?.to_string(),
                a.get("mode")
                    .and_then(Value::as_str)
                    .unwrap_or("output")
                    .to_string(),
            ))
        })
        .collect();
    let mut current: Vec<Value> = get_path(&t, "execution.artifacts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = current.len();
    current.retain(|a| {
        let key = a.get("key").and_then(Value::as_str).unwrap_or_default();
        let mode = a.get("mode").and_then(Value::as_str).unwrap_or("output");
        !gone.iter().any(|(k, m)| k == key && m == mode)
    });
    let deleted = before - current.len();
    set_path(&mut t, "execution.artifacts", Value::Array(current));
    save(tx, &t)?;
    Ok(json!({ "deleted": deleted }))
}

fn add_or_update_model(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    require_editable(&t, false)?;
    let name = req.str("name")?;
    let model = req.str("model")?;
    let kind = req.str("type")?;
    if kind != "input" && kind != "output" {
        return Err(ApiError::validation("type must be input or output"));
    }
    let mut entry = json!({"name": name, "model": model, "updated": now_iso()});
    if let Some(it) = req.i64_opt("iteration")? {
        entry["iteration"] = json!(it);
    }
    let path = format!("models.{kind}");
    let mut list: Vec<Value> = get_path(&t, &path)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    match list
        .iter_mut()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(name))
    {
        Some(slot) => *slot = entry,
        None => list.push(entry),
    }
    set_path(&mut t, &path, Value::Array(list));
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1}))
}

fn task_ids(req: &Req) -> Result<Vec<String>, ApiError> {
    req.str_list("tasks")?
        .ok_or_else(|| ApiError::missing_field("tasks"))
}

fn get_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut params = Vec::new();
    for id in task_ids(req)? {
        let t = load(tx, &id)?;
        let mut list: Vec<Value> = Vec::new();
        if let Some(Value::Object(sections)) = t.get("hyperparams") {
            for (section, items) in sections {
                if let Value::Object(items) = items {
                    for (name, p) in items {
                        let mut p = p.clone();
                        if p.is_object() {
                            p["section"] = json!(section);
                            p["name"] = json!(name);
                        }
                        list.push(p);
                    }
                }
            }
        }
        list.sort_by_key(|p| {
            (
                p.get("section")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            )
        });
        params.push(json!({"task": id, "hyperparams": list}));
    }
    Ok(json!({ "params": params }))
}

/// Hyperparameter and configuration edits: created tasks, or in_progress ones with force, or
/// any status when only the `properties` section changes (as the real server).
fn check_param_edit(t: &Doc, force: bool, only_properties: bool) -> Result<(), ApiError> {
    let s = status_of(t);
    if only_properties || s == "created" || (force && s == "in_progress") {
        Ok(())
    } else {
        Err(ApiError::task_status(format!(
            "parameters can only change on created tasks (or in_progress with force): status={s}"
        )))
    }
}

fn edit_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let items = req
        .array("hyperparams")?
        .ok_or_else(|| ApiError::missing_field("hyperparams"))?;
    let only_properties = items
        .iter()
        .all(|p| p.get("section").and_then(Value::as_str) == Some("properties"));
    check_param_edit(&t, req.bool_or("force", false)?, only_properties)?;
    let replace = req.opt_str("replace_hyperparams")?.unwrap_or("none");
    let mut sections = match (replace, t.get("hyperparams")) {
        ("all", _) => Map::new(),
        (_, Some(Value::Object(m))) => m.clone(),
        _ => Map::new(),
    };
    if replace == "section" {
        for p in items {
            if let Some(s) = p.get("section").and_then(Value::as_str) {
                sections.insert(s.to_string(), json!({}));
            }
        }
    }
    for p in items {
        let (Some(section), Some(name)) = (
            p.get("section").and_then(Value::as_str),
            p.get("name").and_then(Value::as_str),
        ) else {
            return Err(ApiError::validation(
                "every hyperparameter needs a section and a name",
            ));
        };
        let entry = sections
            .entry(section.to_string())
            .or_insert_with(|| json!({}));
        if let Value::Object(m) = entry {
            m.insert(name.to_string(), p.clone());
        }
    }
    t.insert("hyperparams".into(), Value::Object(sections));
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1}))
}

fn delete_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    let items = req
        .array("hyperparams")?
        .ok_or_else(|| ApiError::missing_field("hyperparams"))?;
    check_param_edit(&t, req.bool_or("force", false)?, false)?;
    let mut deleted = 0;
    if let Some(Value::Object(sections)) = t.get_mut("hyperparams") {
        for p in items {
            let Some(section) = p.get("section").and_then(Value::as_str) else {
                continue;
            };
            match p.get("name").and_then(Value::as_str) {
                Some(name) => {
                    if let Some(Value::Object(m)) = sections.get_mut(section) {
                        deleted += usize::from(m.remove(name).is_some());
                    }
                }
                None => deleted += usize::from(sections.remove(section).is_some()),
            }
        }
    }
    save(tx, &t)?;
    Ok(json!({ "deleted": deleted }))
}

fn get_configurations(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let names = req.str_list("names")?;
    let mut out = Vec::new();
    for id in task_ids(req)? {
        let t = load(tx, &id)?;
        let mut list: Vec<Value> = Vec::new();
        if let Some(Value::Object(items)) = t.get("configuration") {
            for (name, c) in items {
                if names.as_ref().is_some_and(|n| !n.contains(name)) {
                    continue;
                }
                let mut c = c.clone();
                if c.is_object() {
                    c["name"] = json!(name);
                }
                list.push(c);
            }
        }
        list.sort_by_key(|c| {
            c.get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        });
        out.push(json!({"task": id, "configuration": list}));
    }
    Ok(json!({ "configurations": out }))
}

fn get_configuration_names(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let skip_empty = req.bool_or("skip_empty", true)?;
    let mut out = Vec::new();
    for id in task_ids(req)? {
        let t = load(tx, &id)?;
        let mut names: Vec<String> = t
            .get("configuration")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter(|(_, c)| {
                        !skip_empty
                            || c.get("value")
                                .and_then(Value::as_str)
                                .is_some_and(|v| !v.is_empty())
                    })
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        out.push(json!({"task": id, "names": names}));
    }
    Ok(json!({ "configurations": out }))
}

fn edit_configuration(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut t = load(tx, req.str("task")?)?;
    check_param_edit(&t, req.bool_or("force", false)?, false)?;
    let items = req
        .array("configuration")?
        .ok_or_else(|| ApiError::missing_field("configuration"))?;
    let mut conf = if req.bool_or("replace_configuration", false)? {
        Map::new()
    } else {
        t.get("configuration")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    for c in items {
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::validation("every configuration item needs a name"))?;
        conf.insert(name.to_string(), c.clone());
    }
    t.insert("configuration".into(), Value::Object(conf));
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1}))
}

fn get_all(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req.str_list("id")?;
    let search_hidden = req.bool_or("search_hidden", false)? || ids.is_some();
    let name = req.opt_str("name")?;
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
        if let Some(pattern) = name {
            let n = t.get("name").and_then(Value::as_str).unwrap_or_default();
            if !regex_search(pattern, n) {
                return false;
            }
        }
        list_filters
            .iter()
            .all(|(f, wanted)| crate::query::matches_list(get_path(t, f), wanted))
    });
    Ok(json!({ "tasks": crate::query::order_page_project(docs, req)? }))
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
