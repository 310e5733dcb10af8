//! `models.*`: model documents (weights registered by tasks: `OutputModel.update_weights`,
//! framework auto-logging, `InputModel`), stored as JSON documents of kind `models`.
//!
//! A model is `{id, name, uri, framework, design, labels, ready, task, project, parent, comment,
//! tags, system_tags, created, last_update, user, company, metadata}` with the types the SDK's
//! typed parser insists on (server-api.md §1.8): ids and dates are strings, `design` an object,
//! `labels` an object of integers and `metadata` `{key: {key, type, value}}`. Optional fields
//! that were never set are absent, as in the real server's Mongo documents.
//!
//! Field parsing lives in `fields`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{NameFilter, Req, get_path, new_id, now_iso, project};
use crate::store::{Doc, Tx};

mod fields;

use fields::*;

const KIND: &str = "models";
/// What references to a deleted model become in tasks, as in the real server.
const DELETED_PREFIX: &str = "__DELETED__";
/// Changing any of these moves `last_update` (the real server's `last_update_fields`).
const LAST_UPDATE_FIELDS: &[&str] = &[
    "uri",
    "framework",
    "design",
    "labels",
    "ready",
    "metadata",
    "system_tags",
    "tags",
];

/// How a settable field is checked and stored.
#[derive(Clone, Copy, PartialEq)]
enum FieldKind {
    /// A string, kept as sent.
    Text,
    /// A string stripped of surrounding blanks.
    Stripped,
    /// A task id that must exist.
    TaskRef,
    /// A project id that must exist (an empty string clears it).
    ProjectRef,
    /// A list of strings, kept sorted.
    Tags,
    /// Any object.
    Object,
    /// `{label: int}`.
    Labels,
    Bool,
    /// A list of `{key, type, value}` (or a map of them), stored as a map by key.
    Metadata,
}

use FieldKind::*;

/// Fields `create` and `edit` take (the real `create_fields`).
const EDIT_FIELDS: &[(&str, FieldKind)] = &[
    ("name", Stripped),
    ("uri", Stripped),
    ("comment", Text),
    ("framework", Text),
    ("parent", Text),
    ("task", TaskRef),
    ("project", ProjectRef),
    ("tags", Tags),
    ("system_tags", Tags),
    ("design", Object),
    ("labels", Labels),
    ("ready", Bool),
    ("metadata", Metadata),
];

/// Fields `update` takes (the real request schema plus the user-settable ones).
const UPDATE_FIELDS: &[(&str, FieldKind)] = &[
    ("name", Stripped),
    ("uri", Stripped),
    ("comment", Text),
    ("created", Text),
    ("task", TaskRef),
    ("project", ProjectRef),
    ("tags", Tags),
    ("system_tags", Tags),
    ("ready", Bool),
    ("ui_cache", Object),
    ("metadata", Metadata),
];

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "create" => ctx.store.write(|tx| create(ctx, tx, req)),
        "get_by_id" => ctx.store.write(|tx| {
            let id = req.str("model")?;
            let model = load(tx, id)?;
            let only = req.str_list("only_fields")?;
            Ok(json!({ "model": project(&model, only.as_deref()) }))
        }),
        "get_all" | "get_all_ex" => ctx.store.write(|tx| get_all(tx, req)),
        "get_frameworks" => ctx.store.write(|tx| get_frameworks(tx, req)),
        "edit" => ctx.store.write(|tx| edit(ctx, tx, req, EDIT_FIELDS)),
        "update" => ctx.store.write(|tx| edit(ctx, tx, req, UPDATE_FIELDS)),
        "update_for_task" => ctx.store.write(|tx| update_for_task(ctx, tx, req)),
        "set_ready" => ctx.store.write(|tx| {
            let id = req.str("model")?;
            let force = req.bool_or("force_publish_task", false)?;
            let publish_task = req.bool_or("publish_task", true)?;
            set_ready(ctx, tx, id, force, publish_task)
        }),
        "publish_many" => ctx.store.write(|tx| {
            let force = req.bool_or("force_publish_task", false)?;
            let publish_task = req.bool_or("publish_task", true)?;
            batch(tx, req, |tx, id| {
                let mut r = set_ready(ctx, tx, id, force, publish_task)?;
                r["updated"] = json!(r["updated"] == json!(1));
                Ok(r)
            })
        }),
        "delete" => ctx.store.write(|tx| {
            let id = req.str("model")?;
            delete(ctx, tx, id, req.bool_or("force", false)?)
        }),
        "delete_many" => ctx.store.write(|tx| {
            let force = req.bool_or("force", false)?;
            batch(tx, req, |tx, id| delete(ctx, tx, id, force))
        }),
        "archive_many" => ctx.store.write(|tx| {
            batch(tx, req, |tx, id| {
                let changed = set_system_tag(ctx, tx, id, "archived", true)?;
                Ok(json!({ "archived": changed }))
            })
        }),
        "unarchive_many" => ctx.store.write(|tx| {
            batch(tx, req, |tx, id| {
                let changed = set_system_tag(ctx, tx, id, "archived", false)?;
                Ok(json!({ "unarchived": changed }))
            })
        }),
        "update_tags" => ctx.store.write(|tx| update_tags(ctx, tx, req)),
        "add_or_update_metadata" => ctx.store.write(|tx| add_or_update_metadata(ctx, tx, req)),
        "delete_metadata" => ctx.store.write(|tx| delete_metadata(ctx, tx, req)),
        _ => return None,
    };
    Some(r)
}

