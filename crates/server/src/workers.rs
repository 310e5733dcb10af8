//! `workers.*` (server-api.md §6). Workers live in memory, like the real server's Redis keys:
//! they expire `register_timeout` seconds after their last report and re-register on their own.

use serde_json::{Value, json};

use crate::api::Ctx;
use crate::error::ApiError;
use crate::req::{Req, now_iso};
use crate::store::Doc;

pub fn call(ctx: &Ctx, action: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match action {
        "register" => register(ctx, req).map(|_| json!({})),
        "unregister" => req.str("worker").map(|w| {
            lock(ctx).remove(w);
            json!({})
        }),
        "status_report" => status_report(ctx, req),
        "get_all" => get_all(ctx, req),
        "get_count" => get_all(ctx, req).map(
            |v| json!({"count": v.get("workers").and_then(Value::as_array).map_or(0, Vec::len)}),
        ),
        "get_activity_report" => crate::metrics_series::activity_report(ctx, req),
        "get_stats" => crate::metrics_series::worker_stats(ctx, req),
        "get_metric_keys" => crate::metrics_series::metric_keys(ctx, req),
        // Enterprise-only: the open-source server has no such endpoint, and the Python agent
        // crashes on a 200 without `runtime_properties`, so answer as the OSS server does.
        "get_runtime_properties" => return None,
        _ => return None,
    };
    Some(r)
}

