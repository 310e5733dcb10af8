//! `add` and `add_batch`: validating events, storing them and folding scalars into the
//! owner's `last_metrics`.

use super::*;

/// The events of an `add_batch` call. Clients send json-lines (the HTTP layer splits them into
/// `req.lines`); a JSON body with a `requests` or `events` list is accepted too, and so is a
/// single event sent as a plain object (a one-line batch without the json-lines content type).
pub(super) fn batch_items(req: &Req) -> Result<Vec<Doc>, ApiError> {
    if let Some(lines) = &req.lines {
        return Ok(lines.clone());
    }
    for key in ["requests", "events"] {
        if let Some(list) = req.array(key)? {
            return list
                .iter()
                .enumerate()
                .map(|(i, v)| match v {
                    Value::Object(m) => Ok(m.clone()),
                    _ => Err(ApiError::validation(format!(
                        "batch item #{i} is not a JSON object"
                    ))),
                })
                .collect();
        }
    }
    if req.body.contains_key("type") || req.body.contains_key("task") {
        return Ok(vec![req.body.clone()]);
    }
    Ok(Vec::new())
}

/// Who an event belongs to: `(is a model, id)`.
pub(super) type Owner = (bool, String);

/// One validated event, ready to be stored.
pub(super) struct Prepared {
    owner: Owner,
    kind: String,
    ts: i64,
    iter: Option<i64>,
    x_axis_label: Option<String>,
    doc: Doc,
}

/// The per-batch summary of one scalar series, merged into `last_metrics` afterwards (the real
/// server's `_update_last_scalar_events_for_task`).
pub(super) struct ScalarAgg {
    metric: String,
    variant: String,
    count: i64,
    total: f64,
    value: f64,
    iter: i64,
    timestamp: i64,
    x_axis_label: Option<String>,
    first_value: f64,
    first_iter: i64,
    min: f64,
    min_iter: i64,
    max: f64,
    max_iter: i64,
}

impl ScalarAgg {
    fn new(
        metric: &str,
        variant: &str,
        value: f64,
        iter: i64,
        ts: i64,
        label: Option<String>,
    ) -> Self {
        ScalarAgg {
            metric: metric.to_string(),
            variant: variant.to_string(),
            count: 1,
            total: value,
            value,
            iter,
            timestamp: ts,
            x_axis_label: label,
            first_value: value,
            first_iter: iter,
            min: value,
            min_iter: iter,
            max: value,
            max_iter: iter,
        }
    }

    fn add(&mut self, value: f64, iter: i64, ts: i64, label: Option<String>) {
        self.count += 1;
        self.total += value;
        // The reported "last" value is the one with the highest (iteration, timestamp), not the
        // last one in the batch: batches from several reporter threads may interleave.
        if (iter, ts) >= (self.iter, self.timestamp) {
            self.value = value;
            self.iter = iter;
            self.timestamp = ts;
            if label.is_some() {
                self.x_axis_label = label;
            }
        }
        if iter < self.first_iter {
            self.first_value = value;
            self.first_iter = iter;
        }
        if value < self.min {
            self.min = value;
            self.min_iter = iter;
        }
        if value > self.max {
            self.max = value;
            self.max_iter = iter;
        }
    }
}

