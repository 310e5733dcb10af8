//! `projects.*`. Names are unique; `a/b/c` creates its parents, as the real server does.

use serde_json::{Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{NameFilter, Req, new_id, now_iso};
use crate::store::{Doc, Tx};

const KIND: &str = "projects";

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "create" => ctx.store.write(|tx| {
            let name = req.str("name")?;
            if find(tx, name)?.is_some() {
                return Err(ApiError::not_unique(&format!("name={name}")));
            }
            let id = ensure(ctx, tx, name)?;
            let mut p = load(tx, &id)?;
            for key in ["description", "default_output_destination"] {
                if let Some(v) = req.opt_str(key)? {
                    p.insert(key.into(), json!(v));
                }
            }
            for key in ["tags", "system_tags"] {
                if let Some(v) = req.str_list(key)? {
                    p.insert(key.into(), json!(v));
                }
            }
            tx.put(KIND, &id, &p)?;
            Ok(json!({ "id": id }))
        }),
        "get_by_id" => ctx
            .store
            .write(|tx| Ok(json!({ "project": load(tx, req.str("project")?)? }))),
        "get_all" | "get_all_ex" => ctx.store.write(|tx| get_all(tx, req)),
        "update" => ctx.store.write(|tx| {
            let id = req.str("project")?;
            let mut p = load(tx, id)?;
            let mut fields = serde_json::Map::new();
            for key in ["name", "description", "default_output_destination"] {
                if let Some(v) = req.opt_str(key)? {
                    p.insert(key.into(), json!(v));
                    fields.insert(key.into(), json!(v));
                }
            }
            if let Some(name) = req.opt_str("name")? {
                p.insert("basename".into(), json!(basename(name)));
            }
            for key in ["tags", "system_tags"] {
                if let Some(v) = req.str_list(key)? {
                    p.insert(key.into(), json!(v));
                    fields.insert(key.into(), json!(v));
                }
            }
            p.insert("last_update".into(), json!(now_iso()));
            tx.put(KIND, id, &p)?;
            Ok(json!({"updated": 1, "fields": fields}))
        }),
        "delete" => ctx.store.write(|tx| {
            let id = req.str("project")?;
            load(tx, id)?;
            let has_tasks = tx
                .all("tasks")?
                .iter()
                .any(|t| t.get("project").and_then(Value::as_str) == Some(id));
            if has_tasks && !req.bool_or("force", false)? {
                return Err(ApiError::new(
                    400,
                    402,
                    "Project has associated tasks (use force to delete it)",
                ));
            }
            tx.delete(KIND, id)?;
            Ok(json!({"deleted": 1, "disassociated_tasks": 0}))
        }),
        _ => return None,
    };
    Some(r)
}

pub fn load(tx: &Tx<'_>, id: &str) -> Result<Doc, ApiError> {
    tx.get(KIND, id)?
        .ok_or_else(|| ApiError::invalid_project(id))
}

fn basename(name: &str) -> &str {
    name.rsplit('/').next().unwrap_or(name)
}

fn find(tx: &Tx<'_>, name: &str) -> Result<Option<String>, ApiError> {
    Ok(tx
        .all(KIND)?
        .into_iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("id").and_then(Value::as_str).map(str::to_string)))
}

/// The id of the project `name`, creating it (and its parents) when missing.
pub fn ensure(ctx: &Ctx, tx: &mut Tx<'_>, name: &str) -> Result<String, ApiError> {
    let name = name.trim_matches('/');
    if name.is_empty() {
        return Err(ApiError::validation("project name must not be empty"));
    }
    if let Some(id) = find(tx, name)? {
        return Ok(id);
    }
    let parent = match name.rsplit_once('/') {
        Some((parent, _)) => Some(ensure(ctx, tx, parent)?),
        None => None,
    };
    let id = new_id();
    let now = now_iso();
    let p = json!({
        "id": id,
        "name": name,
        "basename": basename(name),
        "description": "",
        "user": ctx.user(),
        "company": ctx.company(),
        "created": now,
        "last_update": now,
        "tags": [],
        "system_tags": [],
        "default_output_destination": null,
        "parent": parent,
    });
    if let Value::Object(p) = p {
        tx.put(KIND, &id, &p)?;
    }
    Ok(id)
}

fn get_all(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req.str_list("id")?;
    let name = req.opt_str("name")?.map(NameFilter::new);
    let search_hidden = req.bool_or("search_hidden", false)? || ids.is_some();
    let mut docs = tx.all(KIND)?;
    docs.retain(|p| {
        let id = p.get("id").and_then(Value::as_str).unwrap_or_default();
        if ids.as_ref().is_some_and(|ids| !ids.iter().any(|i| i == id)) {
            return false;
        }
        if let Some(pattern) = &name {
            let n = p.get("name").and_then(Value::as_str).unwrap_or_default();
            if !pattern.is_match(n) {
                return false;
            }
        }
        let hidden = p
            .get("system_tags")
            .and_then(Value::as_array)
            .is_some_and(|t| t.iter().any(|s| s == "hidden"));
        search_hidden || !hidden
    });
    Ok(json!({ "projects": crate::query::order_page_project(docs, req)? }))
}
