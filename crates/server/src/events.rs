//! `events.*`: the scalars, vectors, plots, debug images and console lines that tasks (and
//! models) report, kept in the SQLite `events` table, and the read endpoints behind the SDK's
//! result getters (`get_reported_scalars`, `get_reported_console_output`, ...) and the UI.
//!
//! Semantics follow the real server (`apiserver/bll/event/*`, mirror 2.0.0):
//! - `add_batch` validates every event on its own; bad ones are counted in `errors_info` and
//!   the rest are stored. The owning task's `last_iteration`, `last_update` and `last_metrics`
//!   summary change in the same transaction, so readers never see one without the other.
//! - Non-log events with the same (type, iter, metric, variant, key) replace each other: the real
//!   server derives their Elasticsearch id from those fields. The table keeps every row; reads
//!   keep only the newest row of each such group. Log lines are always appended.
//! - Scroll ids are opaque to clients; ours carry their state (base64 of a small JSON), so no
//!   server-side cursor has to be kept or expired.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, now_iso, now_ms};
use crate::store::{Doc, Tx};

const SCALAR: &str = "training_stats_scalar";
const VECTOR: &str = "training_stats_vector";
const IMAGE: &str = "training_debug_image";
const PLOT: &str = "plot";
const LOG: &str = "log";
const EVENT_TYPES: &[&str] = &[SCALAR, VECTOR, IMAGE, PLOT, LOG];
/// The iteration the SDK reports single values (`Logger.report_single_value`) at.
const SINGLE_VALUE_ITER: i64 = -(1 << 31);
/// Tasks in these states take no more events unless an event says `allow_locked`.
const LOCKED_STATUSES: &[&str] = &["publishing", "published"];
/// The real server's default and cap for `scalar_metrics_iter_histogram` points per series.
const DEFAULT_SAMPLES: i64 = 2000;
const MAX_SAMPLES: i64 = 6000;
/// The real `get_task_events` never returns more than this per call.
const MAX_EVENTS_BATCH: i64 = 10_000;

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "add" => add_events(ctx, vec![req.body.clone()], req.worker_header.as_deref()),
        "add_batch" => batch_items(req).and_then(|events| {
            if events.is_empty() {
                return Err(ApiError::new(400, 17, "Batch request contains no items"));
            }
            add_events(ctx, events, req.worker_header.as_deref())
        }),
        "get_task_log" => ctx.store.write(|tx| get_task_log(tx, req)),
        "get_task_events" => ctx.store.write(|tx| get_task_events(tx, req)),
        "scalar_metrics_iter_histogram" => ctx.store.write(|tx| scalar_histogram(tx, req)),
        "multi_task_scalar_metrics_iter_histogram" => {
            ctx.store.write(|tx| multi_task_histogram(tx, req))
        }
        "get_scalar_metrics_and_variants" => {
            ctx.store.write(|tx| metrics_and_variants(tx, req, SCALAR))
        }
        "get_vector_metrics_and_variants" => {
            ctx.store.write(|tx| metrics_and_variants(tx, req, VECTOR))
        }
        "vector_metrics_iter_histogram" => ctx.store.write(|tx| vector_histogram(tx, req)),
        "get_scalar_metric_data" => ctx.store.write(|tx| scalar_metric_data(tx, req)),
        "get_task_plots" => ctx.store.write(|tx| get_task_plots(tx, req)),
        "get_multi_task_plots" => ctx.store.write(|tx| get_multi_task_plots(tx, req)),
        "debug_images" => ctx.store.write(|tx| metric_samples(tx, req, IMAGE)),
        "plots" => ctx.store.write(|tx| metric_samples(tx, req, PLOT)),
        "get_task_single_value_metrics" => ctx.store.write(|tx| single_value_metrics(tx, req)),
        "get_task_metrics" => ctx.store.write(|tx| get_task_metrics(tx, req)),
        "get_multi_task_metrics" => ctx.store.write(|tx| get_multi_task_metrics(tx, req)),
        "delete_for_task" => ctx.store.write(|tx| delete_for(tx, req, false)),
        "delete_for_model" => ctx.store.write(|tx| delete_for(tx, req, true)),
        "clear_task_log" => ctx.store.write(|tx| clear_task_log(tx, req)),
        _ => return None,
    };
    Some(r)
}

// ---------------------------------------------------------------------------------------------
// Writing

