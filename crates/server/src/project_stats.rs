//! Views over the tasks of a project (and its subprojects) that the SDK and the web UI ask
//! for: `projects.get_hyper_parameters`, `projects.get_unique_metric_variants`,
//! `projects.get_task_parents`, and the bulk `tasks.archive_many` / `tasks.unarchive_many`.
//!
//! The real server answers the first three from MongoDB aggregations over the task collection;
//! here they are computed from the stored task documents on each call, which is exact and fast
//! enough for the number of tasks one embedded server holds.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, doc_strings, get_path};
use crate::store::{Doc, Tx};

/// `projects.*` endpoints of this module; `None` for the others.
pub fn projects(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "get_hyper_parameters" => ctx.store.write(|tx| hyper_parameters(tx, req)),
        "get_unique_metric_variants" => ctx.store.write(|tx| metric_variants(tx, req)),
        "get_task_parents" => ctx.store.write(|tx| task_parents(tx, req)),
        _ => return None,
    };
    Some(r)
}

/// `tasks.*` endpoints of this module; `None` for the others.
pub fn tasks(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "archive_many" => ctx.store.write(|tx| set_archived(tx, req, true)),
        "unarchive_many" => ctx.store.write(|tx| set_archived(tx, req, false)),
        _ => return None,
    };
    Some(r)
}

/// The ids of the requested projects, and of their subprojects unless `include_subprojects`
/// is false. `None` means every project (no filter given).
pub(crate) fn project_scope(
    tx: &Tx<'_>,
    ids: Option<Vec<String>>,
    include_subprojects: bool,
) -> Result<Option<BTreeSet<String>>, ApiError> {
    let Some(ids) = ids.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let mut scope: BTreeSet<String> = ids.iter().cloned().collect();
    if include_subprojects {
        let all = tx.all("projects")?;
        let names: Vec<String> = all
            .iter()
            .filter(|p| {
                ids.iter()
                    .any(|i| p.get("id").and_then(Value::as_str) == Some(i))
            })
            .filter_map(|p| p.get("name").and_then(Value::as_str).map(str::to_string))
            .collect();
        for p in &all {
            let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
            let id = p.get("id").and_then(Value::as_str);
            if let Some(id) =
                id.filter(|_| names.iter().any(|n| name.starts_with(&format!("{n}/"))))
            {
                scope.insert(id.to_string());
            }
        }
    }
    Ok(Some(scope))
}

/// The project's tasks, archived ones included (the real server counts them too).
fn tasks_in(tx: &Tx<'_>, scope: &Option<BTreeSet<String>>) -> Result<Vec<Doc>, ApiError> {
    Ok(tx
        .all("tasks")?
        .into_iter()
        .filter(|t| match scope {
            None => true,
            Some(s) => t
                .get("project")
                .and_then(Value::as_str)
                .is_some_and(|p| s.contains(p)),
        })
        .collect())
}

fn hyper_parameters(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = match req.str_list("projects")? {
        Some(p) => Some(p),
        None => req.opt_str("project")?.map(|p| vec![p.to_string()]),
    };
    let scope = project_scope(tx, ids, req.bool_or("include_subprojects", true)?)?;
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    for t in tasks_in(tx, &scope)? {
        let Some(Value::Object(sections)) = t.get("hyperparams") else {
            continue;
        };
        for (section, params) in sections {
            if let Value::Object(params) = params {
                for name in params.keys() {
                    seen.insert((section.clone(), name.clone()));
                }
            }
        }
    }
    let total = seen.len();
    let page_size = req.i64_opt("page_size")?.unwrap_or(500).clamp(1, 10_000) as usize;
    let page = req.i64_opt("page")?.unwrap_or(0).max(0) as usize;
    let start = page.saturating_mul(page_size).min(total);
    let parameters: Vec<Value> = seen
        .into_iter()
        .skip(start)
        .take(page_size)
        .map(|(section, name)| json!({"section": section, "name": name}))
        .collect();
    let remaining = total - start - parameters.len();
    Ok(json!({"parameters": parameters, "remaining": remaining, "total": total}))
}

