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
//!
//! Layout: `write` (add, add_batch), `log` (console and raw events), `scalars`, `plots`,
//! `delete`; the read helpers they share live here.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, now_iso, now_ms};
use crate::store::{Doc, Tx};

mod delete;
mod log;
mod plots;
mod scalars;
mod write;

use delete::*;
use log::*;
use plots::*;
use scalars::*;
use write::*;

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
        "add" => add_events(
            ctx,
            vec![req.body.clone()],
            Vec::new(),
            req.worker_header.as_deref(),
        ),
        "add_batch" => batch_items(req).and_then(|events| {
            if events.is_empty() && req.bad_lines.is_empty() {
                return Err(ApiError::new(400, 17, "Batch request contains no items"));
            }
            // A line that is not JSON is one bad event: the others are still stored.
            let unreadable = req
                .bad_lines
                .iter()
                .map(|(i, e)| format!("invalid JSON in batch item #{i}: {e}"))
                .collect();
            add_events(ctx, events, unreadable, req.worker_header.as_deref())
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

#[cfg(test)]
mod tests;