/// The events of an `add_batch` call. Clients send json-lines (the HTTP layer splits them into
/// `req.lines`); a JSON body with a `requests` or `events` list is accepted too, and so is a
/// single event sent as a plain object (a one-line batch without the json-lines content type).
fn batch_items(req: &Req) -> Result<Vec<Doc>, ApiError> {
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
type Owner = (bool, String);

/// One validated event, ready to be stored.
struct Prepared {
    owner: Owner,
    kind: String,
    ts: i64,
    iter: Option<i64>,
    x_axis_label: Option<String>,
    doc: Doc,
}

/// The per-batch summary of one scalar series, merged into `last_metrics` afterwards (the real
/// server's `_update_last_scalar_events_for_task`).
struct ScalarAgg {
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

fn add_events(ctx: &Ctx, mut events: Vec<Doc>, worker: Option<&str>) -> Result<Value, ApiError> {
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
        let mut errors: Vec<(String, i64)> = Vec::new();
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
                && tx.has_event_like(
                    &p.owner.1,
                    LOG,
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
            touch_owner(&mut doc, ctx.user(), !owner.0);
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
fn prepare_event(
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

fn truthy(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => s == "true" || s == "1",
        _ => false,
    }
}

/// Milliseconds since the epoch from a number, a numeric string or an ISO date.
fn parse_timestamp(v: &Value) -> Option<i64> {
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
fn parse_iter(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(f64_to_i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(i64::from(*b)),
        _ => None,
    }
}

fn f64_to_i64(f: f64) -> Option<i64> {
    (f.is_finite() && f.abs() < 9.2e18).then(|| f.trunc() as i64)
}

fn md5_hex(s: &str) -> String {
    let mut h = Md5::new();
    h.update(s.as_bytes());
    format!("{:x}", h.finalize())
}

fn ensure_object<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
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
fn merge_last_metrics(doc: &mut Doc, aggs: &BTreeMap<(String, String), ScalarAgg>) {
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
fn touch_owner(doc: &mut Doc, user: &str, is_task: bool) {
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

// ---------------------------------------------------------------------------------------------
// Reading: shared helpers

/// A stored event and its arrival rank, which orders events with equal sort keys and makes
/// scroll positions exact.
struct Ev {
    seq: usize,
    doc: Doc,
}

fn str_field<'a>(d: &'a Doc, key: &str) -> &'a str {
    d.get(key).and_then(Value::as_str).unwrap_or("")
}

fn iter_of(d: &Doc) -> Option<i64> {
    d.get("iter").and_then(Value::as_i64)
}

fn ts_of(d: &Doc) -> i64 {
    d.get("timestamp").and_then(Value::as_i64).unwrap_or(0)
}

/// The identity under which non-log events replace each other; `None` for log lines.
fn identity(d: &Doc) -> Option<String> {
    let kind = str_field(d, "type");
    if kind == LOG {
        return None;
    }
    let mut id = kind.to_string();
    for field in ["iter", "metric", "variant", "key"] {
        if let Some(v) = d.get(field) {
            id.push('\u{1}');
            id.push_str(field);
            id.push('=');
            id.push_str(&v.to_string());
        }
    }
    Some(id)
}

/// The events of a task or model (of one type, or all), newest of each identity only.
fn load_events(tx: &Tx<'_>, owner: &str, kind: Option<&str>) -> Result<Vec<Ev>, ApiError> {
    let docs = tx.events(owner, kind)?;
    let ids: Vec<Option<String>> = docs.iter().map(identity).collect();
    let mut newest: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        if let Some(id) = id {
            newest.insert(id, i);
        }
    }
    let keep: Vec<bool> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| id.as_deref().is_none_or(|id| newest.get(id) == Some(&i)))
        .collect();
    Ok(docs
        .into_iter()
        .enumerate()
        .filter(|(i, _)| keep[*i])
        .map(|(seq, doc)| Ev { seq, doc })
        .collect())
}

/// The task (or, with `model_events`, the model) the events belong to.
fn owner_doc(tx: &Tx<'_>, id: &str, model_events: bool) -> Result<Doc, ApiError> {
    if model_events {
        tx.get("models", id)?
            .ok_or_else(|| ApiError::invalid_model(id))
    } else {
        tx.get("tasks", id)?
            .ok_or_else(|| ApiError::invalid_task(id))
    }
}

/// All the listed tasks (or models), deduplicated in request order; unknown ids are a 400.
fn owner_docs(tx: &Tx<'_>, ids: &[String], model_events: bool) -> Result<Vec<Doc>, ApiError> {
    let mut seen = HashSet::new();
    let mut docs = Vec::new();
    let mut missing = Vec::new();
    for id in ids {
        if !seen.insert(id.as_str()) {
            continue;
        }
        match tx.get(if model_events { "models" } else { "tasks" }, id)? {
            Some(d) => docs.push(d),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        let ids = missing.join(", ");
        return Err(if model_events {
            ApiError::invalid_model(&ids)
        } else {
            ApiError::invalid_task(&ids)
        });
    }
    Ok(docs)
}

/// The `tasks` list of the multi-task endpoints (at least one).
fn task_list(req: &Req) -> Result<Vec<String>, ApiError> {
    let tasks = req
        .str_list("tasks")?
        .ok_or_else(|| ApiError::missing_field("tasks"))?;
    // A comma-separated string is accepted too, as the real histogram endpoint does.
    let tasks: Vec<String> = tasks
        .iter()
        .flat_map(|t| t.split(','))
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if tasks.is_empty() {
        return Err(ApiError::validation("tasks must list at least one id"));
    }
    Ok(tasks)
}

fn doc_id(d: &Doc) -> &str {
    str_field(d, "id")
}

/// `[{metric, variants?}]` filters: a metric with no variants matches all of its variants.
type MetricFilter = Vec<(String, Vec<String>)>;

fn parse_metric_filter(items: &[Value]) -> Result<Option<MetricFilter>, ApiError> {
    let mut out = Vec::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(ApiError::validation("metrics items must be objects"));
        };
        let metric = match m.get("metric") {
            Some(Value::String(s)) => s.clone(),
            None | Some(Value::Null) => return Err(ApiError::missing_field("metrics.metric")),
            Some(_) => return Err(ApiError::validation("metrics.metric must be a string")),
        };
        out.push((metric, string_list(m.get("variants"), "metrics.variants")?));
    }
    Ok((!out.is_empty()).then_some(out))
}

fn metric_filter(req: &Req) -> Result<Option<MetricFilter>, ApiError> {
    match req.array("metrics")? {
        Some(items) => parse_metric_filter(items),
        None => Ok(None),
    }
}

fn string_list(v: Option<&Value>, field: &str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::validation(format!("{field} must be strings")))
            })
            .collect(),
        Some(_) => Err(ApiError::validation(format!("{field} must be a list"))),
    }
}

fn matches(filter: Option<&MetricFilter>, d: &Doc) -> bool {
    filter.is_none_or(|f| {
        let (metric, variant) = (str_field(d, "metric"), str_field(d, "variant"));
        f.iter()
            .any(|(m, vs)| m == metric && (vs.is_empty() || vs.iter().any(|v| v == variant)))
    })
}

fn event_type_arg(req: &Req, required: bool) -> Result<String, ApiError> {
    let kind = match req.opt_str("event_type")? {
        Some(k) if !k.is_empty() => k.replace(' ', "_"),
        _ if required => return Err(ApiError::missing_field("event_type")),
        _ => return Ok("all".into()),
    };
    if kind != "all" && !EVENT_TYPES.contains(&kind.as_str()) {
        return Err(ApiError::validation(format!("invalid event_type {kind}")));
    }
    Ok(kind)
}

fn kind_filter(kind: &str) -> Option<&str> {
    (kind != "all").then_some(kind)
}

fn order_desc(req: &Req, default_desc: bool) -> Result<Option<bool>, ApiError> {
    match req.opt_str("order")? {
        None | Some("") => Ok(if default_desc { Some(true) } else { None }),
        Some("asc") => Ok(Some(false)),
        Some("desc") => Ok(Some(true)),
        Some(o) => Err(ApiError::validation(format!(
            "order must be asc or desc, got {o}"
        ))),
    }
}

fn encode_scroll(state: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(state.to_string())
}

fn invalid_scroll(scroll_id: &str) -> ApiError {
    ApiError::new(
        400,
        1104,
        format!("Invalid scroll id: scroll_id={scroll_id}"),
    )
}

fn decode_scroll(scroll_id: &str) -> Result<Value, ApiError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(scroll_id.trim())
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .filter(Value::is_object)
        .ok_or_else(|| invalid_scroll(scroll_id))
}

fn docs_of(events: Vec<Ev>) -> Vec<Value> {
    events.into_iter().map(|e| Value::Object(e.doc)).collect()
}

// ---------------------------------------------------------------------------------------------
// Logs and raw events

/// `get_task_log` (2.9+): a page of console lines next to `from_timestamp`.
///
/// With `navigate_earlier` (the default) the page holds the `batch_size` lines just before
/// `from_timestamp` (or the newest ones), newest first; otherwise the lines just after it (or the
/// oldest), oldest first. `order` flips a page when it asks for the other direction. Every line
/// sharing the timestamp of the page's far end is included even past `batch_size`, so paging on
/// with that timestamp (which excludes it) loses nothing and repeats nothing, and lines are
/// never split between pages.
fn get_task_log(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, false)?;
    let batch_size = req.i64_opt("batch_size")?.unwrap_or(5000).max(0) as usize;
    let earlier = req.bool_or("navigate_earlier", true)?;
    // 0 means "not given", as in the real server's `if from_key_value:`.
    let from = req.i64_opt("from_timestamp")?.filter(|t| *t != 0);
    let order = order_desc(req, false)?;
    let filter = metric_filter(req)?;

    let mut events: Vec<Ev> = load_events(tx, task, Some(LOG))?
        .into_iter()
        .filter(|e| matches(filter.as_ref(), &e.doc))
        .collect();
    let total = events.len();
    events.sort_by_key(|e| (ts_of(&e.doc), e.seq));
    if earlier {
        events.reverse();
    }
    let mut page: Vec<Ev> = Vec::new();
    let mut boundary: Option<i64> = None;
    for e in events {
        let ts = ts_of(&e.doc);
        let in_range = from.is_none_or(|f| if earlier { ts < f } else { ts > f });
        if !in_range {
            continue;
        }
        if page.len() >= batch_size && boundary != Some(ts) {
            break;
        }
        boundary = Some(ts);
        page.push(e);
    }
    if order == Some(!earlier) {
        page.reverse();
    }
    let returned = page.len();
    Ok(json!({"events": docs_of(page), "returned": returned, "total": total}))
}

/// Sort key of `get_task_events`: by iteration (events without one last, as Elasticsearch
/// sorts missing values), then by time and arrival so pages never overlap or skip.
type EvKey = (Option<i64>, i64, usize);

fn ev_key(e: &Ev) -> EvKey {
    (iter_of(&e.doc), ts_of(&e.doc), e.seq)
}