fn metric_variants(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let ids = req.opt_str("project")?.map(|p| vec![p.to_string()]);
    let scope = project_scope(tx, ids, req.bool_or("include_subprojects", true)?)?;
    // The SDK's and the UI's models carry `last_metrics` the same way tasks do.
    let kind = if req.bool_or("model_metrics", false)? {
        "models"
    } else {
        "tasks"
    };
    let docs: Vec<Doc> = if kind == "tasks" {
        tasks_in(tx, &scope)?
    } else {
        tx.all("models")?
            .into_iter()
            .filter(|m| match &scope {
                None => true,
                Some(s) => m
                    .get("project")
                    .and_then(Value::as_str)
                    .is_some_and(|p| s.contains(p)),
            })
            .collect()
    };
    let mut seen: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    for d in docs {
        let Some(Value::Object(metrics)) = d.get("last_metrics") else {
            continue;
        };
        for (metric_hash, variants) in metrics {
            let Value::Object(variants) = variants else {
                continue;
            };
            for (variant_hash, entry) in variants {
                let metric = entry.get("metric").and_then(Value::as_str);
                let variant = entry.get("variant").and_then(Value::as_str);
                if let (Some(m), Some(v)) = (metric, variant) {
                    seen.entry((m.to_string(), v.to_string()))
                        .or_insert_with(|| (metric_hash.clone(), variant_hash.clone()));
                }
            }
        }
    }
    let metrics: Vec<Value> = seen
        .into_iter()
        .map(|((metric, variant), (mh, vh))| {
            json!({"metric": metric, "metric_hash": mh, "variant": variant, "variant_hash": vh})
        })
        .collect();
    Ok(json!({ "metrics": metrics }))
}

fn task_parents(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let scope = project_scope(
        tx,
        req.str_list("projects")?,
        req.bool_or("include_subprojects", true)?,
    )?;
    let state = req.opt_str("tasks_state")?.unwrap_or("active");
    let mut parent_ids: BTreeSet<String> = BTreeSet::new();
    for t in tasks_in(tx, &scope)? {
        let archived = doc_strings(&t, "system_tags")
            .iter()
            .any(|s| s == "archived");
        let keep = match state {
            "archived" => archived,
            "all" => true,
            _ => !archived,
        };
        if let Some(p) = t
            .get("parent")
            .and_then(Value::as_str)
            .filter(|p| keep && !p.is_empty())
        {
            parent_ids.insert(p.to_string());
        }
    }
    let mut parents = Vec::new();
    for id in parent_ids {
        // A parent that was deleted since is left out, as the real server's lookup does.
        let Some(p) = tx.get("tasks", &id)? else {
            continue;
        };
        let project_id = p.get("project").and_then(Value::as_str).unwrap_or_default();
        let project_name = match tx.get("projects", project_id)? {
            Some(proj) => proj
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            None => String::new(),
        };
        parents.push(json!({
            "id": id,
            "name": p.get("name").cloned().unwrap_or(json!("")),
            "project": {"id": project_id, "name": project_name},
        }));
    }
    parents.sort_by(|a, b| {
        a["name"]
            .as_str()
            .unwrap_or_default()
            .cmp(b["name"].as_str().unwrap_or_default())
    });
    Ok(json!({ "parents": parents }))
}

/// `tasks.archive_many` / `unarchive_many`: adds (removes) the `archived` system tag; archiving
/// a queued task first takes it out of its queue (the real server does the same). Unknown ids
/// go to `failed` with the error the single call would give.
fn set_archived(tx: &mut Tx<'_>, req: &Req, archive: bool) -> Result<Value, ApiError> {
    let ids = req
        .str_list("ids")?
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::missing_field("ids"))?;
    let reason = req
        .opt_str("status_reason")?
        .unwrap_or_default()
        .to_string();
    let message = req
        .opt_str("status_message")?
        .unwrap_or_default()
        .to_string();
    let key = if archive { "archived" } else { "unarchived" };
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for id in ids {
        let mut t = match crate::tasks::load(tx, &id) {
            Ok(t) => t,
            Err(e) => {
                failed.push(failure(&id, &e));
                continue;
            }
        };
        let mut tags = doc_strings(&t, "system_tags");
        let had = tags.iter().any(|s| s == "archived");
        if archive && !had {
            let queued = get_path(&t, "status").and_then(Value::as_str) == Some("queued");
            let dequeued = match queued {
                true => crate::tasks::dequeue_task(tx, &mut t, None, false, &reason, &message)
                    .map(|_| ()),
                false => Ok(()),
            };
            if let Err(e) = dequeued {
                failed.push(failure(&id, &e));
                continue;
            }
            tags.push("archived".into());
        } else if !archive {
            tags.retain(|s| s != "archived");
        }
        let changed = archive != had;
        t.insert("system_tags".into(), json!(tags));
        if changed {
            t.insert("last_change".into(), json!(crate::req::now_iso()));
        }
        crate::tasks::save(tx, &t)?;
        let mut entry = Map::new();
        entry.insert("id".into(), json!(id));
        entry.insert(key.into(), json!(changed));
        ok.push(Value::Object(entry));
    }
    Ok(json!({"succeeded": ok, "failed": failed}))
}

fn failure(id: &str, e: &ApiError) -> Value {
    json!({"id": id, "error": {"codes": [e.code, e.subcode], "msg": e.msg, "data": {}}})
}
