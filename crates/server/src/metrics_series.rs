//! The statistics time series the real server keeps in Elasticsearch, kept here in memory
//! with a retention limit, and the endpoints that read them:
//! - queue samples (`queues.get_queue_metrics`): after every call that can change a queue,
//!   and once a minute, each queue's length and the average time its entries have waited;
//! - worker samples (`workers.get_stats`, `workers.get_activity_report`,
//!   `workers.get_metric_keys`): every `workers.status_report`, one value per machine-stats
//!   field (lists per GPU/core as variants `0`, `1`, ..., scalars as `total`), and whether
//!   the worker was running a task.
//!
//! Aggregation follows the real server: fixed intervals aligned to the epoch, dates in epoch
//! milliseconds; queue buckets keep the sample with the longest average wait, worker buckets
//! give avg/min/max, the activity report counts distinct workers (those with a task for
//! `active`) and drops the last bucket when it is still incomplete. Like the worker registry,
//! the series do not survive a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, now_ms};

/// Samples older than this are dropped.
pub const RETENTION_MS: i64 = 7 * 24 * 3600 * 1000;
/// And at most this many of each kind are kept (the oldest go first).
pub const MAX_SAMPLES: usize = 1_000_000;
/// `queues.get_queue_metrics` also looks this far before `from_date` (the real default), so a
/// quiet queue still has its last known state.
const QUEUE_LOOKBACK_MS: i64 = 3600 * 1000;

/// Endpoints that can change what is in a queue: a queue sample follows each of them.
pub fn changes_queues(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "queues.create"
            | "queues.delete"
            | "queues.add_task"
            | "queues.remove_task"
            | "queues.get_next_task"
            | "queues.clear_queue"
            | "queues.move_task_to_front"
            | "queues.move_task_to_back"
            | "queues.move_task_forward"
            | "queues.move_task_backward"
            | "tasks.enqueue"
            | "tasks.enqueue_many"
            | "tasks.dequeue"
            | "tasks.dequeue_many"
            | "tasks.stop"
            | "tasks.stop_many"
            | "tasks.reset"
            | "tasks.reset_many"
            | "tasks.delete"
            | "tasks.delete_many"
            | "tasks.archive"
            | "tasks.archive_many"
            | "tasks.started"
            | "tasks.failed"
            | "tasks.completed"
    )
}

#[derive(Clone, Debug)]
struct QueueSample {
    ts: i64,
    queue: String,
    length: usize,
    avg_wait_sec: f64,
}

#[derive(Clone, Debug)]
struct WorkerSample {
    ts: i64,
    worker: String,
    metric: String,
    variant: String,
    value: f64,
}

#[derive(Default)]
struct Inner {
    queues: VecDeque<QueueSample>,
    workers: VecDeque<WorkerSample>,
    /// One entry per report (for the activity report), even when it carried no machine stats.
    reports: VecDeque<(i64, String, bool)>,
}

/// The series of one server.
#[derive(Default)]
pub struct Series {
    inner: Mutex<Inner>,
}

fn prune<T>(q: &mut VecDeque<T>, ts: impl Fn(&T) -> i64, now: i64) {
    while q.len() > MAX_SAMPLES || q.front().is_some_and(|s| now - ts(s) > RETENTION_MS) {
        q.pop_front();
    }
}

impl Series {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Samples every queue now (length and average wait of its entries).
    pub fn sample_queues(&self, ctx: &Ctx) {
        let queues = match ctx.store.write(|tx| tx.all("queues")) {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!("queue metrics: cannot read the queues: {e}");
                return;
            }
        };
        let now = now_ms();
        let mut inner = self.lock();
        for q in queues {
            let Some(id) = q.get("id").and_then(Value::as_str) else {
                continue;
            };
            let added: Vec<i64> = q
                .get("entries")
                .and_then(Value::as_array)
                .map(|e| {
                    e.iter()
                        .filter_map(|e| e.get("added").and_then(Value::as_str))
                        .filter_map(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
                        .map(|a| a.timestamp_millis())
                        .collect()
                })
                .unwrap_or_default();
            let avg_wait_sec = if added.is_empty() {
                0.0
            } else {
                added.iter().map(|a| (now - a).max(0) as f64).sum::<f64>()
                    / added.len() as f64
                    / 1000.0
            };
            inner.queues.push_back(QueueSample {
                ts: now,
                queue: id.to_string(),
                length: added.len(),
                avg_wait_sec,
            });
        }
        prune(&mut inner.queues, |s| s.ts, now);
    }

