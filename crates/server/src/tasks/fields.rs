//! The task document and its editable fields: create, edit, update, clone, delete.

use super::*;

pub(super) fn new_task_doc(ctx: &Ctx, id: &str, name: &str, kind: &str) -> Doc {
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
pub(super) const EDITABLE: &[(&str, bool)] = &[
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

pub(super) fn check_field(name: &str, v: &Value) -> Result<(), ApiError> {
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
pub(super) fn apply_fields(
    t: &mut Doc,
    body: &Map<String, Value>,
) -> Result<Map<String, Value>, ApiError> {
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

pub(super) fn check_project(tx: &Tx<'_>, t: &Doc) -> Result<(), ApiError> {
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

pub(super) fn create(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn edit(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
        if !STATUSES.contains(&status) {
            return Err(ApiError::validation(format!(
                "invalid task status {status:?}: expected one of {}",
                STATUSES.join(", ")
            )));
        }
        t.insert("status".into(), json!(status));
        fields.insert("status".into(), json!(status));
    }
    touch(&mut t);
    save(tx, &t)?;
    Ok(json!({"updated": 1, "fields": fields}))
}

pub(super) fn update(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn clone(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn delete(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn require_editable(t: &Doc, force: bool) -> Result<(), ApiError> {
    let s = status_of(t);
    if s == "created" || s == "in_progress" || force && s != "published" {
        Ok(())
    } else {
        Err(ApiError::task_status(format!(
            "only created or in_progress tasks can be changed: status={s}"
        )))
    }
}