fn load(tx: &Tx<'_>, id: &str) -> Result<Doc, ApiError> {
    tx.get(KIND, id)?.ok_or_else(|| ApiError::invalid_model(id))
}

fn save(tx: &mut Tx<'_>, model: &Doc) -> Result<(), ApiError> {
    let id = model
        .get("id")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::internal("model without id"))?
        .to_string();
    tx.put(KIND, &id, model)
}

fn str_of<'a>(d: &'a Doc, key: &str) -> Option<&'a str> {
    d.get(key).and_then(Value::as_str).filter(|s| !s.is_empty())
}

/// `last_change` always, `last_update` too when a field that matters to readers changed.
fn stamp(ctx: &Ctx, model: &mut Doc, content_changed: bool) -> String {
    let now = now_iso();
    model.insert("last_change".into(), json!(now));
    model.insert("last_changed_by".into(), json!(ctx.user()));
    if content_changed {
        model.insert("last_update".into(), json!(now));
    }
    now
}

// ---------------------------------------------------------------------------------------------
// Create, read, change

fn create(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    // Both are required by the real schema; an empty `uri` is allowed (set after the upload).
    req.str("name")?;
    if !req.body.get("uri").is_some_and(Value::is_string) {
        return Err(match req.get("uri") {
            None => ApiError::missing_field("uri"),
            Some(_) => wrong("uri", "a string"),
        });
    }
    let fields = parse_fields(tx, &req.body, EDIT_FIELDS)?;
    // Only a new document is validated by the real server (edits are raw updates), so only
    // `create` enforces the name's minimum length.
    if fields
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| n.chars().count() < 3)
    {
        return Err(ApiError::validation(
            "field name must be at least 3 characters long",
        ));
    }
    let id = new_id();
    let mut model = base_model(ctx, &id);
    model.insert("design".into(), json!({}));
    model.insert("labels".into(), json!({}));
    model.insert("metadata".into(), json!({}));
    // The real request model defaults `ready` to true; the SDK always sends it.
    model.insert("ready".into(), json!(true));
    for (k, v) in fields {
        model.insert(k, v);
    }
    save(tx, &model)?;
    Ok(json!({"id": id, "created": true}))
}

/// The fields every new model starts with: identity, owner, times, empty tags.
fn base_model(ctx: &Ctx, id: &str) -> Doc {
    let now = now_iso();
    let mut model = Map::new();
    model.insert("id".into(), json!(id));
    model.insert("user".into(), json!(ctx.user()));
    model.insert("company".into(), json!(ctx.company()));
    model.insert("created".into(), json!(now));
    model.insert("last_update".into(), json!(now));
    model.insert("last_change".into(), json!(now));
    model.insert("last_changed_by".into(), json!(ctx.user()));
    model.insert("tags".into(), json!([]));
    model.insert("system_tags".into(), json!([]));
    model
}