fn lock(ctx: &Ctx) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Doc>> {
    ctx.workers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A worker is alive while its last activity is within its timeout.
pub fn is_alive(w: &Doc, now: i64, default_timeout: i64) -> bool {
    let last = w
        .get("last_activity_epoch")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let timeout = w
        .get("register_timeout")
        .and_then(Value::as_i64)
        .unwrap_or(default_timeout);
    now - last <= timeout
}

/// `[{id, name}]` for queue ids that exist (400/701 for one that does not).
fn queue_refs(ctx: &Ctx, ids: &[String]) -> Result<Vec<Value>, ApiError> {
    ctx.store.write(|tx| {
        ids.iter()
            .map(|id| {
                let q = crate::queues::load(tx, id)?;
                Ok(json!({"id": id, "name": q.get("name").cloned().unwrap_or(Value::Null)}))
            })
            .collect()
    })
}

fn upsert(ctx: &Ctx, worker: &str, f: impl FnOnce(&mut Doc)) {
    let now = now_iso();
    let epoch = chrono::Utc::now().timestamp();
    let mut workers = lock(ctx);
    let w = workers.entry(worker.to_string()).or_insert_with(|| {
        let mut d = Doc::new();
        d.insert("id".into(), json!(worker));
        d.insert(
            "key".into(),
            json!(format!("worker_{}_{}", ctx.company(), worker)),
        );
        d.insert(
            "user".into(),
            json!({"id": ctx.user(), "name": ctx.auth.identity.user_name}),
        );
        d.insert(
            "company".into(),
            json!({"id": ctx.company(), "name": ctx.auth.identity.company_name}),
        );
        d.insert("register_time".into(), json!(now));
        d.insert("register_timeout".into(), json!(ctx.worker_timeout_sec));
        d.insert("queues".into(), json!([]));
        d.insert("tags".into(), json!([]));
        d.insert("system_tags".into(), json!([]));
        d
    });
    w.insert("last_activity_time".into(), json!(now));
    w.insert("last_activity_epoch".into(), json!(epoch));
    f(w);
}

fn register(ctx: &Ctx, req: &Req) -> Result<(), ApiError> {
    let worker = req.str("worker")?.to_string();
    let queues = queue_refs(ctx, &req.str_list("queues")?.unwrap_or_default())?;
    let timeout = req.i64_opt("timeout")?.filter(|t| *t > 0);
    let tags = req.str_list("tags")?;
    let system_tags = req.str_list("system_tags")?;
    upsert(ctx, &worker, |w| {
        w.insert("queues".into(), json!(queues));
        if let Some(t) = timeout {
            w.insert("register_timeout".into(), json!(t));
        }
        if let Some(t) = tags {
            w.insert("tags".into(), json!(t));
        }
        if let Some(t) = system_tags {
            w.insert("system_tags".into(), json!(t));
        }
    });
    Ok(())
}

fn status_report(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let worker = req.str("worker")?.to_string();
    if req.get("timestamp").is_none() {
        return Err(ApiError::missing_field("timestamp"));
    }
    req.i64_opt("timestamp")?;
    let queue_ids = req.str_list("queues")?;
    let queues = match &queue_ids {
        Some(ids) => Some(queue_refs(ctx, ids)?),
        None => None,
    };
    let queue = match req.opt_str("queue")?.filter(|q| !q.is_empty()) {
        Some(q) => queue_refs(ctx, &[q.to_string()])?.into_iter().next(),
        None => None,
    };
    // The task the worker runs: record it on the worker and keep the task fresh.
    let task = match req.opt_str("task")?.filter(|t| !t.is_empty()) {
        Some(task_id) => Some(ctx.store.write(|tx| {
            let mut t = crate::tasks::load(tx, task_id)?;
            let now = now_iso();
            t.insert("last_worker".into(), json!(worker));
            t.insert("last_worker_report".into(), json!(now));
            t.insert("last_update".into(), json!(now));
            crate::tasks::save(tx, &t)?;
            let project = match t.get("project").and_then(Value::as_str) {
                Some(p) => tx
                    .get("projects", p)?
                    .map(|p| json!({"id": p.get("id"), "name": p.get("name")})),
                None => None,
            };
            Ok((
                json!({
                    "id": task_id,
                    "name": t.get("name").cloned().unwrap_or(Value::Null),
                    "last_iteration": t.get("last_iteration").cloned().unwrap_or(json!(0)),
                }),
                project,
            ))
        })?),
        None => None,
    };
    let machine_stats = req.object("machine_stats")?.cloned();
    let timestamp = req.i64_opt("timestamp")?;
    ctx.series
        .record_worker(&worker, timestamp, task.is_some(), machine_stats.as_ref());
    let tags = req.str_list("tags")?;
    upsert(ctx, &worker, |w| {
        w.insert("last_report_time".into(), json!(now_iso()));
        if let Some(q) = queues {
            w.insert("queues".into(), json!(q));
        }
        match queue {
            Some(q) => w.insert("queue".into(), q),
            None => w.remove("queue"),
        };
        match task {
            Some((t, project)) => {
                w.insert("task".into(), t);
                match project {
                    Some(p) => w.insert("project".into(), p),
                    None => w.remove("project"),
                };
            }
            None => {
                w.remove("task");
                w.remove("project");
            }
        }
        if let Some(s) = machine_stats {
            w.insert("machine_stats".into(), Value::Object(s));
        }
        if let Some(t) = tags {
            w.insert("tags".into(), json!(t));
        }
    });
    Ok(json!({}))
}

fn get_all(ctx: &Ctx, req: &Req) -> Result<Value, ApiError> {
    let last_seen = req.i64_opt("last_seen")?.unwrap_or(3600);
    let pattern = req
        .opt_str("worker_pattern")?
        .map(crate::req::NameFilter::new);
    let now = chrono::Utc::now().timestamp();
    let mut workers = lock(ctx);
    workers.retain(|_, w| is_alive(w, now, ctx.worker_timeout_sec));
    let mut out: Vec<Value> = workers
        .values()
        .filter(|w| {
            let last = w
                .get("last_activity_epoch")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            last_seen == 0 || now - last <= last_seen
        })
        .filter(|w| {
            pattern
                .as_ref()
                .is_none_or(|p| p.is_match(w.get("id").and_then(Value::as_str).unwrap_or_default()))
        })
        .map(|w| {
            let mut w = w.clone();
            w.remove("last_activity_epoch");
            Value::Object(w)
        })
        .collect();
    out.sort_by(|a, b| {
        a.get("id")
            .and_then(Value::as_str)
            .cmp(&b.get("id").and_then(Value::as_str))
    });
    Ok(json!({ "workers": out }))
}