fn cmp_keys(a: &EvKey, b: &EvKey, desc: bool) -> Ordering {
    let by_iter = match (a.0, b.0) {
        (Some(x), Some(y)) if desc => y.cmp(&x),
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    };
    let rest = (a.1, a.2).cmp(&(b.1, b.2));
    by_iter.then(if desc { rest.reverse() } else { rest })
}

fn key_from_json(v: &Value) -> Option<EvKey> {
    let a = v.as_array().filter(|a| a.len() == 3)?;
    let iter = match &a[0] {
        Value::Null => None,
        other => Some(other.as_i64()?),
    };
    Some((iter, a[1].as_i64()?, usize::try_from(a[2].as_u64()?).ok()?))
}

/// `get_task_events`: every event of a task, `batch_size` at a time. The scroll id carries the
/// sort key of the last event returned and the total counted on the first page.
fn get_task_events(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let kind = event_type_arg(req, false)?;
    let desc = order_desc(req, false)?.unwrap_or(false);
    let batch = req
        .i64_opt("batch_size")?
        .unwrap_or(500)
        .clamp(0, MAX_EVENTS_BATCH) as usize;
    let filter = metric_filter(req)?;
    let scroll_id = req.opt_str("scroll_id")?.filter(|s| !s.is_empty());

    let mut events: Vec<Ev> = load_events(tx, task, kind_filter(&kind))?
        .into_iter()
        .filter(|e| matches(filter.as_ref(), &e.doc))
        .collect();
    let (from, total) = match scroll_id {
        None => (None, events.len() as u64),
        Some(s) => {
            let state = decode_scroll(s)?;
            let total = state.get("t").and_then(Value::as_u64).unwrap_or(0);
            match state.get("k") {
                // The previous page was empty: the scroll is exhausted.
                None | Some(Value::Null) => {
                    return Ok(
                        json!({"events": [], "returned": 0, "total": total, "scroll_id": s}),
                    );
                }
                Some(k) => (
                    Some(key_from_json(k).ok_or_else(|| invalid_scroll(s))?),
                    total,
                ),
            }
        }
    };
    events.sort_by(|a, b| cmp_keys(&ev_key(a), &ev_key(b), desc));
    let page: Vec<Ev> = events
        .into_iter()
        .filter(|e| from.is_none_or(|f| cmp_keys(&ev_key(e), &f, desc) == Ordering::Greater))
        .take(batch)
        .collect();
    let next = page.last().map(|e| {
        let (iter, ts, seq) = ev_key(e);
        json!([iter, ts, seq])
    });
    let scroll = encode_scroll(&json!({"k": next, "t": total}));
    let returned = page.len();
    Ok(json!({
        "events": docs_of(page),
        "returned": returned,
        "total": total,
        "scroll_id": scroll,
    }))
}

/// `get_scalar_metric_data`: one metric's scalar events, newest iteration first.
fn scalar_metric_data(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let metric = req.str("metric")?;
    let mut events: Vec<Ev> = load_events(tx, task, Some(SCALAR))?
        .into_iter()
        .filter(|e| str_field(&e.doc, "metric") == metric)
        .collect();
    events.sort_by(|a, b| cmp_keys(&ev_key(a), &ev_key(b), true));
    let n = events.len();
    Ok(json!({"events": docs_of(events), "returned": n, "total": n}))
}

// ---------------------------------------------------------------------------------------------
// Scalars

#[derive(Clone, Copy, PartialEq)]
enum XKey {
    Iter,
    Timestamp,
    IsoTime,
}

fn x_key(req: &Req) -> Result<XKey, ApiError> {
    match req.opt_str("key")? {
        None | Some("") | Some("iter") => Ok(XKey::Iter),
        Some("timestamp") => Ok(XKey::Timestamp),
        Some("iso_time") => Ok(XKey::IsoTime),
        Some(k) => Err(ApiError::validation(format!(
            "key must be one of iter, timestamp, iso_time, got {k}"
        ))),
    }
}

fn samples(req: &Req) -> Result<usize, ApiError> {
    Ok(req
        .i64_opt("samples")?
        .unwrap_or(DEFAULT_SAMPLES)
        .clamp(1, MAX_SAMPLES) as usize)
}

/// The bucket width that keeps a series under `samples` points (`_build_metric_interval`).
fn bucket_interval(points: &[(i64, f64)], samples: usize) -> i64 {
    if points.len() < samples {
        return 1;
    }
    let min = points.iter().map(|p| p.0).min().unwrap_or(0);
    let max = points.iter().map(|p| p.0).max().unwrap_or(min);
    let range = (i128::from(max) - i128::from(min) + 1) as f64;
    ((range / samples as f64).ceil() as i64).max(1)
}

fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `x_axis_label`s kept in an owner's `last_metrics`, by (metric, variant).
fn x_axis_labels(owner: &Doc) -> HashMap<(String, String), Value> {
    let mut out = HashMap::new();
    let Some(Value::Object(metrics)) = owner.get("last_metrics") else {
        return out;
    };
    for variants in metrics.values().filter_map(Value::as_object) {
        for entry in variants.values().filter_map(Value::as_object) {
            if let Some(label) = entry.get("x_axis_label").filter(|l| l.is_string()) {
                let m = entry.get("metric").and_then(Value::as_str).unwrap_or("");
                let v = entry.get("variant").and_then(Value::as_str).unwrap_or("");
                out.insert((m.to_string(), v.to_string()), label.clone());
            }
        }
    }
    out
}

/// (x, value) points of one scalar series.
type Points = Vec<(i64, f64)>;

/// `{metric: {variant: {name, x, y}}}`: each series averaged over equal-width buckets of the x
/// key so it has at most `samples` points, as the real server's histogram aggregation does.
/// Single values (iteration -2^31) are not series and are left out.
fn histogram(
    events: &[Ev],
    samples: usize,
    key: XKey,
    filter: Option<&MetricFilter>,
    owner: &Doc,
) -> Map<String, Value> {
    let mut series: BTreeMap<&str, BTreeMap<&str, Points>> = BTreeMap::new();
    for e in events {
        let d = &e.doc;
        let Some(iter) = iter_of(d) else { continue };
        if iter <= SINGLE_VALUE_ITER || !matches(filter, d) {
            continue;
        }
        let Some(value) = d.get("value").and_then(Value::as_f64) else {
            continue;
        };
        let x = if key == XKey::Iter { iter } else { ts_of(d) };
        series
            .entry(str_field(d, "metric"))
            .or_default()
            .entry(str_field(d, "variant"))
            .or_default()
            .push((x, value));
    }
    let labels = x_axis_labels(owner);
    let mut out = Map::new();
    for (metric, variants) in series {
        let mut by_variant = Map::new();
        for (variant, points) in variants {
            let interval = bucket_interval(&points, samples);
            let mut buckets: BTreeMap<i64, (f64, usize)> = BTreeMap::new();
            for (x, v) in points {
                let b = buckets
                    .entry(x.div_euclid(interval) * interval)
                    .or_insert((0.0, 0));
                b.0 += v;
                b.1 += 1;
            }
            let xs: Vec<Value> = buckets
                .keys()
                .map(|b| match key {
                    XKey::IsoTime => json!(iso_ms(*b)),
                    _ => json!(b),
                })
                .collect();
            let ys: Vec<Value> = buckets
                .values()
                .map(|(sum, n)| json!(sum / *n as f64))
                .collect();
            let mut entry = json!({"name": variant, "x": xs, "y": ys});
            if let Some(label) = labels.get(&(metric.to_string(), variant.to_string())) {
                entry["x_axis_label"] = label.clone();
            }
            by_variant.insert(variant.to_string(), entry);
        }
        out.insert(metric.to_string(), Value::Object(by_variant));
    }
    out
}