/// `get_all`: filters (`id`, `name`/`comment` regex, list fields, `ready`, `metadata.*`),
/// `order_by`, `page`/`page_size` (500 when absent, like the real server's cap) and
/// `only_fields`. Returns `{models: [...]}`.
fn get_all(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let mut models = tx.all(KIND)?;
    if let Some(ids) = req.str_list("id")? {
        models.retain(|m| ids.iter().any(|id| Some(id.as_str()) == str_of(m, "id")));
    }
    for field in ["name", "comment"] {
        if let Some(pattern) = req.opt_str(field)?.filter(|p| !p.is_empty()) {
            let pattern = NameFilter::new(pattern);
            models.retain(|m| pattern.is_match(m.get(field).and_then(Value::as_str).unwrap_or("")));
        }
    }
    for field in [
        "tags",
        "system_tags",
        "framework",
        "uri",
        "user",
        "project",
        "task",
        "parent",
    ] {
        if let Some(wanted) = req.str_list(field)?.filter(|w| !w.is_empty()) {
            models.retain(|m| crate::query::matches_list(m.get(field), &wanted));
        }
    }
    if let Some(ready) = req.get("ready") {
        let ready = ready.as_bool().ok_or_else(|| wrong("ready", "a boolean"))?;
        models.retain(|m| m.get("ready").and_then(Value::as_bool).unwrap_or(false) == ready);
    }
    for (key, _) in req.body.iter().filter(|(k, _)| k.starts_with("metadata.")) {
        if let Some(wanted) = req.str_list(key)?.filter(|w| !w.is_empty()) {
            models.retain(|m| crate::query::matches_list(get_path(m, key), &wanted));
        }
    }

    let out = crate::query::order_page_project(models, req)?;
    Ok(json!({ "models": out }))
}

fn get_frameworks(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let projects = req.str_list("projects")?.filter(|p| !p.is_empty());
    let frameworks: BTreeSet<String> = tx
        .all(KIND)?
        .iter()
        .filter(|m| {
            projects
                .as_ref()
                .is_none_or(|p| str_of(m, "project").is_some_and(|id| p.iter().any(|x| x == id)))
        })
        .filter_map(|m| str_of(m, "framework").map(str::to_string))
        .collect();
    Ok(json!({ "frameworks": frameworks.into_iter().collect::<Vec<_>>() }))
}

/// Raises a task's `last_iteration` to `iteration` (`TaskBLL.update_statistics`).
fn bump_task_iteration(tx: &mut Tx<'_>, task_id: &str, iteration: i64) -> Result<(), ApiError> {
    let Some(mut task) = tx.get("tasks", task_id)? else {
        return Ok(());
    };
    let current = task.get("last_iteration").and_then(Value::as_i64);
    task.insert(
        "last_iteration".into(),
        json!(current.map_or(iteration, |c| c.max(iteration))),
    );
    task.insert("last_update".into(), json!(now_iso()));
    tx.put("tasks", task_id, &task)
}

/// `edit` and `update`: `{updated: 0|1, fields}`. Object fields (`design`, `labels`,
/// `metadata`) are replaced, not merged, as in the real server.
fn edit(
    ctx: &Ctx,
    tx: &mut Tx<'_>,
    req: &Req,
    allowed: &[(&str, FieldKind)],
) -> Result<Value, ApiError> {
    let id = req.str("model")?;
    let mut model = load(tx, id)?;
    let mut fields = parse_fields(tx, &req.body, allowed)?;
    if let Some(iteration) = req.i64_opt("iteration")? {
        let task = fields
            .get("task")
            .and_then(Value::as_str)
            .or_else(|| str_of(&model, "task"))
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        if let Some(task) = task {
            bump_task_iteration(tx, &task, iteration)?;
        }
    }
    if fields.is_empty() {
        return Ok(json!({ "updated": 0 }));
    }
    for (k, v) in &fields {
        model.insert(k.clone(), v.clone());
    }
    let content_changed = fields
        .keys()
        .any(|k| LAST_UPDATE_FIELDS.contains(&k.as_str()));
    let now = stamp(ctx, &mut model, content_changed);
    save(tx, &model)?;
    fields.insert("last_change".into(), json!(now));
    if content_changed {
        fields.insert("last_update".into(), json!(now));
    }
    Ok(json!({"updated": 1, "fields": fields}))
}