pub(super) fn add_events(
    ctx: &Ctx,
    mut events: Vec<Doc>,
    unreadable: Vec<String>,
    worker: Option<&str>,
) -> Result<Value, ApiError> {
    ctx.store.write(|tx| {
        // Pass 1: the entities written to, and whether each may be locked. One batch must not
        // say both for the same entity (the real server refuses the whole batch).
        let mut wanted: HashMap<Owner, bool> = HashMap::new();
        for ev in events.iter_mut() {
            let model_event = ev.get("model_event").and_then(Value::as_bool) == Some(true);
            if model_event && let Some(model) = ev.remove("model").filter(|m| !m.is_null()) {
                ev.insert("task".into(), model);
            }
            ev.insert("model_event".into(), Value::Bool(model_event));
            let allow_locked = ev.remove("allow_locked").is_some_and(|v| truthy(&v));
            let Some(id) = ev
                .get("task")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            else {
                continue;
            };
            let key = (model_event, id.to_string());
            match wanted.get(&key) {
                None => {
                    wanted.insert(key, allow_locked);
                }
                Some(&prev) if prev != allow_locked => {
                    return Err(ApiError::validation(format!(
                        "Inconsistent allow_locked setting in the passed events for {id}"
                    )));
                }
                Some(_) => {}
            }
        }
        if let Some((_, id)) = wanted
            .keys()
            .find(|(model, id)| !model && wanted.contains_key(&(true, id.clone())))
        {
            return Err(ApiError::validation(format!(
                "Inconsistent model_event setting in the passed events: tasks={id}"
            )));
        }
        let mut owners: HashMap<Owner, Doc> = HashMap::new();
        for ((model, id), allow_locked) in &wanted {
            let doc = tx.get(if *model { "models" } else { "tasks" }, id)?;
            let Some(doc) = doc else { continue };
            let locked = if *model {
                doc.get("ready").and_then(Value::as_bool) == Some(true)
            } else {
                let status = doc.get("status").and_then(Value::as_str).unwrap_or("");
                LOCKED_STATUSES.contains(&status)
            };
            if *allow_locked || !locked {
                owners.insert((*model, id.clone()), doc);
            }
        }

        // Pass 2: validate and normalise each event on its own.
        let now = now_ms();
        let now_text = now_iso();
        let mut errors: Vec<(String, i64)> = unreadable.into_iter().map(|m| (m, 1)).collect();
        let mut prepared = Vec::new();
        for ev in events {
            match prepare_event(ev, &owners, worker, now, &now_text) {
                Ok(p) => prepared.push(p),
                Err(msg) => match errors.iter_mut().find(|(m, _)| *m == msg) {
                    Some((_, n)) => *n += 1,
                    None => errors.push((msg, 1)),
                },
            }
        }

        let mut iter_max: HashMap<&Owner, i64> = HashMap::new();
        let mut scalars: HashMap<&Owner, BTreeMap<(String, String), ScalarAgg>> = HashMap::new();
        let mut used: Vec<&Owner> = Vec::new();
        let mut this_request: std::collections::HashSet<(String, i64, Option<String>)> =
            std::collections::HashSet::new();
        for p in &prepared {
            if !used.contains(&&p.owner) {
                used.push(&p.owner);
            }
            if let Some(i) = p.iter {
                // Starts from 0 as the real server's does, so single values (iteration -2^31)
                // never pull `last_iteration` below zero.
                let m = iter_max.entry(&p.owner).or_insert(0);
                *m = (*m).max(i);
            }
            if p.kind == SCALAR
                && let Some(value) = p.doc.get("value").and_then(Value::as_f64)
            {
                let metric = str_field(&p.doc, "metric");
                let variant = str_field(&p.doc, "variant");
                let iter = p.iter.unwrap_or(0);
                let label = p.x_axis_label.clone();
                scalars
                    .entry(&p.owner)
                    .or_default()
                    .entry((metric.to_string(), variant.to_string()))
                    .and_modify(|a| a.add(value, iter, p.ts, label.clone()))
                    .or_insert_with(|| ScalarAgg::new(metric, variant, value, iter, p.ts, label));
            }
            // Log lines carry the sender's timestamps; an identical line at the same instant
            // is a retransmission (the agent resends a batch whose reply it never got).
            // Identical lines within one request are the sender's own repeats and all kept.
            let line_key = (
                p.owner.1.clone(),
                p.ts,
                p.doc.get("msg").and_then(Value::as_str).map(str::to_string),
            );
            if p.kind == LOG
                && !this_request.contains(&line_key)
                && !tx.claim_log_line(
                    &p.owner.1,
                    p.ts,
                    &p.doc,
                    &["msg", "worker", "level", "metric", "variant"],
                )?
            {
                continue;
            }
            if p.kind == LOG {
                this_request.insert(line_key);
            }
            tx.add_event(&p.owner.1, &p.kind, p.ts, &p.doc)?;
        }

        for owner in used {
            let Some(mut doc) = owners.get(owner).cloned() else {
                continue;
            };
            if let Some(&m) = iter_max.get(owner) {
                let current = doc.get("last_iteration").and_then(Value::as_i64);
                doc.insert(
                    "last_iteration".into(),
                    json!(current.map_or(m, |c| c.max(m))),
                );
            }
            if let Some(aggs) = scalars.get(owner) {
                merge_last_metrics(&mut doc, aggs);
            }
            touch_owner(&mut doc, &ctx.user(), !owner.0);
            tx.put(if owner.0 { "models" } else { "tasks" }, &owner.1, &doc)?;
        }

        let added = prepared.len();
        if added == 0 {
            let details: Vec<String> = errors.iter().map(|(m, n)| format!("{m}={n}")).collect();
            let mut msg = "Events not added".to_string();
            if !details.is_empty() {
                msg.push_str(": ");
                msg.push_str(&details.join(", "));
            }
            return Err(ApiError::new(400, 131, msg));
        }
        let error_count: i64 = errors.iter().map(|(_, n)| n).sum();
        let info: Map<String, Value> = errors.into_iter().map(|(m, n)| (m, json!(n))).collect();
        Ok(json!({"added": added, "errors": error_count, "errors_info": info}))
    })
}

