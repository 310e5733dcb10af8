//! Parsing the fields `create`, `edit` and `update_for_task` may set, and model metadata.

use super::*;

pub(super) fn wrong(field: &str, what: &str) -> ApiError {
    ApiError::validation(format!("field {field} must be {what}"))
}

/// The settable fields present in `body`, checked and converted. Nulls are skipped: the SDK
/// leaves unset fields out, and a null would otherwise wipe a field by accident.
pub(super) fn parse_fields(
    tx: &Tx<'_>,
    body: &Map<String, Value>,
    allowed: &[(&str, FieldKind)],
) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    for (name, kind) in allowed {
        let Some(v) = body.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        let value = match kind {
            Text => Value::String(v.as_str().ok_or_else(|| wrong(name, "a string"))?.into()),
            Stripped => {
                let s = v.as_str().ok_or_else(|| wrong(name, "a string"))?.trim();
                Value::String(s.to_string())
            }
            TaskRef => {
                let id = v.as_str().ok_or_else(|| wrong(name, "a string"))?;
                // Clients echo back references to deleted tasks; the real server drops them.
                if id.starts_with(DELETED_PREFIX) {
                    continue;
                }
                if !id.is_empty() && tx.get("tasks", id)?.is_none() {
                    return Err(ApiError::invalid_task(id));
                }
                Value::String(id.to_string())
            }
            ProjectRef => {
                let id = v.as_str().ok_or_else(|| wrong(name, "a string"))?;
                if !id.is_empty() && tx.get("projects", id)?.is_none() {
                    return Err(ApiError::invalid_project(id));
                }
                Value::String(id.to_string())
            }
            Tags => {
                let mut tags = v
                    .as_array()
                    .ok_or_else(|| wrong(name, "a list of strings"))?
                    .iter()
                    .map(|t| t.as_str().map(str::to_string))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| wrong(name, "a list of strings"))?;
                tags.sort();
                json!(tags)
            }
            Object => Value::Object(
                v.as_object()
                    .ok_or_else(|| wrong(name, "an object"))?
                    .clone(),
            ),
            Labels => {
                let labels = v.as_object().ok_or_else(|| wrong(name, "an object"))?;
                if labels.values().any(|l| l.as_i64().is_none()) {
                    return Err(ApiError::validation("labels values must be integers"));
                }
                Value::Object(labels.clone())
            }
            Bool => Value::Bool(v.as_bool().ok_or_else(|| wrong(name, "a boolean"))?),
            Metadata => Value::Object(metadata_map(v)?),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// One `{key, type, value}` item; all three are required strings, as in the real server.
pub(super) fn metadata_item(
    item: &Value,
    key_hint: Option<&str>,
) -> Result<(String, Value), ApiError> {
    let Value::Object(m) = item else {
        return Err(wrong("metadata", "a list of {key, type, value} objects"));
    };
    let key = match (m.get("key"), key_hint) {
        (Some(Value::String(k)), _) => k.clone(),
        (None | Some(Value::Null), Some(k)) => k.to_string(),
        (None | Some(Value::Null), None) => return Err(ApiError::missing_field("metadata.key")),
        _ => return Err(wrong("metadata.key", "a string")),
    };
    let text = |field: &str| match m.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        None | Some(Value::Null) => Err(ApiError::missing_field(&format!("metadata.{field}"))),
        Some(_) => Err(wrong(&format!("metadata.{field}"), "a string")),
    };
    let kind = text("type")?;
    let value = text("value")?;
    Ok((
        key.clone(),
        json!({"key": key, "type": kind, "value": value}),
    ))
}

/// Metadata as the API sends it (a list of items, or a map of them) to the stored map.
pub(super) fn metadata_map(v: &Value) -> Result<Map<String, Value>, ApiError> {
    let mut out = Map::new();
    match v {
        Value::Array(items) => {
            for item in items {
                let (k, item) = metadata_item(item, None)?;
                out.insert(k, item);
            }
        }
        Value::Object(items) => {
            for (k, item) in items {
                let (k, item) = metadata_item(item, Some(k))?;
                out.insert(k, item);
            }
        }
        _ => return Err(wrong("metadata", "a list of {key, type, value} objects")),
    }
    Ok(out)
}