/// `update_for_task` (API < 2.13 clients): register `uri` as the task's output model (updating
/// the one it already has), or link an existing model with `override_model_id`.
/// Returns `{id, created}` (plus `updated`, `fields` when an existing model was updated).
fn update_for_task(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task_id = req.str("task")?;
    let uri = req.opt_str("uri")?.filter(|u| !u.is_empty());
    let override_id = req.opt_str("override_model_id")?.filter(|u| !u.is_empty());
    if uri.is_some() == override_id.is_some() {
        return Err(ApiError::new(
            400,
            11,
            "Missing required fields (exactly one field is required): fields=(uri, override_model_id)",
        ));
    }
    let mut task = tx
        .get("tasks", task_id)?
        .ok_or_else(|| ApiError::invalid_task(task_id))?;
    let status = task
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("created")
        .to_string();
    if status != "created" && status != "in_progress" {
        return Err(ApiError::task_status(format!(
            "model can only be updated for tasks in the [created, in_progress] states: id={task_id}"
        )));
    }
    let task_name = task
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let iteration = req.i64_opt("iteration")?;

    let (model_id, result) = if let Some(id) = override_id {
        load(tx, id)?;
        (id.to_string(), json!({"id": id, "created": true}))
    } else {
        // Defaults the real server fills from the task.
        let mut body = req.body.clone();
        body.entry("name")
            .or_insert_with(|| json!(task_name.clone()));
        body.entry("comment")
            .or_insert_with(|| json!(format!("Created by task `{task_name}` ({task_id})")));
        let mut fields = parse_fields(tx, &body, EDIT_FIELDS)?;
        let last_output = get_path(&task, "models.output")
            .and_then(Value::as_array)
            .and_then(|outputs| outputs.last())
            .and_then(|m| m.get("model"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let existing = match last_output {
            Some(id) => tx.get(KIND, &id)?,
            None => None,
        };
        if let Some(mut model) = existing {
            // The task already has an output model: update it in place.
            let id = str_of(&model, "id").unwrap_or_default().to_string();
            for (k, v) in &fields {
                model.insert(k.clone(), v.clone());
            }
            let content_changed = fields
                .keys()
                .any(|k| LAST_UPDATE_FIELDS.contains(&k.as_str()));
            let now = stamp(ctx, &mut model, content_changed);
            save(tx, &model)?;
            if let Some(it) = iteration {
                bump_task_iteration(tx, task_id, it)?;
            }
            fields.insert("last_change".into(), json!(now));
            return Ok(json!({"id": id, "created": false, "updated": 1, "fields": fields}));
        }
        let id = new_id();
        let mut model = base_model(ctx, &id);
        model.insert("metadata".into(), json!({}));
        model.insert("task".into(), json!(task_id));
        if let Some(p) = str_of(&task, "project") {
            model.insert("project".into(), json!(p));
        }
        if let Some(f) = get_path(&task, "execution.framework").and_then(Value::as_str) {
            model.insert("framework".into(), json!(f));
        }
        let parent = get_path(&task, "models.input")
            .and_then(Value::as_array)
            .and_then(|inputs| inputs.first())
            .and_then(|m| m.get("model"))
            .and_then(Value::as_str);
        if let Some(p) = parent {
            model.insert("parent".into(), json!(p));
        }
        let design = get_path(&task, "execution.model_desc").filter(|d| d.is_object());
        model.insert(
            "design".into(),
            design.cloned().unwrap_or_else(|| json!({})),
        );
        let labels = get_path(&task, "execution.model_labels").filter(|l| l.is_object());
        model.insert(
            "labels".into(),
            labels.cloned().unwrap_or_else(|| json!({})),
        );
        model.insert("ready".into(), json!(status == "published"));
        for (k, v) in fields {
            model.insert(k, v);
        }
        save(tx, &model)?;
        (id.clone(), json!({"id": id, "created": true}))
    };

    if let Some(it) = iteration {
        let current = task.get("last_iteration").and_then(Value::as_i64);
        task.insert(
            "last_iteration".into(),
            json!(current.map_or(it, |c| c.max(it))),
        );
    }
    let now = now_iso();
    let entry = json!({"model": model_id, "name": "Output Model", "updated": now});
    match task.get_mut("models").and_then(Value::as_object_mut) {
        Some(models) => {
            models.insert("output".into(), json!([entry]));
        }
        None => {
            task.insert("models".into(), json!({"input": [], "output": [entry]}));
        }
    }
    task.insert("last_update".into(), json!(now));
    tx.put("tasks", task_id, &task)?;
    Ok(result)
}

/// `set_ready`: marks the model ready, first publishing its task when asked (through the task
/// status machine, so an unfinished task needs `force_publish_task`). 400/203 if already ready.
fn set_ready(
    ctx: &Ctx,
    tx: &mut Tx<'_>,
    id: &str,
    force: bool,
    publish_task: bool,
) -> Result<Value, ApiError> {
    let mut model = load(tx, id)?;
    if model.get("ready").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::new(
            400,
            203,
            format!("Model is ready: model={id}"),
        ));
    }
    let mut published_task = None;
    let creator = str_of(&model, "task").filter(|_| publish_task);
    if let Some(task_id) = creator.map(str::to_string)
        && let Some(mut task) = tx.get("tasks", &task_id)?
        && task.get("status").and_then(Value::as_str) != Some("published")
    {
        let fields = crate::tasks::change_status(&mut task, "published", force, "", "")?;
        tx.put("tasks", &task_id, &task)?;
        published_task = Some(json!({"id": task_id, "data": {"updated": 1, "fields": fields}}));
    }
    model.insert("ready".into(), json!(true));
    stamp(ctx, &mut model, true);
    save(tx, &model)?;
    let mut out = json!({ "updated": 1 });
    if let Some(p) = published_task {
        out["published_task"] = p;
    }
    Ok(out)
}