/// Validates and normalises one event the way the real `add_events` does; `Err` is the message
/// it is counted under in `errors_info`.
pub(super) fn prepare_event(
    mut ev: Doc,
    owners: &HashMap<Owner, Doc>,
    worker: Option<&str>,
    now: i64,
    now_text: &str,
) -> Result<Prepared, String> {
    let x_axis_label = ev
        .remove("x_axis_label")
        .and_then(|v| v.as_str().map(str::to_string));
    // The SDK's request serialisation adds its HTTP method to every event; it is not event data.
    ev.remove("method");
    let kind = match ev.get("type") {
        None | Some(Value::Null) => return Err("Event must have a 'type' field".into()),
        Some(Value::String(s)) => s.replace(' ', "_"),
        Some(other) => return Err(format!("Invalid event type {other}")),
    };
    if !EVENT_TYPES.contains(&kind.as_str()) {
        return Err(format!("Invalid event type {kind}"));
    }
    let model_event = ev.get("model_event") == Some(&Value::Bool(true));
    if model_event && kind == LOG {
        return Err("Task log events are not supported for models".into());
    }
    let id = match ev.get("task") {
        None | Some(Value::Null) => return Err("Event must have a 'task' field".into()),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let owner = (model_event, id);
    if !owners.contains_key(&owner) {
        let what = if model_event { "model" } else { "task" };
        return Err(format!("Invalid {what} id {}", owner.1));
    }
    ev.insert("type".into(), json!(kind));
    // When the event was stored; `timestamp` is when it happened.
    ev.insert("@timestamp".into(), json!(now_text));
    if let Some(ts) = ev.remove("ts") {
        ev.insert("timestamp".into(), ts);
    }
    let ts = match ev.get("timestamp") {
        None | Some(Value::Null) => now,
        Some(v) => parse_timestamp(v).ok_or_else(|| format!("Invalid timestamp {v}"))?,
    };
    ev.insert("timestamp".into(), json!(ts));
    if !ev.contains_key("worker")
        && let Some(w) = worker
    {
        ev.insert("worker".into(), json!(w));
    }
    let iter = match ev.get("iter") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_iter(v).ok_or_else(|| format!("Invalid iteration {v}"))?),
    };
    if let Some(i) = iter {
        ev.insert("iter".into(), json!(i));
    }
    // Vectors used to be sent as `values`.
    if let Some(values) = ev.remove("values") {
        ev.insert("value".into(), values);
    }
    for key in ["metric", "variant"] {
        let text = match ev.get(key) {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        ev.insert(key.into(), json!(text));
    }
    if kind == SCALAR {
        match ev.get("value") {
            None | Some(Value::Null) | Some(Value::Number(_)) => {}
            Some(Value::String(s)) => match s.trim().parse::<f64>() {
                Ok(f) if f.is_finite() => {
                    ev.insert("value".into(), json!(f));
                }
                _ => return Err(format!("Invalid scalar value {s}")),
            },
            Some(other) => return Err(format!("Invalid scalar value {other}")),
        }
    }
    if kind == PLOT {
        let len = ev
            .get("plot_str")
            .and_then(Value::as_str)
            .map_or(0, |s| s.chars().count());
        ev.insert("plot_len".into(), json!(len));
    }
    Ok(Prepared {
        owner,
        kind,
        ts,
        iter,
        x_axis_label,
        doc: ev,
    })
}

pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => s == "true" || s == "1",
        _ => false,
    }
}

