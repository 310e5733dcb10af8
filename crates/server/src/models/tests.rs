use serde_json::{Value, json};

use super::*;

fn setup() -> (tempfile::TempDir, Ctx) {
    crate::api::test_ctx()
}

fn put(ctx: &Ctx, kind: &str, doc: Value) {
    let id = doc["id"].as_str().unwrap().to_string();
    ctx.store
        .write(|tx| tx.put(kind, &id, doc.as_object().unwrap()))
        .unwrap();
}

fn get(ctx: &Ctx, kind: &str, id: &str) -> Option<Doc> {
    ctx.store.write(|tx| tx.get(kind, id)).unwrap()
}

fn put_task(ctx: &Ctx, id: &str, status: &str) {
    put(
        ctx,
        "tasks",
        json!({"id": id, "name": "my task", "status": status, "project": "p1",
                   "last_iteration": 0, "execution": {"framework": "PyTorch"},
                   "models": {"input": [], "output": []}}),
    );
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

fn ok(ctx: &Ctx, action: &str, v: Value) -> Value {
    call(ctx, action, &body(v)).expect("known action").unwrap()
}

fn err(ctx: &Ctx, action: &str, v: Value) -> (u16, u32) {
    let e = call(ctx, action, &body(v))
        .expect("known action")
        .unwrap_err();
    (e.code, e.subcode)
}

fn create(ctx: &Ctx, extra: Value) -> String {
    let mut b = json!({"uri": "http://files/uploading_file", "name": "Anonymous model",
                           "labels": {}, "ready": false, "public": false});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    let r = ok(ctx, "create", b);
    assert_eq!(r["created"], true);
    r["id"].as_str().unwrap().to_string()
}

#[test]
fn create_get_edit_update() {
    let (_d, ctx) = setup();
    put(&ctx, "projects", json!({"id": "p1", "name": "proj"}));
    put_task(&ctx, "t1", "in_progress");
    let id = create(&ctx, json!({"project": "p1"}));
    assert_eq!(id.len(), 32);

    let m = ok(&ctx, "get_by_id", json!({"model": id}))["model"].clone();
    assert_eq!(m["id"], id.as_str());
    assert_eq!(m["name"], "Anonymous model");
    assert_eq!(m["uri"], "http://files/uploading_file");
    assert_eq!(m["ready"], false);
    assert_eq!(m["project"], "p1");
    assert_eq!(m["company"], ctx.company());
    assert_eq!(m["user"], ctx.user());
    assert!(m["created"].is_string() && m["last_update"].is_string());
    assert!(m["design"].is_object() && m["labels"].is_object() && m["metadata"].is_object());
    assert!(m["tags"].is_array() && m["system_tags"].is_array());

    let r = ok(
        &ctx,
        "edit",
        json!({"model": id, "uri": "http://files/final.pt", "name": "w",
                   "comment": "Created by task id: t1", "framework": "PyTorch",
                   "design": {"design": ""}, "labels": {"cat": 1}, "task": "t1",
                   "iteration": 12}),
    );
    assert_eq!(r["updated"], 1);
    assert_eq!(r["fields"]["uri"], "http://files/final.pt");
    let m = get(&ctx, KIND, &id).unwrap();
    assert_eq!(m["task"], "t1");
    assert_eq!(m["design"], json!({"design": ""}));
    assert_eq!(m["labels"], json!({"cat": 1}));
    assert_eq!(get(&ctx, "tasks", "t1").unwrap()["last_iteration"], 12);

    let r = ok(
        &ctx,
        "update",
        json!({"model": id, "comment": "c2", "tags": ["b", "a"]}),
    );
    assert_eq!(r["updated"], 1);
    assert_eq!(get(&ctx, KIND, &id).unwrap()["tags"], json!(["a", "b"]));
    assert_eq!(ok(&ctx, "edit", json!({"model": id}))["updated"], 0);

    assert_eq!(err(&ctx, "get_by_id", json!({"model": "nope"})), (400, 201));
    assert_eq!(
        err(&ctx, "edit", json!({"model": "nope", "name": "abc"})),
        (400, 201)
    );
    assert_eq!(err(&ctx, "create", json!({"uri": "x"})), (400, 11));
    assert_eq!(err(&ctx, "create", json!({"name": "abcd"})), (400, 11));
    assert_eq!(
        err(&ctx, "create", json!({"name": "ab", "uri": ""})),
        (400, 12)
    );
    assert_eq!(
        err(
            &ctx,
            "create",
            json!({"name": "abc", "uri": "", "labels": {"a": "x"}})
        ),
        (400, 12)
    );
    assert_eq!(
        err(
            &ctx,
            "create",
            json!({"name": "abc", "uri": "", "project": "nope"})
        ),
        (400, 401)
    );
    assert_eq!(
        err(&ctx, "edit", json!({"model": id, "task": "nope"})),
        (400, 101)
    );
}

#[test]
fn get_all_filters_order_page_projection() {
    let (_d, ctx) = setup();
    put_task(&ctx, "t1", "in_progress");
    put_task(&ctx, "t2", "in_progress");
    let a = create(&ctx, json!({"name": "alpha", "task": "t1", "tags": ["x"]}));
    let b = create(&ctx, json!({"name": "beta", "task": "t1", "ready": true}));
    let c = create(&ctx, json!({"name": "gamma", "task": "t2"}));
    // Creation times differ by microseconds; make the order unambiguous.
    for (id, t) in [(&a, "2024-01-01"), (&b, "2024-01-02"), (&c, "2024-01-03")] {
        let mut m = get(&ctx, KIND, id).unwrap();
        m.insert(
            "created".into(),
            json!(format!("{t}T00:00:00.000000+00:00")),
        );
        put(&ctx, KIND, Value::Object(m));
    }
    let ids = |r: Value| -> Vec<String> {
        r["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_string())
            .collect()
    };
    // The SDK's task.get_models().
    let r = ok(
        &ctx,
        "get_all",
        json!({"task": ["t1"], "order_by": ["created"], "only_fields": ["id"]}),
    );
    assert_eq!(ids(r.clone()), vec![a.clone(), b.clone()]);
    assert_eq!(r["models"][0], json!({"id": a}));
    let r = ok(&ctx, "get_all", json!({"order_by": ["-created"]}));
    assert_eq!(ids(r), vec![c.clone(), b.clone(), a.clone()]);
    assert_eq!(
        ids(ok(&ctx, "get_all", json!({"name": "^b"}))),
        vec![b.clone()]
    );
    assert_eq!(
        ids(ok(&ctx, "get_all", json!({"ready": true}))),
        vec![b.clone()]
    );
    assert_eq!(
        ids(ok(&ctx, "get_all", json!({"tags": ["x"]}))),
        vec![a.clone()]
    );
    assert_eq!(
        ids(ok(&ctx, "get_all", json!({"tags": ["-x"]}))),
        vec![b.clone(), c.clone()]
    );
    assert_eq!(
        ids(ok(&ctx, "get_all", json!({"id": [c.clone()]}))),
        vec![c.clone()]
    );
    let r = ok(
        &ctx,
        "get_all",
        json!({"order_by": "name", "page": 1, "page_size": 2}),
    );
    assert_eq!(ids(r), vec![c.clone()]);
}

#[test]
fn set_ready_and_metadata() {
    let (_d, ctx) = setup();
    put_task(&ctx, "t1", "completed");
    let id = create(&ctx, json!({"task": "t1"}));
    // The SDK publishes without the task.
    let r = ok(
        &ctx,
        "set_ready",
        json!({"model": id, "publish_task": false}),
    );
    assert_eq!(r, json!({"updated": 1}));
    assert_eq!(get(&ctx, KIND, &id).unwrap()["ready"], true);
    assert_eq!(get(&ctx, "tasks", "t1").unwrap()["status"], "completed");
    assert_eq!(err(&ctx, "set_ready", json!({"model": id})), (400, 203));

    let id2 = create(&ctx, json!({"task": "t1"}));
    let r = ok(&ctx, "set_ready", json!({"model": id2}));
    assert_eq!(r["published_task"]["id"], "t1");
    assert_eq!(get(&ctx, "tasks", "t1").unwrap()["status"], "published");

    let r = ok(
        &ctx,
        "add_or_update_metadata",
        json!({"model": id, "metadata": [
                {"key": "epochs", "type": "int", "value": "10"},
                {"key": "lr", "type": "float", "value": "0.1"}]}),
    );
    assert_eq!(r, json!({"updated": 1}));
    let r = ok(
        &ctx,
        "add_or_update_metadata",
        json!({"model": id, "metadata": [{"key": "lr", "type": "float", "value": "0.2"}]}),
    );
    assert_eq!(r["updated"], 1);
    let m = get(&ctx, KIND, &id).unwrap();
    assert_eq!(
        m["metadata"]["epochs"],
        json!({"key": "epochs", "type": "int", "value": "10"})
    );
    assert_eq!(m["metadata"]["lr"]["value"], "0.2");
    ok(
        &ctx,
        "delete_metadata",
        json!({"model": id, "keys": ["epochs"]}),
    );
    let m = get(&ctx, KIND, &id).unwrap();
    assert_eq!(m["metadata"].as_object().unwrap().len(), 1);
    assert_eq!(
        err(
            &ctx,
            "add_or_update_metadata",
            json!({"model": id, "metadata": [{"key": "k"}]})
        ),
        (400, 11)
    );
    // Filter on metadata.
    let r = ok(&ctx, "get_all", json!({"metadata.lr.value": ["0.2"]}));
    assert_eq!(r["models"].as_array().unwrap().len(), 1);
}

#[test]
fn delete_rules() {
    let (_d, ctx) = setup();
    put_task(&ctx, "maker", "in_progress");
    let id = create(&ctx, json!({"task": "maker"}));
    let mut maker = get(&ctx, "tasks", "maker").unwrap();
    maker.insert(
        "models".into(),
        json!({"input": [], "output": [{"name": "w", "model": id}]}),
    );
    put(&ctx, "tasks", Value::Object(maker));
    put(
        &ctx,
        "tasks",
        json!({"id": "user", "name": "user task", "status": "created",
                   "models": {"input": [{"name": "in", "model": id}], "output": []}}),
    );

    assert_eq!(err(&ctx, "delete", json!({"model": id})), (400, 205));
    assert!(get(&ctx, KIND, &id).is_some());
    let r = ok(&ctx, "delete", json!({"model": id, "force": true}));
    assert_eq!(
        r,
        json!({"deleted": true, "url": "http://files/uploading_file"})
    );
    assert!(get(&ctx, KIND, &id).is_none());
    let user = get(&ctx, "tasks", "user").unwrap();
    assert_eq!(
        user["models"]["input"][0]["model"],
        format!("__DELETED__{id}")
    );
    let maker = get(&ctx, "tasks", "maker").unwrap();
    assert_eq!(maker["models"]["output"], json!([]));
    assert_eq!(err(&ctx, "delete", json!({"model": id})), (400, 201));

    // Batch form.
    let a = create(&ctx, json!({}));
    let r = ok(&ctx, "delete_many", json!({"ids": [a, "nope"]}));
    assert_eq!(r["succeeded"][0]["deleted"], true);
    assert_eq!(r["failed"][0]["id"], "nope");
    assert_eq!(r["failed"][0]["error"]["codes"], json!([400, 201]));
}

#[test]
fn update_for_task_creates_then_updates() {
    let (_d, ctx) = setup();
    put_task(&ctx, "t", "in_progress");
    let r = ok(
        &ctx,
        "update_for_task",
        json!({"task": "t", "uri": "s3://b/m1", "iteration": 3}),
    );
    assert_eq!(r["created"], true);
    let id = r["id"].as_str().unwrap().to_string();
    let m = get(&ctx, KIND, &id).unwrap();
    assert_eq!(m["name"], "my task");
    assert_eq!(m["framework"], "PyTorch");
    assert_eq!(m["project"], "p1");
    assert_eq!(m["task"], "t");
    assert_eq!(m["ready"], false);
    let t = get(&ctx, "tasks", "t").unwrap();
    assert_eq!(t["models"]["output"][0]["model"], id.as_str());
    assert_eq!(t["last_iteration"], 3);

    let r = ok(
        &ctx,
        "update_for_task",
        json!({"task": "t", "uri": "s3://b/m2"}),
    );
    assert_eq!(r["created"], false);
    assert_eq!(r["id"], id.as_str());
    assert_eq!(get(&ctx, KIND, &id).unwrap()["uri"], "s3://b/m2");
    assert_eq!(
        err(&ctx, "update_for_task", json!({"task": "t"})),
        (400, 11)
    );
    put_task(&ctx, "done", "completed");
    assert_eq!(
        err(&ctx, "update_for_task", json!({"task": "done", "uri": "x"})),
        (400, 110)
    );
    let r = ok(&ctx, "archive_many", json!({"ids": [id]}));
    assert_eq!(r["succeeded"][0], json!({"id": id, "archived": true}));
    assert_eq!(
        get(&ctx, KIND, &id).unwrap()["system_tags"],
        json!(["archived"])
    );
    assert!(call(&ctx, "no_such_action", &body(json!({}))).is_none());
}
