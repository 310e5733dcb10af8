//! Artifacts and the models a task uses or produces.

use super::*;

pub(super) fn add_or_update_artifacts(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn delete_artifacts(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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

pub(super) fn add_or_update_model(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