fn scalar_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    let owner = owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let filter = metric_filter(req)?;
    let events = load_events(tx, task, Some(SCALAR))?;
    Ok(Value::Object(histogram(
        &events,
        samples(req)?,
        x_key(req)?,
        filter.as_ref(),
        &owner,
    )))
}

/// `{metrics: {metric: {variant: {task id: {name: task name, x, y}}}}}`.
fn multi_task_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let owners = owner_docs(tx, &task_list(req)?, req.bool_or("model_events", false)?)?;
    let filter = metric_filter(req)?;
    let (samples, key) = (samples(req)?, x_key(req)?);
    let mut out = Map::new();
    for owner in &owners {
        let events = load_events(tx, doc_id(owner), Some(SCALAR))?;
        let name = owner.get("name").cloned().unwrap_or(Value::Null);
        for (metric, variants) in histogram(&events, samples, key, filter.as_ref(), owner) {
            let Value::Object(variants) = variants else {
                continue;
            };
            let by_variant = ensure_object(&mut out, &metric);
            for (variant, mut data) in variants {
                data["name"] = name.clone();
                ensure_object(by_variant, &variant).insert(doc_id(owner).to_string(), data);
            }
        }
    }
    Ok(json!({ "metrics": out }))
}

/// `{metrics: {metric: [variants]}}` (sorted), as the real server's aggregation returns it.
fn metrics_and_variants(tx: &mut Tx<'_>, req: &Req, kind: &str) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for e in load_events(tx, task, Some(kind))? {
        metrics
            .entry(str_field(&e.doc, "metric").to_string())
            .or_default()
            .insert(str_field(&e.doc, "variant").to_string());
    }
    let out: Map<String, Value> = metrics
        .into_iter()
        .map(|(m, vs)| (m, json!(vs.into_iter().collect::<Vec<_>>())))
        .collect();
    Ok(json!({ "metrics": out }))
}

/// `vector_metrics_iter_histogram`: one vector series, by iteration.
fn vector_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let metric = req.str("metric")?;
    let variant = req.str("variant")?;
    let mut events: Vec<Ev> = load_events(tx, task, Some(VECTOR))?
        .into_iter()
        .filter(|e| {
            str_field(&e.doc, "metric") == metric && str_field(&e.doc, "variant") == variant
        })
        .collect();
    events.sort_by(|a, b| cmp_keys(&ev_key(a), &ev_key(b), false));
    let iterations: Vec<Value> = events
        .iter()
        .map(|e| e.doc.get("iter").cloned().unwrap_or(Value::Null))
        .collect();
    let vectors: Vec<Value> = events
        .iter()
        .map(|e| e.doc.get("value").cloned().unwrap_or(Value::Null))
        .collect();
    Ok(json!({"metric": metric, "variant": variant, "vectors": vectors, "iterations": iterations}))
}

/// `get_task_single_value_metrics`: `{tasks: [{task, task_name, values: [{metric, variant,
/// value, timestamp}]}]}`, listing only tasks that reported single values.
fn single_value_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let owners = owner_docs(tx, &task_list(req)?, req.bool_or("model_events", false)?)?;
    let filter = metric_filter(req)?;
    let mut out = Vec::new();
    for owner in &owners {
        let values: Vec<Value> = load_events(tx, doc_id(owner), Some(SCALAR))?
            .into_iter()
            .filter(|e| {
                iter_of(&e.doc) == Some(SINGLE_VALUE_ITER) && matches(filter.as_ref(), &e.doc)
            })
            .map(|e| {
                json!({
                    "metric": e.doc.get("metric"),
                    "variant": e.doc.get("variant"),
                    "value": e.doc.get("value"),
                    "timestamp": e.doc.get("timestamp"),
                })
            })
            .collect();
        if !values.is_empty() {
            out.push(json!({
                "task": doc_id(owner),
                "task_name": owner.get("name"),
                "values": values,
            }));
        }
    }
    Ok(json!({ "tasks": out }))
}

/// `get_task_metrics`: `{metrics: [{task, metrics: [names]}]}` for one event type, counting
/// only events with a regular iteration as the real server's query does.
fn get_task_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let owners = owner_docs(tx, &task_list(req)?, req.bool_or("model_events", false)?)?;
    let kind = event_type_arg(req, true)?;
    let mut out = Vec::new();
    for owner in &owners {
        let names: BTreeSet<String> = load_events(tx, doc_id(owner), kind_filter(&kind))?
            .into_iter()
            .filter(|e| iter_of(&e.doc).is_some_and(|i| i > SINGLE_VALUE_ITER))
            .map(|e| str_field(&e.doc, "metric").to_string())
            .collect();
        out.push(json!({"task": doc_id(owner), "metrics": names.into_iter().collect::<Vec<_>>()}));
    }
    Ok(json!({ "metrics": out }))
}

/// `get_multi_task_metrics`: `{metrics: [{metric, variants}]}` over all the tasks.
fn get_multi_task_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let owners = owner_docs(tx, &task_list(req)?, req.bool_or("model_events", false)?)?;
    let kind = event_type_arg(req, false)?;
    let mut metrics: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for owner in &owners {
        for e in load_events(tx, doc_id(owner), kind_filter(&kind))? {
            metrics
                .entry(str_field(&e.doc, "metric").to_string())
                .or_default()
                .insert(str_field(&e.doc, "variant").to_string());
        }
    }
    let out: Vec<Value> = metrics
        .into_iter()
        .map(|(m, vs)| json!({"metric": m, "variants": vs.into_iter().collect::<Vec<_>>()}))
        .collect();
    Ok(json!({ "metrics": out }))
}

// ---------------------------------------------------------------------------------------------
// Plots and debug images

fn iters_arg(req: &Req) -> Result<usize, ApiError> {
    Ok(req.i64_opt("iters")?.unwrap_or(1).max(1) as usize)
}

/// The newest `iters` events of each (metric, variant), metrics and variants sorted by name.
fn latest_per_variant(events: Vec<Ev>, iters: usize) -> Vec<Ev> {
    let mut groups: BTreeMap<(String, String), Vec<Ev>> = BTreeMap::new();
    for e in events {
        let key = (
            str_field(&e.doc, "metric").to_string(),
            str_field(&e.doc, "variant").to_string(),
        );
        groups.entry(key).or_default().push(e);
    }
    let mut out = Vec::new();
    for (_, mut group) in groups {
        group.sort_by(|a, b| {
            let ia = iter_of(&a.doc).unwrap_or(i64::MIN);
            let ib = iter_of(&b.doc).unwrap_or(i64::MIN);
            ib.cmp(&ia).then(b.seq.cmp(&a.seq))
        });
        out.extend(group.into_iter().take(iters));
    }
    out
}

/// `get_task_plots`: `{plots, returned, total}` with the newest `iters` plots of each series.
fn get_task_plots(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, req.bool_or("model_events", false)?)?;
    let filter = metric_filter(req)?;
    let events: Vec<Ev> = load_events(tx, task, Some(PLOT))?
        .into_iter()
        .filter(|e| matches(filter.as_ref(), &e.doc))
        .collect();
    let plots = latest_per_variant(events, iters_arg(req)?);
    let n = plots.len();
    Ok(json!({"plots": docs_of(plots), "returned": n, "total": n}))
}

