//! Scalar and vector reads: histograms, metric lists, single values.

use super::*;

#[derive(Clone, Copy, PartialEq)]
pub(super) enum XKey {
    Iter,
    Timestamp,
    IsoTime,
}

pub(super) fn x_key(req: &Req) -> Result<XKey, ApiError> {
    match req.opt_str("key")? {
        None | Some("") | Some("iter") => Ok(XKey::Iter),
        Some("timestamp") => Ok(XKey::Timestamp),
        Some("iso_time") => Ok(XKey::IsoTime),
        Some(k) => Err(ApiError::validation(format!(
            "key must be one of iter, timestamp, iso_time, got {k}"
        ))),
    }
}

pub(super) fn samples(req: &Req) -> Result<usize, ApiError> {
    Ok(req
        .i64_opt("samples")?
        .unwrap_or(DEFAULT_SAMPLES)
        .clamp(1, MAX_SAMPLES) as usize)
}

/// The bucket width that keeps a series under `samples` points (`_build_metric_interval`).
pub(super) fn bucket_interval(points: &[(i64, f64)], samples: usize) -> i64 {
    if points.len() < samples {
        return 1;
    }
    let min = points.iter().map(|p| p.0).min().unwrap_or(0);
    let max = points.iter().map(|p| p.0).max().unwrap_or(min);
    let range = (i128::from(max) - i128::from(min) + 1) as f64;
    ((range / samples as f64).ceil() as i64).max(1)
}

pub(super) fn iso_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// `x_axis_label`s kept in an owner's `last_metrics`, by (metric, variant).
pub(super) fn x_axis_labels(owner: &Doc) -> HashMap<(String, String), Value> {
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
pub(super) type Points = Vec<(i64, f64)>;

/// `{metric: {variant: {name, x, y}}}`: each series averaged over equal-width buckets of the x
/// key so it has at most `samples` points, as the real server's histogram aggregation does.
/// Single values (iteration -2^31) are not series and are left out.
pub(super) fn histogram(
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

pub(super) fn scalar_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn multi_task_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn metrics_and_variants(
    tx: &mut Tx<'_>,
    req: &Req,
    kind: &str,
) -> Result<Value, ApiError> {
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
pub(super) fn vector_histogram(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn single_value_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn get_task_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn get_multi_task_metrics(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
