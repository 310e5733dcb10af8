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
        bad_lines: Vec::new(),
        caller: None,
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
        bad_lines: Vec::new(),
        caller: None,
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
fn lines_sharing_one_timestamp_are_told_apart_by_content() {
    let (_d, ctx) = setup();
    put_task(&ctx, "t", "in_progress");
    put_task(&ctx, "u", "in_progress");
    let first: Vec<Value> = (0..50).map(|i| log("t", &format!("a{i}"), 9)).collect();
    let second: Vec<Value> = (0..50).map(|i| log("t", &format!("b{i}"), 9)).collect();
    ok(&ctx, "add_batch", lines(first.clone()));
    ok(&ctx, "add_batch", lines(second));
    // The same line in another task is that task's own.
    ok(&ctx, "add_batch", lines(vec![log("u", "a0", 9)]));
    ok(&ctx, "add_batch", lines(first));
    let count = |task: &str| {
        ctx.store
            .write(|tx| tx.events(task, Some("log")))
            .unwrap()
            .len()
    };
    assert_eq!((count("t"), count("u")), (100, 1));
    // Deleting a task's events forgets its lines: they can be stored again.
    ctx.store.write(|tx| tx.delete_events("t")).unwrap();
    ok(&ctx, "add_batch", lines(vec![log("t", "a0", 9)]));
    assert_eq!(count("t"), 1);
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

#[test]
fn task_log_batch_size_is_capped_at_ten_thousand() {
    let (_d, ctx) = setup();
    put_task(&ctx, "t", "in_progress");
    // Distinct timestamps, so no group carries a page past its size.
    let events: Vec<Value> = (0..10_050)
        .map(|i| log("t", &format!("line {i}"), 1000 + i))
        .collect();
    ok(&ctx, "add_batch", lines(events));
    let r = ok(
        &ctx,
        "get_task_log",
        body(json!({"task": "t", "batch_size": 1_000_000})),
    );
    assert_eq!(r["total"], 10_050);
    assert_eq!(r["returned"], 10_000);
}