/// `get_multi_task_plots`: `{plots: {metric: {variant: {task: {iter: {name, plots}}}}},
/// returned, total}`, keys in descending order as the real server groups them.
fn get_multi_task_plots(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let owners = owner_docs(tx, &task_list(req)?, req.bool_or("model_events", false)?)?;
    let filter = metric_filter(req)?;
    let iters = iters_arg(req)?;
    let mut rows: Vec<(String, String, String, i64, Value, Doc)> = Vec::new();
    for owner in &owners {
        let events: Vec<Ev> = load_events(tx, doc_id(owner), Some(PLOT))?
            .into_iter()
            .filter(|e| matches(filter.as_ref(), &e.doc))
            .collect();
        for e in latest_per_variant(events, iters) {
            rows.push((
                str_field(&e.doc, "metric").to_string(),
                str_field(&e.doc, "variant").to_string(),
                doc_id(owner).to_string(),
                iter_of(&e.doc).unwrap_or(0),
                owner.get("name").cloned().unwrap_or(Value::Null),
                e.doc,
            ));
        }
    }
    let total = rows.len();
    rows.sort_by(|a, b| (&b.0, &b.1, &b.2, b.3).cmp(&(&a.0, &a.1, &a.2, a.3)));
    let mut plots = Map::new();
    for (metric, variant, task, iter, name, doc) in rows {
        let by_variant = ensure_object(&mut plots, &metric);
        let by_task = ensure_object(by_variant, &variant);
        let by_iter = ensure_object(by_task, &task);
        let slot = by_iter
            .entry(iter.to_string())
            .or_insert_with(|| json!({"name": name, "plots": []}));
        if let Some(list) = slot.get_mut("plots").and_then(Value::as_array_mut) {
            list.push(Value::Object(doc));
        }
    }
    let returned = plots.len();
    Ok(json!({"plots": plots, "returned": returned, "total": total}))
}

/// For each (metric, variant) of debug images: the newest iteration whose image was since
/// overwritten. The SDK recycles image file names after `max_history` iterations, so an older
/// event pointing at the newest image's URL would show a picture that is not its own.
fn recycled_iterations(events: &[&Ev]) -> HashMap<(String, String), i64> {
    let mut newest: HashMap<(&str, &str), (&str, i64)> = HashMap::new();
    for e in events {
        let (Some(iter), Some(url)) = (iter_of(&e.doc), e.doc.get("url").and_then(Value::as_str))
        else {
            continue;
        };
        let key = (str_field(&e.doc, "metric"), str_field(&e.doc, "variant"));
        let slot = newest.entry(key).or_insert((url, iter));
        if iter > slot.1 {
            *slot = (url, iter);
        }
    }
    let mut out = HashMap::new();
    for ((metric, variant), (url, _)) in newest {
        let mut iters: Vec<i64> = events
            .iter()
            .filter(|e| {
                str_field(&e.doc, "metric") == metric
                    && str_field(&e.doc, "variant") == variant
                    && e.doc.get("url").and_then(Value::as_str) == Some(url)
            })
            .filter_map(|e| iter_of(&e.doc))
            .collect();
        iters.sort_unstable_by(|a, b| b.cmp(a));
        if let Some(second) = iters.get(1) {
            out.insert((metric.to_string(), variant.to_string()), *second);
        }
    }
    out
}

/// `debug_images` (2.14+) and `plots`: per task, the events of the next `iters` iterations
/// (one event per metric and variant in each), `{scroll_id, metrics: [{task, iterations:
/// [{iter, events}]}]}`. The first call starts at the newest iteration; a call with the returned
/// `scroll_id` continues to earlier iterations (or later ones with `navigate_earlier: false`),
/// and yields no iterations once there are none left. The scroll id holds, per task, the lowest
/// and highest iteration returned so far.
fn metric_samples(tx: &mut Tx<'_>, req: &Req, kind: &str) -> Result<Value, ApiError> {
    let items = req
        .array("metrics")?
        .ok_or_else(|| ApiError::missing_field("metrics"))?;
    if items.is_empty() {
        return Err(ApiError::validation("metrics must list at least one task"));
    }
    // Task → metric filter; `None` (a request item without a metric) means all metrics.
    let mut tasks: Vec<String> = Vec::new();
    let mut filters: HashMap<String, Option<MetricFilter>> = HashMap::new();
    for item in items {
        let Value::Object(m) = item else {
            return Err(ApiError::validation("metrics items must be objects"));
        };
        let task = match m.get("task") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(ApiError::missing_field("metrics.task")),
        };
        let metric = match m.get("metric") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(ApiError::validation("metrics.metric must be a string")),
        };
        let variants = string_list(m.get("variants"), "metrics.variants")?;
        let entry = filters.entry(task.clone()).or_insert_with(|| {
            tasks.push(task);
            Some(Vec::new())
        });
        match metric {
            None => *entry = None,
            Some(metric) => {
                if let Some(list) = entry {
                    list.push((metric, variants));
                }
            }
        }
    }
    let model_events = req.bool_or("model_events", false)?;
    owner_docs(tx, &tasks, model_events)?;
    let iters = iters_arg(req)?;
    let navigate_earlier = req.bool_or("navigate_earlier", true)?;
    let mut state = match req.opt_str("scroll_id")?.filter(|s| !s.is_empty()) {
        // `refresh` starts over from the newest iterations.
        Some(_) if req.bool_or("refresh", false)? => Map::new(),
        Some(s) => match decode_scroll(s)? {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        None => Map::new(),
    };

    let mut out = Vec::new();
    for task in &tasks {
        let filter = filters.get(task).and_then(Option::as_ref);
        let bounds = state.get(task).and_then(Value::as_array);
        let bound = |i: usize| bounds.and_then(|b| b.get(i)).and_then(Value::as_i64);
        let (min, max) = (bound(0), bound(1));
        // The first page is always the newest one.
        let earlier = navigate_earlier || max.is_none();
        let events = load_events(tx, task, Some(kind))?;
        let events: Vec<&Ev> = events
            .iter()
            .filter(|e| iter_of(&e.doc).is_some() && matches(filter, &e.doc))
            .filter(|e| kind != IMAGE || e.doc.get("url").is_some_and(|u| !u.is_null()))
            .collect();
        let invalid = if kind == IMAGE {
            recycled_iterations(&events)
        } else {
            HashMap::new()
        };
        let mut by_iter: BTreeMap<i64, Vec<&Ev>> = BTreeMap::new();
        for e in &events {
            let Some(i) = iter_of(&e.doc) else { continue };
            let in_range = if earlier {
                min.is_none_or(|m| i < m)
            } else {
                max.is_none_or(|m| i > m)
            };
            if in_range {
                by_iter.entry(i).or_default().push(e);
            }
        }
        let chosen: Vec<(i64, Vec<&Ev>)> = if earlier {
            by_iter.into_iter().rev().take(iters).collect()
        } else {
            by_iter.into_iter().take(iters).collect()
        };
        let mut iterations = Vec::new();
        for (iter, evs) in chosen {
            // One event per series in each iteration: the real server's top hit (by URL for
            // images, the newest for plots).
            let mut best: BTreeMap<(&str, &str), &Ev> = BTreeMap::new();
            for e in evs {
                let key = (str_field(&e.doc, "metric"), str_field(&e.doc, "variant"));
                let better = best.get(&key).is_none_or(|b| {
                    if kind == IMAGE {
                        str_field(&e.doc, "url") > str_field(&b.doc, "url")
                    } else {
                        (ts_of(&e.doc), e.seq) > (ts_of(&b.doc), b.seq)
                    }
                });
                if better {
                    best.insert(key, e);
                }
            }
            let picked: Vec<Value> = best
                .into_iter()
                .filter(|((m, v), _)| {
                    invalid
                        .get(&(m.to_string(), v.to_string()))
                        .is_none_or(|last_invalid| iter > *last_invalid)
                })
                .map(|(_, e)| Value::Object(e.doc.clone()))
                .collect();
            if !picked.is_empty() {
                iterations.push((iter, picked));
            }
        }
        if !earlier {
            iterations.reverse();
        }
        if let (Some(first), Some(last)) = (iterations.first(), iterations.last()) {
            state.insert(task.clone(), json!([last.0, first.0]));
        }
        let iterations: Vec<Value> = iterations
            .into_iter()
            .map(|(iter, events)| json!({"iter": iter, "events": events}))
            .collect();
        out.push(json!({"task": task, "iterations": iterations}));
    }
    Ok(json!({"scroll_id": encode_scroll(&Value::Object(state)), "metrics": out}))
}