    /// Records one `workers.status_report`.
    pub fn record_worker(
        &self,
        worker: &str,
        timestamp_ms: Option<i64>,
        has_task: bool,
        machine_stats: Option<&Map<String, Value>>,
    ) {
        let now = now_ms();
        // The report's own time, as the real server uses, unless the client's clock is off by
        // more than a day.
        let ts = timestamp_ms
            .filter(|t| (t - now).abs() < 24 * 3600 * 1000)
            .unwrap_or(now);
        let mut inner = self.lock();
        inner.reports.push_back((ts, worker.to_string(), has_task));
        for (metric, value) in machine_stats.into_iter().flatten() {
            let mut push = |variant: String, v: f64| {
                inner.workers.push_back(WorkerSample {
                    ts,
                    worker: worker.to_string(),
                    metric: metric.clone(),
                    variant,
                    value: v,
                })
            };
            match value {
                Value::Array(items) => {
                    for (i, v) in items.iter().enumerate() {
                        if let Some(v) = v.as_f64() {
                            push(i.to_string(), v);
                        }
                    }
                }
                // The real server skips zero and empty values.
                v => {
                    if let Some(v) = v.as_f64().filter(|v| *v != 0.0) {
                        push("total".into(), v);
                    }
                }
            }
        }
        prune(&mut inner.workers, |s| s.ts, now);
        prune(&mut inner.reports, |s| s.0, now);
    }
}

/// `from_date`/`to_date` (epoch seconds, fractions allowed) and `interval` (seconds).
fn range(req: &Req) -> Result<(i64, i64, i64), ApiError> {
    let seconds = |field: &str| -> Result<f64, ApiError> {
        match req.get(field) {
            Some(v) => v
                .as_f64()
                .ok_or_else(|| ApiError::validation(format!("field {field} must be a number"))),
            None => Err(ApiError::missing_field(field)),
        }
    };
    let from = (seconds("from_date")? * 1000.0) as i64;
    let to = (seconds("to_date")? * 1000.0) as i64;
    if from >= to {
        return Err(ApiError::new(
            400,
            1,
            "Invalid fields value (from_date must be less than to_date)",
        ));
    }
    let interval = req
        .i64_opt("interval")?
        .ok_or_else(|| ApiError::missing_field("interval"))?
        .max(1)
        * 1000;
    Ok((from, to, interval))
}

fn bucket(ts: i64, interval: i64) -> i64 {
    ts.div_euclid(interval) * interval
}

/// Every bucket key from `from` to `to` (the real server's `extended_bounds`).
fn all_buckets(from: i64, to: i64, interval: i64) -> Vec<i64> {
    let mut out = Vec::new();
    let mut b = bucket(from, interval);
    while b <= to && out.len() < 100_000 {
        out.push(b);
        b += interval;
    }
    out
}

/// `queues.get_queue_metrics`.
pub fn queue_metrics(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let (from, to, interval) = range(req)?;
    let ids = req.str_list("queue_ids")?.unwrap_or_default();
    if req.bool_or("refresh", false)? {
        ctx.series.sample_queues(ctx);
    }
    // bucket -> queue -> (avg wait, length) of the sample with the longest wait
    let mut by_date: BTreeMap<i64, BTreeMap<String, (f64, usize)>> = BTreeMap::new();
    {
        let inner = ctx.series.lock();
        for s in &inner.queues {
            if s.ts < from - QUEUE_LOOKBACK_MS || s.ts > to {
                continue;
            }
            if !ids.is_empty() && !ids.contains(&s.queue) {
                continue;
            }
            let slot = by_date
                .entry(bucket(s.ts, interval))
                .or_default()
                .entry(s.queue.clone())
                .or_insert((s.avg_wait_sec, s.length));
            if (s.avg_wait_sec, s.length) > *slot {
                *slot = (s.avg_wait_sec, s.length);
            }
        }
    }
    let series = |points: Vec<(i64, f64, usize)>, queue: &str| {
        json!({
            "queue": queue,
            "dates": points.iter().map(|p| p.0).collect::<Vec<_>>(),
            "avg_waiting_times": points.iter().map(|p| p.1).collect::<Vec<_>>(),
            "queue_lengths": points.iter().map(|p| p.2).collect::<Vec<_>>(),
        })
    };
    if !ids.is_empty() {
        let mut per_queue: BTreeMap<String, Vec<(i64, f64, usize)>> = BTreeMap::new();
        for (date, queues) in &by_date {
            for (q, (wait, len)) in queues {
                per_queue
                    .entry(q.clone())
                    .or_default()
                    .push((*date, *wait, *len));
            }
        }
        let queues: Vec<Value> = ids
            .iter()
            .filter_map(|q| per_queue.remove(q).map(|p| series(p, q)))
            .collect();
        return Ok(json!({ "queues": queues }));
    }
    // No queues named: one `total` series, the length-weighted average wait over all queues,
    // a queue without a sample in a bucket counting with its previous one.
    let mut last: HashMap<String, (f64, usize)> = HashMap::new();
    let mut points = Vec::new();
    for (date, queues) in by_date {
        for (q, v) in queues {
            last.insert(q, v);
        }
        let total: usize = last.values().map(|v| v.1).sum();
        let avg = if total == 0 {
            0.0
        } else {
            last.values().map(|v| v.0 * v.1 as f64).sum::<f64>() / total as f64
        };
        points.push((date, avg, total));
    }
    if points.is_empty() {
        return Ok(json!({ "queues": [] }));
    }
    Ok(json!({ "queues": [series(points, "total")] }))
}

