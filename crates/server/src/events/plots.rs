//! Plots and debug images: the latest per variant, and the sample navigator.

use super::*;

pub(super) fn iters_arg(req: &Req) -> Result<usize, ApiError> {
    Ok(req.i64_opt("iters")?.unwrap_or(1).max(1) as usize)
}

/// The newest `iters` events of each (metric, variant), metrics and variants sorted by name.
pub(super) fn latest_per_variant(events: Vec<Ev>, iters: usize) -> Vec<Ev> {
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
pub(super) fn get_task_plots(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn get_multi_task_plots(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn recycled_iterations(events: &[&Ev]) -> HashMap<(String, String), i64> {
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
pub(super) fn metric_samples(tx: &mut Tx<'_>, req: &Req, kind: &str) -> Result<Value, ApiError> {
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