fn model_refs(task: &Doc, kind: &str, id: &str) -> bool {
    get_path(task, &format!("models.{kind}"))
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter()
                .any(|m| m.get("model").and_then(Value::as_str) == Some(id))
        })
}

/// Rewrites (`Some(new)`) or drops (`None`) a task's references to a model in `models.{kind}`.
fn rewrite_refs(task: &mut Doc, kind: &str, id: &str, new: Option<&str>) {
    let Some(list) = task
        .get_mut("models")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.get_mut(kind))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    match new {
        Some(new) => {
            for m in list.iter_mut() {
                if m.get("model").and_then(Value::as_str) == Some(id) {
                    m["model"] = json!(new);
                }
            }
        }
        None => list.retain(|m| m.get("model").and_then(Value::as_str) != Some(id)),
    }
}

/// `delete`: `{deleted, url}`. A model used as a task's input, or made by a published task,
/// needs `force`; references to it then become `__DELETED__<id>` (the creating task of an
/// unpublished model just drops it from its outputs). Its events go with it.
fn delete(ctx: &Ctx, tx: &mut Tx<'_>, id: &str, force: bool) -> Result<Value, ApiError> {
    let model = load(tx, id)?;
    let creator = str_of(&model, "task").map(str::to_string);
    let mut tasks = tx.all("tasks")?;
    let users = tasks.iter().filter(|t| model_refs(t, "input", id)).count();
    if users > 0 && !force {
        return Err(ApiError::new(
            400,
            205,
            format!(
                "Model is used by tasks (as execution model, use force=True to delete): num_tasks={users}"
            ),
        ));
    }
    let creator_published = creator.as_deref().is_some_and(|c| {
        tasks.iter().any(|t| {
            t.get("id").and_then(Value::as_str) == Some(c)
                && t.get("status").and_then(Value::as_str) == Some("published")
        })
    });
    if creator_published && !force {
        return Err(ApiError::new(
            400,
            206,
            format!(
                "Task that created this model exists (and published, use force=True to delete): task={}",
                creator.as_deref().unwrap_or_default()
            ),
        ));
    }
    let deleted_ref = format!("{DELETED_PREFIX}{id}");
    let now = now_iso();
    for task in tasks.iter_mut() {
        let task_id = task
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut changed = false;
        if model_refs(task, "input", id) {
            rewrite_refs(task, "input", id, Some(&deleted_ref));
            changed = true;
        }
        if creator.as_deref() == Some(task_id.as_str()) && model_refs(task, "output", id) {
            if creator_published {
                rewrite_refs(task, "output", id, Some(&deleted_ref));
                let output = task.entry("output").or_insert_with(|| json!({}));
                if let Value::Object(o) = output {
                    o.insert("error".into(), json!(format!("model deleted on {now}")));
                }
            } else {
                rewrite_refs(task, "output", id, None);
            }
            changed = true;
        }
        if changed {
            task.insert("last_change".into(), json!(now));
            task.insert("last_changed_by".into(), json!(ctx.user()));
            tx.put("tasks", &task_id, task)?;
        }
    }
    tx.delete(KIND, id)?;
    tx.delete_events(id)?;
    Ok(json!({"deleted": true, "url": model.get("uri").and_then(Value::as_str).unwrap_or("")}))
}