/// `workers.get_stats`.
pub fn worker_stats(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let (from, to, interval) = range(req)?;
    let worker_ids = req.str_list("worker_ids")?.unwrap_or_default();
    let split = req.bool_or("split_by_variant", false)?;
    let items = req
        .array("items")?
        .filter(|i| !i.is_empty())
        .ok_or_else(|| ApiError::missing_field("items"))?;
    // metric -> requested aggregations
    let mut wanted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for item in items {
        let key = item.get("key").and_then(Value::as_str);
        // avg when absent, as upstream (the SDK's StatItem drops the field when it serializes).
        let agg = match item.get("aggregation") {
            None | Some(Value::Null) => Some("avg"),
            Some(v) => v.as_str(),
        };
        match (key, agg) {
            (Some(k), Some(a)) if matches!(a, "avg" | "min" | "max") => {
                wanted
                    .entry(k.to_string())
                    .or_default()
                    .insert(a.to_string());
            }
            _ => {
                return Err(ApiError::validation(
                    "items must be {key, aggregation} with aggregation avg, min or max",
                ));
            }
        }
    }
    // worker -> metric -> variant ("" when not split) -> bucket -> values
    type Buckets = BTreeMap<i64, Vec<f64>>;
    let mut data: BTreeMap<String, BTreeMap<String, BTreeMap<String, Buckets>>> = BTreeMap::new();
    {
        let inner = ctx.series.lock();
        for s in &inner.workers {
            if s.ts < from || s.ts > to || !wanted.contains_key(&s.metric) {
                continue;
            }
            if !worker_ids.is_empty() && !worker_ids.contains(&s.worker) {
                continue;
            }
            let variant = if split {
                s.variant.clone()
            } else {
                String::new()
            };
            data.entry(s.worker.clone())
                .or_default()
                .entry(s.metric.clone())
                .or_default()
                .entry(variant)
                .or_default()
                .entry(bucket(s.ts, interval))
                .or_default()
                .push(s.value);
        }
    }
    // The point of the last, incomplete interval is left out (10% tolerance), as upstream.
    let cutoff = to - interval * 9 / 10;
    let dates: Vec<i64> = all_buckets(from, to, interval)
        .into_iter()
        .filter(|d| *d <= cutoff)
        .collect();
    let workers: Vec<Value> = data
        .into_iter()
        .map(|(worker, metrics)| {
            let mut out = Vec::new();
            for (metric, variants) in metrics {
                let aggs = wanted.get(&metric).cloned().unwrap_or_default();
                for (variant, buckets) in variants {
                    let stats: Vec<Value> = aggs
                        .iter()
                        .map(|agg| {
                            let values: Vec<f64> = dates
                                .iter()
                                .map(|d| aggregate(agg, buckets.get(d).map(Vec::as_slice)))
                                .collect();
                            json!({"aggregation": agg, "values": values})
                        })
                        .collect();
                    let mut m = json!({"metric": metric, "dates": dates, "stats": stats});
                    if split {
                        m["variant"] = json!(variant);
                    }
                    out.push(m);
                }
            }
            json!({"worker": worker, "metrics": out})
        })
        .collect();
    Ok(json!({ "workers": workers }))
}

fn aggregate(agg: &str, values: Option<&[f64]>) -> f64 {
    let Some(v) = values.filter(|v| !v.is_empty()) else {
        return 0.0;
    };
    match agg {
        "min" => v.iter().copied().fold(f64::INFINITY, f64::min),
        "max" => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        _ => v.iter().sum::<f64>() / v.len() as f64,
    }
}

/// `workers.get_activity_report`: distinct reporting workers per interval (`total`), and
/// those of them that were running a task (`active`).
pub fn activity_report(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let (from, to, interval) = range(req)?;
    let mut total: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    let mut active: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    {
        let inner = ctx.series.lock();
        for (ts, worker, has_task) in &inner.reports {
            if *ts < from || *ts > to {
                continue;
            }
            let b = bucket(*ts, interval);
            total.entry(b).or_default().insert(worker.clone());
            if *has_task {
                active.entry(b).or_default().insert(worker.clone());
            }
        }
    }
    let mut dates = all_buckets(from, to, interval);
    if dates.last().is_some_and(|d| *d > to - interval * 9 / 10) {
        dates.pop();
    }
    let counts = |m: &BTreeMap<i64, BTreeSet<String>>| -> Vec<usize> {
        dates
            .iter()
            .map(|d| m.get(d).map_or(0, BTreeSet::len))
            .collect()
    };
    Ok(json!({
        "total": {"dates": dates, "counts": counts(&total)},
        "active": {"dates": dates, "counts": counts(&active)},
    }))
}