// ---------------------------------------------------------------------------------------------
// Deleting

/// `delete_for_task` / `delete_for_model`: `{deleted: n}`. Published tasks and ready models
/// keep their events unless `allow_locked`.
fn delete_for(tx: &mut Tx<'_>, req: &Req, model: bool) -> Result<Value, ApiError> {
    let id = req.str(if model { "model" } else { "task" })?;
    let doc = owner_doc(tx, id, model)?;
    check_unlocked(&doc, id, model, req.bool_or("allow_locked", false)?)?;
    let deleted = tx.events(id, None)?.len();
    tx.delete_events(id)?;
    Ok(json!({ "deleted": deleted }))
}

fn check_unlocked(doc: &Doc, id: &str, model: bool, allow_locked: bool) -> Result<(), ApiError> {
    if allow_locked {
        return Ok(());
    }
    if model && doc.get("ready").and_then(Value::as_bool) == Some(true) {
        return Err(ApiError::new(
            400,
            201,
            format!("Invalid model id (Cannot update events for a published model): id={id}"),
        ));
    }
    if !model && LOCKED_STATUSES.contains(&str_field(doc, "status")) {
        return Err(ApiError::new(
            400,
            101,
            format!("Invalid task id (Cannot update events for a published task): id={id}"),
        ));
    }
    Ok(())
}

/// `clear_task_log {task, threshold_sec?, include_metrics?, exclude_metrics?, allow_locked}`:
/// deletes console lines (older than `threshold_sec`). The store deletes a task's events only
/// as a whole, so the kept events are written back in their original order.
fn clear_task_log(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    let doc = owner_doc(tx, task, false)?;
    check_unlocked(&doc, task, false, req.bool_or("allow_locked", false)?)?;
    let cutoff = req
        .i64_opt("threshold_sec")?
        .filter(|t| *t > 0)
        .map(|t| now_ms() - t.saturating_mul(1000));
    let include = req.str_list("include_metrics")?.filter(|l| !l.is_empty());
    let exclude = req.str_list("exclude_metrics")?.unwrap_or_default();
    let all = tx.events(task, None)?;
    let doomed = |d: &Doc| {
        let metric = str_field(d, "metric").to_string();
        str_field(d, "type") == LOG
            && cutoff.is_none_or(|c| ts_of(d) < c)
            && include.as_ref().is_none_or(|l| l.contains(&metric))
            && !exclude.contains(&metric)
    };
    let deleted = all.iter().filter(|d| doomed(d)).count();
    if deleted > 0 {
        tx.delete_events(task)?;
        for d in all.iter().filter(|d| !doomed(d)) {
            tx.add_event(task, str_field(d, "type"), ts_of(d), d)?;
        }
    }
    Ok(json!({ "deleted": deleted }))
}

#[cfg(test)]
mod tests {

    use serde_json::{Value, json};

    use super::*;

    fn setup() -> (tempfile::TempDir, Ctx) {
        crate::api::test_ctx()
    }

    fn put_task(ctx: &Ctx, id: &str, status: &str) {
        let doc = json!({
            "id": id, "name": format!("task {id}"), "status": status,
            "last_iteration": 0, "last_metrics": {}, "models": {"input": [], "output": []},
        });
        ctx.store
            .write(|tx| tx.put("tasks", id, doc.as_object().unwrap()))
            .unwrap();
    }

    fn task(ctx: &Ctx, id: &str) -> Doc {
        ctx.store.write(|tx| tx.get("tasks", id)).unwrap().unwrap()
    }

    fn body(v: Value) -> Req {
        Req {
            body: v.as_object().unwrap().clone(),
            lines: None,
            worker_header: None,
        }
    }

    fn lines(events: Vec<Value>) -> Req {
        Req {
            body: Map::new(),
            lines: Some(
                events
                    .into_iter()
                    .map(|e| e.as_object().unwrap().clone())
                    .collect(),
            ),
            worker_header: Some("host:0".into()),
        }
    }

    fn run(ctx: &Ctx, action: &str, req: &Req) -> Result<Value, ApiError> {
        call(ctx, action, req).expect("known action")
    }

    fn ok(ctx: &Ctx, action: &str, req: Req) -> Value {
        run(ctx, action, &req).unwrap()
    }

    fn err(ctx: &Ctx, action: &str, req: Req) -> (u16, u32) {
        let e = run(ctx, action, &req).unwrap_err();
        (e.code, e.subcode)
    }

    fn scalar(task: &str, metric: &str, variant: &str, iter: i64, value: f64, ts: i64) -> Value {
        json!({"type": "training_stats_scalar", "task": task, "metric": metric,
               "variant": variant, "iter": iter, "value": value, "timestamp": ts,
               "method": "get", "allow_locked": false, "model_event": false})
    }

    fn log(task: &str, msg: &str, ts: i64) -> Value {
        json!({"type": "log", "task": task, "level": "info", "msg": msg, "timestamp": ts})
    }

    #[test]
    fn add_batch_counts_errors_and_keeps_last_metrics() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t1", "in_progress");
        let r = ok(
            &ctx,
            "add_batch",
            lines(vec![
                scalar("t1", "loss", "train", 1, 5.0, 1000),
                scalar("t1", "loss", "train", 2, 3.0, 2000),
                scalar("t1", "loss", "train", 3, 4.0, 3000),
                scalar("nope", "loss", "train", 3, 4.0, 3000),
                json!({"type": "bogus", "task": "t1"}),
                json!({"type": "log", "task": "t1", "msg": "hi", "iter": "7"}),
            ]),
        );
        assert_eq!(r["added"], 4);
        assert_eq!(r["errors"], 2);
        assert_eq!(r["errors_info"]["Invalid task id nope"], 1);
        assert_eq!(r["errors_info"]["Invalid event type bogus"], 1);

        let t = task(&ctx, "t1");
        assert_eq!(t["last_iteration"], 7);
        assert!(t["last_update"].is_string());
        let m = &t["last_metrics"][md5_hex("loss")][md5_hex("train")];
        assert_eq!(m["metric"], "loss");
        assert_eq!(m["variant"], "train");
        assert_eq!(m["value"], 4.0);
        assert_eq!(m["min_value"], 3.0);
        assert_eq!(m["min_value_iteration"], 2);
        assert_eq!(m["max_value"], 5.0);
        assert_eq!(m["max_value_iteration"], 1);
        assert_eq!(m["first_value"], 5.0);
        assert_eq!(m["first_value_iteration"], 1);
        assert_eq!(m["count"], 3);
        assert_eq!(m["mean_value"], 4.0);

        // A second batch moves min/max outward only and keeps the running mean.
        ok(
            &ctx,
            "add_batch",
            lines(vec![
                scalar("t1", "loss", "train", 4, 1.0, 4000),
                scalar("t1", "loss", "train", 5, 4.5, 5000),
            ]),
        );
        let t = task(&ctx, "t1");
        let m = &t["last_metrics"][md5_hex("loss")][md5_hex("train")];
        assert_eq!(m["value"], 4.5);
        assert_eq!(m["min_value"], 1.0);
        assert_eq!(m["min_value_iteration"], 4);
        assert_eq!(m["max_value"], 5.0);
        assert_eq!(m["first_value"], 5.0);
        assert_eq!(m["count"], 5);
        assert_eq!(m["mean_value"], 3.5);
        assert_eq!(t["last_iteration"], 7);