/// Milliseconds since the epoch from a number, a numeric string or an ISO date.
pub(super) fn parse_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(f64_to_i64)),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<i64>()
                .ok()
                .or_else(|| s.parse::<f64>().ok().and_then(f64_to_i64))
                .or_else(|| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .ok()
                        .map(|d| d.timestamp_millis())
                })
        }
        _ => None,
    }
}

/// `int(iter)` as Python does it: floats are truncated, strings must hold an integer.
pub(super) fn parse_iter(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(f64_to_i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

pub(super) fn f64_to_i64(f: f64) -> Option<i64> {
    (f.is_finite() && f.abs() < 9.2e18).then(|| f.trunc() as i64)
}

pub(super) fn md5_hex(s: &str) -> String {
    let mut h = Md5::new();
    h.update(s.as_bytes());
    format!("{:x}", h.finalize())
}

pub(super) fn ensure_object<'a>(
    map: &'a mut Map<String, Value>,
    key: &str,
) -> &'a mut Map<String, Value> {
    let slot = map
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    match slot {
        Value::Object(m) => m,
        // Made an object just above.
        _ => unreachable!("slot was just made an object"),
    }
}

/// Folds a batch's scalar summaries into `last_metrics[md5(metric)][md5(variant)]`, the way the
/// real server's conditional Mongo update does: `value` is replaced, min/max only move outward,
/// `first_value` is set once, and the mean is kept from count and total (rounded to 2 places).
pub(super) fn merge_last_metrics(doc: &mut Doc, aggs: &BTreeMap<(String, String), ScalarAgg>) {
    let last_metrics = ensure_object(doc, "last_metrics");
    for agg in aggs.values() {
        let by_variant = ensure_object(last_metrics, &md5_hex(&agg.metric));
        let entry = ensure_object(by_variant, &md5_hex(&agg.variant));
        entry.insert("metric".into(), json!(agg.metric));
        entry.insert("variant".into(), json!(agg.variant));
        entry.insert("value".into(), json!(agg.value));
        if let Some(label) = &agg.x_axis_label {
            entry.insert("x_axis_label".into(), json!(label));
        }
        if entry.get("first_value").is_none_or(Value::is_null) {
            entry.insert("first_value".into(), json!(agg.first_value));
            entry.insert("first_value_iteration".into(), json!(agg.first_iter));
        }
        let stored_min = entry.get("min_value").and_then(Value::as_f64);
        if stored_min.is_none_or(|m| m > agg.min) {
            entry.insert("min_value".into(), json!(agg.min));
            entry.insert("min_value_iteration".into(), json!(agg.min_iter));
        }
        let stored_max = entry.get("max_value").and_then(Value::as_f64);
        if stored_max.is_none_or(|m| m < agg.max) {
            entry.insert("max_value".into(), json!(agg.max));
            entry.insert("max_value_iteration".into(), json!(agg.max_iter));
        }
        let count = entry.get("count").and_then(Value::as_i64).unwrap_or(0);
        let mean = entry
            .get("mean_value")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
        let new_count = count + agg.count;
        let new_mean = (mean * count as f64 + agg.total) / new_count as f64;
        entry.insert(
            "mean_value".into(),
            json!((new_mean * 100.0).round() / 100.0),
        );
        entry.insert("count".into(), json!(new_count));
    }
}

/// `last_update` (and for tasks `last_change` and `active_duration`), as the real
/// `TaskBLL.set_last_update`: reporting events is what keeps a running task from looking
/// non-responsive.
pub(super) fn touch_owner(doc: &mut Doc, user: &str, is_task: bool) {
    let now = now_iso();
    doc.insert("last_update".into(), json!(now));
    if !is_task {
        return;
    }
    doc.insert("last_change".into(), json!(now));
    doc.insert("last_changed_by".into(), json!(user));
    let running = doc.get("status").and_then(Value::as_str) == Some("in_progress");
    let started = doc
        .get("started")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok());
    if let (true, Some(started)) = (running, started) {
        // Whole seconds: the task schema types it as an integer and the SDK's parser rejects
        // a float there (the whole task then fails to load).
        let secs = (chrono::Utc::now() - started.with_timezone(&chrono::Utc)).num_seconds();
        doc.insert("active_duration".into(), json!(secs));
    }
}
