//! Console lines and raw events: `get_task_log`, `get_task_events`, `get_scalar_metric_data`.

use super::*;

/// `get_task_log` (2.9+): a page of console lines next to `from_timestamp`.
///
/// With `navigate_earlier` (the default) the page holds the `batch_size` lines just before
/// `from_timestamp` (or the newest ones), newest first; otherwise the lines just after it (or the
/// oldest), oldest first. `order` flips a page when it asks for the other direction. Every line
/// sharing the timestamp of the page's far end is included even past `batch_size`, so paging on
/// with that timestamp (which excludes it) loses nothing and repeats nothing, and lines are
/// never split between pages.
pub(super) fn get_task_log(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
    let task = req.str("task")?;
    owner_doc(tx, task, false)?;
    // Capped as the real server caps it: one call must not hold the database thread for long.
    let batch_size = req
        .i64_opt("batch_size")?
        .unwrap_or(5000)
        .clamp(0, MAX_EVENTS_BATCH) as usize;
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
pub(super) type EvKey = (Option<i64>, i64, usize);

pub(super) fn ev_key(e: &Ev) -> EvKey {
    (iter_of(&e.doc), ts_of(&e.doc), e.seq)
}

pub(super) fn cmp_keys(a: &EvKey, b: &EvKey, desc: bool) -> Ordering {
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

pub(super) fn key_from_json(v: &Value) -> Option<EvKey> {
    let a = v.as_array().filter(|a| a.len() == 3)?;
    let iter = match &a[0] {
        Value::Null => None,
        other => Some(other.as_i64()?),
    };
    Some((iter, a[1].as_i64()?, usize::try_from(a[2].as_u64()?).ok()?))
}

/// `get_task_events`: every event of a task, `batch_size` at a time. The scroll id carries the
/// sort key of the last event returned and the total counted on the first page.
pub(super) fn get_task_events(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
pub(super) fn scalar_metric_data(tx: &mut Tx<'_>, req: &Req) -> Result<Value, ApiError> {
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