        // Stored events are normalised: worker from the header, iter an int, no transport keys.
        let events = ctx.store.write(|tx| tx.events("t1", Some("log"))).unwrap();
        assert_eq!(events[0]["iter"], 7);
        assert_eq!(events[0]["worker"], "host:0");
        assert!(events[0]["timestamp"].is_i64());
        let scalars = ctx.store.write(|tx| tx.events("t1", Some(SCALAR))).unwrap();
        assert!(scalars[0].get("method").is_none());
        assert!(scalars[0].get("allow_locked").is_none());
    }

    #[test]
    fn a_resent_log_batch_is_stored_once() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        let batch = vec![
            log("t", "same", 5),
            log("t", "same", 5),
            log("t", "other", 6),
        ];
        // The sender's own repeats within one request are all kept...
        assert_eq!(ok(&ctx, "add_batch", lines(batch.clone()))["added"], 3);
        // ...and sending the very same request again adds nothing.
        assert_eq!(ok(&ctx, "add_batch", lines(batch))["added"], 3);
        let events = ctx.store.write(|tx| tx.events("t", Some("log"))).unwrap();
        assert_eq!(events.len(), 3);
        // A line with a new timestamp is new.
        ok(&ctx, "add_batch", lines(vec![log("t", "same", 7)]));
        let events = ctx.store.write(|tx| tx.events("t", Some("log"))).unwrap();
        assert_eq!(events.len(), 4);
    }

    #[test]
    fn add_batch_refusals() {
        let (_d, ctx) = setup();
        put_task(&ctx, "pub", "published");
        assert_eq!(err(&ctx, "add_batch", lines(vec![])), (400, 17));
        assert_eq!(
            err(&ctx, "add_batch", lines(vec![log("missing", "x", 1)])),
            (400, 131)
        );
        // Published tasks take events only with allow_locked.
        assert_eq!(
            err(&ctx, "add_batch", lines(vec![log("pub", "x", 1)])),
            (400, 131)
        );
        let mut ev = log("pub", "x", 1);
        ev["allow_locked"] = json!(true);
        assert_eq!(ok(&ctx, "add_batch", lines(vec![ev.clone()]))["added"], 1);
        // One batch may not say both for one task.
        assert_eq!(
            err(&ctx, "add_batch", lines(vec![ev, log("pub", "y", 2)])),
            (400, 12)
        );
        // `events.add` takes one event as the body.
        put_task(&ctx, "t", "created");
        let r = ok(&ctx, "add", body(log("t", "single", 5)));
        assert_eq!(r, json!({"added": 1, "errors": 0, "errors_info": {}}));
    }

    fn page(
        ctx: &Ctx,
        batch: i64,
        earlier: bool,
        from: Option<i64>,
        order: Option<&str>,
    ) -> Vec<(String, i64)> {
        let mut b = json!({"task": "t", "batch_size": batch, "navigate_earlier": earlier});
        if let Some(f) = from {
            b["from_timestamp"] = json!(f);
        }
        if let Some(o) = order {
            b["order"] = json!(o);
        }
        let r = ok(ctx, "get_task_log", body(b));
        assert_eq!(
            r["returned"].as_u64().unwrap() as usize,
            r["events"].as_array().unwrap().len()
        );
        r["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["msg"].as_str().unwrap().to_string(),
                    e["timestamp"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn task_log_pages_cover_everything_once_in_both_directions() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        // 25 lines; several share a timestamp so page ends fall inside a group.
        let events: Vec<Value> = (0..25)
            .map(|i| log("t", &format!("line {i:02}"), 1000 + (i / 3) * 10))
            .collect();
        ok(&ctx, "add_batch", lines(events));

        let r = ok(
            &ctx,
            "get_task_log",
            body(json!({"task": "t", "batch_size": 4})),
        );
        assert_eq!(r["total"], 25);

        // Newest first, paging back with the oldest timestamp seen.
        let mut seen = Vec::new();
        let mut from = None;
        loop {
            let p = page(&ctx, 4, true, from, None);
            if p.is_empty() {
                break;
            }
            assert!(p.windows(2).all(|w| w[0].1 >= w[1].1), "descending page");
            from = p.last().map(|e| e.1);
            seen.extend(p);
        }
        let mut msgs: Vec<String> = seen.iter().map(|e| e.0.clone()).collect();
        assert_eq!(msgs.len(), 25);
        msgs.sort();
        msgs.dedup();
        assert_eq!(msgs.len(), 25);

        // Oldest first, paging forward.
        let mut seen = Vec::new();
        let mut from = None;
        loop {
            let p = page(&ctx, 4, false, from, None);
            if p.is_empty() {
                break;
            }
            from = p.last().map(|e| e.1);
            seen.extend(p);
        }
        let msgs: Vec<String> = seen.iter().map(|e| e.0.clone()).collect();
        let expected: Vec<String> = (0..25).map(|i| format!("line {i:02}")).collect();
        assert_eq!(msgs, expected);

        // The SDK's get_reported_console_output: the newest lines, oldest first. Line 24 is
        // alone at its timestamp; batch 2 ends inside the group of lines 21-23, which comes
        // back whole.
        let p = page(&ctx, 1, true, None, Some("asc"));
        assert_eq!(p, vec![("line 24".to_string(), 1080)]);
        let p = page(&ctx, 2, true, None, Some("asc"));
        assert_eq!(
            p.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            vec!["line 21", "line 22", "line 23", "line 24"]
        );
        // Oldest first asked in descending order comes reversed.
        let p = page(&ctx, 3, false, None, Some("desc"));
        assert_eq!(
            p.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            vec!["line 02", "line 01", "line 00"]
        );

        assert_eq!(
            err(&ctx, "get_task_log", body(json!({"task": "nope"}))),
            (400, 101)
        );
    }

    #[test]
    fn task_events_scroll() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        let events: Vec<Value> = (0..7)
            .map(|i| scalar("t", "m", "v", i, i as f64, 100 + i))
            .chain([log("t", "x", 50)])
            .collect();
        ok(&ctx, "add_batch", lines(events));
        // Re-reporting an iteration replaces it.
        ok(
            &ctx,
            "add_batch",
            lines(vec![scalar("t", "m", "v", 3, 33.0, 200)]),
        );

        let mut scroll: Option<String> = None;
        let mut iters = Vec::new();
        loop {
            let mut b = json!({"task": "t", "event_type": SCALAR, "batch_size": 3});
            if let Some(s) = &scroll {
                b["scroll_id"] = json!(s);
            }
            let r = ok(&ctx, "get_task_events", body(b));
            assert_eq!(r["total"], 7);
            let evs = r["events"].as_array().unwrap();
            if evs.is_empty() {
                break;
            }
            for e in evs {
                iters.push((e["iter"].as_i64().unwrap(), e["value"].as_f64().unwrap()));
            }
            scroll = Some(r["scroll_id"].as_str().unwrap().to_string());
        }
        assert_eq!(
            iters.iter().map(|i| i.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(iters[3].1, 33.0);

        let r = ok(
            &ctx,
            "get_task_events",
            body(json!({"task": "t", "order": "desc"})),
        );
        assert_eq!(r["total"], 8);
        assert_eq!(r["events"][0]["iter"], 6);
        // The log line has no iteration and sorts last.
        assert_eq!(r["events"][7]["type"], "log");
        assert_eq!(
            err(
                &ctx,
                "get_task_events",
                body(json!({"task": "t", "scroll_id": "!!"}))
            ),
            (400, 1104)
        );
    }

    #[test]
    fn histogram_shape_sampling_and_single_values() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        let mut events: Vec<Value> = (0..10)
            .map(|i| scalar("t", "loss", "train", i, i as f64, 1000 + i))
            .collect();
        events.push(scalar("t", "acc", "val", 0, 0.5, 1000));
        events.push(scalar("t", "Summary", "best", SINGLE_VALUE_ITER, 0.9, 1234));
        let mut labelled = scalar("t", "acc", "val", 1, 0.7, 1001);
        labelled["x_axis_label"] = json!("epoch");
        events.push(labelled);
        ok(&ctx, "add_batch", lines(events));

        let r = ok(
            &ctx,
            "scalar_metrics_iter_histogram",
            body(json!({"task": "t", "key": "iter", "model_events": false})),
        );
        assert_eq!(
            r["loss"]["train"],
            json!({"name": "train", "x": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
                   "y": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]})
        );
        assert_eq!(r["acc"]["val"]["x"], json!([0, 1]));
        assert_eq!(r["acc"]["val"]["x_axis_label"], "epoch");
        assert!(r.get("Summary").is_none(), "single values are not series");
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["acc", "loss"]);

        // 10 points into at most 5: buckets of 2 iterations, averaged.
        let r = ok(
            &ctx,
            "scalar_metrics_iter_histogram",
            body(json!({"task": "t", "samples": 5})),
        );
        assert_eq!(r["loss"]["train"]["x"], json!([0, 2, 4, 6, 8]));
        assert_eq!(r["loss"]["train"]["y"], json!([0.5, 2.5, 4.5, 6.5, 8.5]));

        let r = ok(
            &ctx,
            "scalar_metrics_iter_histogram",
            body(json!({"task": "t", "key": "iso_time"})),
        );
        assert_eq!(r["acc"]["val"]["x"][0], "1970-01-01T00:00:01.000Z");

        let r = ok(
            &ctx,
            "get_task_single_value_metrics",
            body(json!({"tasks": ["t"]})),
        );
        assert_eq!(
            r,
            json!({"tasks": [{"task": "t", "task_name": "task t", "values": [
                {"metric": "Summary", "variant": "best", "value": 0.9, "timestamp": 1234}]}]})
        );
        // Single values do not move last_iteration below the regular ones.
        assert_eq!(task(&ctx, "t")["last_iteration"], 9);

        let r = ok(
            &ctx,
            "get_scalar_metrics_and_variants",
            body(json!({"task": "t"})),
        );
        assert_eq!(r["metrics"]["loss"], json!(["train"]));
        let r = ok(
            &ctx,
            "get_task_metrics",
            body(json!({"tasks": ["t"], "event_type": SCALAR})),
        );
        assert_eq!(r["metrics"][0]["metrics"], json!(["acc", "loss"]));
        let r = ok(
            &ctx,
            "multi_task_scalar_metrics_iter_histogram",
            body(json!({"tasks": "t"})),
        );
        assert_eq!(r["metrics"]["acc"]["val"]["t"]["name"], "task t");
        assert_eq!(
            err(
                &ctx,
                "get_task_single_value_metrics",
                body(json!({"tasks": ["t", "x"]}))
            ),
            (400, 101)
        );
    }

    #[test]
    fn plots_and_debug_images() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        let plot = |iter: i64, variant: &str, s: &str| {
            json!({"type": "plot", "task": "t", "iter": iter, "metric": "conf",
                   "variant": variant, "plot_str": s})
        };
        ok(
            &ctx,
            "add_batch",
            lines(vec![
                plot(0, "a", "{}"),
                plot(1, "a", "{\"x\":1}"),
                plot(1, "b", "{}"),
            ]),
        );
        // The same iteration again replaces the plot.
        ok(&ctx, "add_batch", lines(vec![plot(1, "a", "{\"x\":2}")]));
        let r = ok(
            &ctx,
            "get_task_plots",
            body(json!({"task": "t", "iters": 1, "no_scroll": true})),
        );
        assert_eq!(r["returned"], 2);
        assert_eq!(r["plots"][0]["plot_str"], "{\"x\":2}");
        assert_eq!(r["plots"][0]["plot_len"], 7);
        assert_eq!(r["plots"][1]["variant"], "b");
        let r = ok(
            &ctx,
            "get_multi_task_plots",
            body(json!({"tasks": ["t"], "iters": 2})),
        );
        assert_eq!(r["plots"]["conf"]["a"]["t"]["0"]["name"], "task t");
        assert_eq!(r["total"], 3);

        // Images: iterations 0..5, file names recycled every 3 iterations.
        let image = |iter: i64| {
            json!({"type": "training_debug_image", "task": "t", "iter": iter, "metric": "img",
                   "variant": "v", "key": format!("img_{}", iter % 3),
                   "url": format!("http://files/img_{}.png", iter % 3)})
        };
        ok(&ctx, "add_batch", lines((0..6).map(image).collect()));
        let req = |scroll: Option<&str>| {
            let mut b = json!({"metrics": [{"task": "t", "metric": "img", "variants": ["v"]}],
                               "iters": 2});
            if let Some(s) = scroll {
                b["scroll_id"] = json!(s);
            }
            body(b)
        };
        let r = ok(&ctx, "debug_images", req(None));
        let iters: Vec<i64> = r["metrics"][0]["iterations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["iter"].as_i64().unwrap())
            .collect();
        assert_eq!(iters, vec![5, 4]);
        assert_eq!(r["metrics"][0]["task"], "t");
        assert_eq!(
            r["metrics"][0]["iterations"][0]["events"][0]["url"],
            "http://files/img_2.png"
        );
        // Next page: iteration 3 only, since 0..2 show recycled files.
        let r = ok(&ctx, "debug_images", req(r["scroll_id"].as_str()));
        let iters: Vec<i64> = r["metrics"][0]["iterations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["iter"].as_i64().unwrap())
            .collect();
        assert_eq!(iters, vec![3]);
        // Then nothing: the SDK stops on a page without iterations.
        let r = ok(&ctx, "debug_images", req(r["scroll_id"].as_str()));
        assert_eq!(r["metrics"][0]["iterations"], json!([]));
        assert_eq!(
            err(
                &ctx,
                "debug_images",
                body(json!({"metrics": [{"task": "zz"}]}))
            ),
            (400, 101)
        );
    }

    #[test]
    fn delete_and_clear() {
        let (_d, ctx) = setup();
        put_task(&ctx, "t", "in_progress");
        ok(
            &ctx,
            "add_batch",
            lines(vec![
                log("t", "a", 1),
                log("t", "b", now_ms()),
                scalar("t", "m", "v", 1, 1.0, 1),
            ]),
        );
        let r = ok(
            &ctx,
            "clear_task_log",
            body(json!({"task": "t", "threshold_sec": 3600})),
        );
        assert_eq!(r["deleted"], 1);
        let r = ok(&ctx, "get_task_log", body(json!({"task": "t"})));
        assert_eq!(r["events"][0]["msg"], "b");
        assert_eq!(
            ok(&ctx, "delete_for_task", body(json!({"task": "t"})))["deleted"],
            2
        );
        assert_eq!(
            ok(&ctx, "get_task_events", body(json!({"task": "t"})))["total"],
            0
        );
        put_task(&ctx, "p", "published");
        assert_eq!(
            err(&ctx, "delete_for_task", body(json!({"task": "p"}))),
            (400, 101)
        );
        assert!(call(&ctx, "no_such_action", &body(json!({}))).is_none());
    }
}