/// Runs `op` on each of `ids`, the real server's batch response: `{succeeded: [{id, ...}],
/// failed: [{id, error: {codes, msg, data}}]}`. Each failure is checked before anything is
/// written, so a failed id leaves no partial change behind.
fn batch(
    tx: &mut Tx<'_>,
    req: &Req,
    mut op: impl FnMut(&mut Tx<'_>, &str) -> Result<Value, ApiError>,
) -> Result<Value, ApiError> {
    let ids = req
        .str_list("ids")?
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| ApiError::missing_field("ids"))?;
    let (mut succeeded, mut failed) = (Vec::new(), Vec::new());
    for id in &ids {
        match op(tx, id) {
            Ok(mut r) => {
                r["id"] = json!(id);
                succeeded.push(r);
            }
            Err(e) => failed.push(json!({
                "id": id,
                "error": {"codes": [e.code, e.subcode], "msg": e.msg, "data": {}},
            })),
        }
    }
    Ok(json!({"succeeded": succeeded, "failed": failed}))
}

/// Adds or removes a system tag; true when the model changed.
fn set_system_tag(
    ctx: &Ctx,
    tx: &mut Tx<'_>,
    id: &str,
    tag: &str,
    on: bool,
) -> Result<bool, ApiError> {
    let mut model = load(tx, id)?;
    let mut tags: BTreeSet<String> = crate::req::doc_strings(&model, "system_tags")
        .into_iter()
        .collect();
    let changed = if on {
        tags.insert(tag.to_string())
    } else {
        tags.remove(tag)
    };
    if changed {
        model.insert(
            "system_tags".into(),
            json!(tags.into_iter().collect::<Vec<_>>()),
        );
        stamp(ctx, &mut model, false);
        save(tx, &model)?;
    }
    Ok(changed)
}

/// `update_tags {ids, add_tags?, remove_tags?}`: `{updated: n}`.
fn update_tags(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req
        .str_list("ids")?
        .ok_or_else(|| ApiError::missing_field("ids"))?;
    let add = req.str_list("add_tags")?.unwrap_or_default();
    let remove = req.str_list("remove_tags")?.unwrap_or_default();
    let mut updated = 0;
    for id in &ids {
        let mut model = load(tx, id)?;
        let mut tags: BTreeSet<String> = crate::req::doc_strings(&model, "tags")
            .into_iter()
            .collect();
        tags.extend(add.iter().cloned());
        tags.retain(|t| !remove.contains(t));
        model.insert("tags".into(), json!(tags.into_iter().collect::<Vec<_>>()));
        stamp(ctx, &mut model, true);
        save(tx, &model)?;
        updated += 1;
    }
    Ok(json!({ "updated": updated }))
}

/// `add_or_update_metadata {model, metadata: [{key, type, value}], replace_metadata}`.
fn add_or_update_metadata(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let id = req.str("model")?;
    let mut model = load(tx, id)?;
    let items = req
        .get("metadata")
        .ok_or_else(|| ApiError::missing_field("metadata"))?;
    let items = metadata_map(items)?;
    if items.is_empty() {
        return Err(ApiError::validation("metadata must hold at least one item"));
    }
    let mut metadata = if req.bool_or("replace_metadata", false)? {
        Map::new()
    } else {
        model
            .get("metadata")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    metadata.extend(items);
    model.insert("metadata".into(), Value::Object(metadata));
    stamp(ctx, &mut model, true);
    save(tx, &model)?;
    Ok(json!({ "updated": 1 }))
}

/// `delete_metadata {model, keys}`.
fn delete_metadata(ctx: &Ctx, tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let id = req.str("model")?;
    let mut model = load(tx, id)?;
    let keys = req
        .str_list("keys")?
        .filter(|k| !k.is_empty())
        .ok_or_else(|| ApiError::missing_field("keys"))?;
    if let Some(Value::Object(metadata)) = model.get_mut("metadata") {
        for k in &keys {
            metadata.shift_remove(k);
        }
    }
    stamp(ctx, &mut model, true);
    save(tx, &model)?;
    Ok(json!({ "updated": 1 }))
}

#[cfg(test)]
mod tests;
