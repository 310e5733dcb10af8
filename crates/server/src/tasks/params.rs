//! Hyperparameters and configuration items.

use super::*;

pub(super) fn get_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn check_param_edit(
    t: &Doc,
    force: bool,
    only_properties: bool,
) -> Result<(), ApiError> {
    let s = status_of(t);
    if only_properties || s == "created" || (force && s == "in_progress") {
        Ok(())
    } else {
        Err(ApiError::task_status(format!(
            "parameters can only change on created tasks (or in_progress with force): status={s}"
        )))
    }
}

pub(super) fn edit_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn delete_hyper_params(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn get_configurations(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn get_configuration_names(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn edit_configuration(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