/// `workers.get_metric_keys`: the machine-stats fields reported so far, by category (the part
/// of the name before the first `_`).
pub fn metric_keys(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let worker_ids = req.str_list("worker_ids")?.unwrap_or_default();
    let mut cats: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &ctx.series.lock().workers {
        if worker_ids.is_empty() || worker_ids.contains(&s.worker) {
            let cat = s.metric.split('_').next().unwrap_or_default().to_string();
            cats.entry(cat).or_default().insert(s.metric.clone());
        }
    }
    let categories: Vec<Value> = cats
        .into_iter()
        .map(|(name, keys)| json!({"name": name, "metric_keys": keys}))
        .collect();
    Ok(json!({ "categories": categories }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: Value) -> Req {
        Req {
            body: v.as_object().cloned().unwrap_or_default(),
            lines: None,
            bad_lines: Vec::new(),
            caller: None,
            worker_header: None,
        }
    }

    #[test]
    fn worker_stats_aggregate_per_interval() {
        let (_d, ctx) = crate::api::test_ctx();
        let now = now_ms();
        let t0 = bucket(now, 10_000) - 30_000;
        let stats = |cpu: f64| json!({"cpu_usage": [cpu, cpu * 2.0], "memory_used": 100});
        for (i, cpu) in [10.0, 30.0].into_iter().enumerate() {
            let s = stats(cpu);
            ctx.series
                .record_worker("w1", Some(t0 + i as i64 * 1000), true, s.as_object());
        }
        let s = stats(50.0);
        ctx.series
            .record_worker("w1", Some(t0 + 10_000), false, s.as_object());
        let r = req(json!({
            "from_date": t0 as f64 / 1000.0, "to_date": (t0 + 30_000) as f64 / 1000.0,
            "interval": 10, "items": [{"key": "cpu_usage", "aggregation": "avg"},
                                      {"key": "cpu_usage", "aggregation": "max"}],
        }));
        let out = worker_stats(&ctx, &r).expect("stats");
        let m = &out["workers"][0]["metrics"][0];
        assert_eq!(out["workers"][0]["worker"], "w1");
        assert_eq!(m["metric"], "cpu_usage");
        assert_eq!(m["dates"], json!([t0, t0 + 10_000, t0 + 20_000]));
        // not split by variant: both cores together
        assert_eq!(
            m["stats"][0],
            json!({"aggregation": "avg", "values": [30.0, 75.0, 0.0]})
        );
        assert_eq!(
            m["stats"][1],
            json!({"aggregation": "max", "values": [60.0, 100.0, 0.0]})
        );

        let r = req(
            json!({"from_date": t0 as f64 / 1000.0, "to_date": (t0 + 30_000) as f64 / 1000.0, "interval": 10}),
        );
        let a = activity_report(&ctx, &r).expect("activity");
        assert_eq!(a["total"]["counts"], json!([1, 1, 0]));
        assert_eq!(a["active"]["counts"], json!([1, 0, 0]));
    }

    #[test]
    fn queue_metrics_follow_the_queue() {
        let (_d, ctx) = crate::api::test_ctx();
        crate::queues::ensure_default(&ctx).expect("default queue");
        let qid = ctx
            .store
            .write(|tx| crate::queues::default_queue(tx))
            .expect("queue");
        ctx.series.sample_queues(&ctx);
        let now = now_ms() as f64 / 1000.0;
        let r = req(
            json!({"from_date": now - 60.0, "to_date": now + 60.0, "interval": 60, "queue_ids": [qid]}),
        );
        let out = queue_metrics(&ctx, &r).expect("metrics");
        assert_eq!(out["queues"][0]["queue"], json!(qid));
        assert_eq!(out["queues"][0]["queue_lengths"], json!([0]));
        let bad = req(json!({"from_date": now, "to_date": now - 1.0, "interval": 60}));
        assert!(queue_metrics(&ctx, &bad).is_err());
    }

    #[test]
    fn retention_drops_old_samples() {
        let series = Series::default();
        let now = now_ms();
        series.record_worker("w", Some(now - 2 * 3600 * 1000), false, None);
        assert_eq!(series.lock().reports.len(), 1);
        {
            let mut inner = series.lock();
            inner
                .reports
                .push_front((now - RETENTION_MS - 1, "old".into(), false));
        }
        series.record_worker("w", None, false, None);
        let inner = series.lock();
        assert_eq!(inner.reports.len(), 2);
        assert!(inner.reports.iter().all(|r| r.1 == "w"));
    }
}
