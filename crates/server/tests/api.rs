//! The API against a real server on a loopback port: envelope, auth, status machine, queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_server::{Credential, Server, ServerConfig};
use serde_json::{Value, json};

struct Api {
    base: String,
    token: String,
    http: reqwest::Client,
    _server: Server,
    _dir: tempfile::TempDir,
}

async fn start() -> Api {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.port = 0;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
    });
    let server = Server::start(config).await.expect("starts");
    let base = format!("http://{}", server.api_addr());
    let http = reqwest::Client::new();
    let login: Value = http
        .get(format!("{base}/auth.login"))
        .basic_auth("KEY", Some("SECRET"))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["data"]["token"].as_str().expect("token").to_string();
    Api {
        base,
        token,
        http,
        _server: server,
        _dir: dir,
    }
}

impl Api {
    /// Sends a call the way the Python clients do (GET with a JSON body); returns
    /// (HTTP status, envelope).
    async fn raw(&self, endpoint: &str, body: Value) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/{endpoint}", self.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("envelope"))
    }

    async fn ok(&self, endpoint: &str, body: Value) -> Value {
        let (status, env) = self.raw(endpoint, body).await;
        assert_eq!(status, 200, "{endpoint}: {env}");
        env["data"].clone()
    }

    async fn err(&self, endpoint: &str, body: Value) -> (u16, u64) {
        let (status, env) = self.raw(endpoint, body).await;
        assert_eq!(env["meta"]["result_code"], json!(status), "{env}");
        assert_eq!(env["data"], json!({}), "errors carry data: {{}}: {env}");
        (status, env["meta"]["result_subcode"].as_u64().unwrap_or(0))
    }

    async fn task(&self, name: &str) -> String {
        self.ok("tasks.create", json!({"name": name, "type": "training"}))
            .await["id"]
            .as_str()
            .expect("id")
            .to_string()
    }

    async fn status(&self, task: &str) -> String {
        self.ok("tasks.get_by_id", json!({ "task": task })).await["task"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    async fn default_queue(&self) -> String {
        self.ok("queues.get_default", json!({})).await["id"]
            .as_str()
            .expect("default queue")
            .to_string()
    }
}

#[tokio::test]
async fn token_claims_and_auth_errors() {
    let api = start().await;
    // The clients read these claims without verifying the signature.
    let payload = api.token.split('.').nth(1).expect("jwt");
    use base64::Engine as _;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("claims");
    assert_eq!(claims["api_version"], "2.31");
    assert_eq!(claims["feature_set"], "basic");
    assert!(
        claims["exp"].as_i64().expect("exp") - claims["iat"].as_i64().expect("iat") >= 29 * 86400
    );

    let r = api
        .http
        .get(format!("{}/tasks.get_all", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let env: Value = r.json().await.expect("json");
    assert_eq!(env["meta"]["result_subcode"], 20);
    let r = api
        .http
        .get(format!("{}/tasks.get_all", api.base))
        .bearer_auth("not-a-token")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    let r = api
        .http
        .get(format!("{}/auth.login", api.base))
        .basic_auth("KEY", Some("WRONG"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
    // Public endpoints need nothing.
    let r = api
        .http
        .get(format!("{}/debug.ping", api.base))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn bad_requests_get_envelope_errors_not_500() {
    let api = start().await;
    assert_eq!(
        api.err("tasks.get_by_id", json!({"task": "nope"})).await,
        (400, 101)
    );
    assert_eq!(api.err("tasks.get_by_id", json!({})).await, (400, 11));
    assert_eq!(
        api.err("tasks.get_by_id", json!({"task": 5})).await,
        (400, 12)
    );
    assert_eq!(
        api.err("tasks.create", json!({"name": ["x"]})).await,
        (400, 12)
    );
    assert_eq!(
        api.err("tasks.create", json!({"name": "x", "type": "bogus"}))
            .await,
        (400, 12)
    );
    assert_eq!(
        api.err("queues.get_by_id", json!({"queue": "default"}))
            .await,
        (400, 701)
    );
    assert_eq!(api.err("no.such_endpoint", json!({})).await, (404, 0));
    for garbage in ["{not json", "[1,2]", "\"str\""] {
        let r = api
            .http
            .post(format!("{}/tasks.create", api.base))
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body(garbage)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status().as_u16(), 400, "{garbage}");
        let env: Value = r.json().await.expect("envelope");
        assert_eq!(env["data"], json!({}));
    }
    let r = api
        .http
        .get(format!("{}/v2.23/events.add_batch", api.base))
        .bearer_auth(&api.token)
        .header("content-type", "application/json-lines")
        .body("{\"type\":\"log\"}\nnot json\n")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 400);
}

#[tokio::test]
async fn status_machine_follows_the_real_server() {
    let api = start().await;
    let t = api.task("state machine").await;
    // created -> stopped is illegal without force
    assert_eq!(
        api.err("tasks.stopped", json!({"task": t})).await,
        (400, 110)
    );
    api.ok("tasks.stopped", json!({"task": t, "force": true}))
        .await;
    assert_eq!(api.status(&t).await, "stopped");
    api.ok("tasks.started", json!({"task": t})).await;
    api.ok("tasks.completed", json!({"task": t})).await;
    assert_eq!(api.status(&t).await, "completed");
    // completed -> stopped is illegal (the SDK's execute_remotely forces it)
    assert_eq!(
        api.err("tasks.stopped", json!({"task": t})).await,
        (400, 110)
    );
    // edit needs created unless forced
    assert_eq!(
        api.err("tasks.edit", json!({"task": t, "comment": "x"}))
            .await,
        (400, 110)
    );
    api.ok(
        "tasks.edit",
        json!({"task": t, "comment": "x", "force": true}),
    )
    .await;
    let reset = api.ok("tasks.reset", json!({"task": t})).await;
    assert_eq!(reset["updated"], 1);
    assert_eq!(api.status(&t).await, "created");
}

#[tokio::test]
async fn edit_accepts_only_real_statuses() {
    let api = start().await;
    let t = api.task("edited").await;
    for bad in ["<script>", "running", ""] {
        let (code, sub) = api
            .err("tasks.edit", json!({"task": t, "status": bad}))
            .await;
        assert_eq!((code, sub), (400, 12), "status {bad:?} must be refused");
    }
    assert_eq!(api.status(&t).await, "created");
    api.ok(
        "tasks.edit",
        json!({"task": t, "status": "failed", "force": true}),
    )
    .await;
    assert_eq!(api.status(&t).await, "failed");
}

#[tokio::test]
async fn enqueue_pop_dequeue_and_stop() {
    let api = start().await;
    let q = api.default_queue().await;
    let t = api.task("queued task").await;
    let r = api
        .ok(
            "tasks.enqueue",
            json!({"task": t, "queue_name": "other-queue"}),
        )
        .await;
    assert_eq!(r["queued"], 1);
    let other = api
        .ok("queues.get_all", json!({"name": "^other-queue$"}))
        .await["queues"][0]
        .clone();
    assert_eq!(other["entries"][0]["task"], json!(t));
    // enqueue to another queue moves it
    api.ok("tasks.enqueue", json!({"task": t, "queue": q}))
        .await;
    let other_id = other["id"].as_str().expect("id");
    let other = api.ok("queues.get_by_id", json!({"queue": other_id})).await;
    assert_eq!(other["queue"]["entries"], json!([]));
    assert_eq!(api.status(&t).await, "queued");
    // tasks.stop of a queued task stops it at once and empties the queue
    api.ok("tasks.stop", json!({"task": t})).await;
    assert_eq!(api.status(&t).await, "stopped");
    let popped = api.ok("queues.get_next_task", json!({"queue": q})).await;
    assert_eq!(popped, json!({}));

    // A running task with a live worker gets "stopping" instead.
    let t2 = api.task("running task").await;
    api.ok("tasks.enqueue", json!({"task": t2, "queue": q}))
        .await;
    let popped = api.ok("queues.get_next_task", json!({"queue": q})).await;
    assert_eq!(popped["entry"]["task"], json!(t2));
    api.ok("tasks.started", json!({"task": t2, "force": true}))
        .await;
    api.ok(
        "workers.status_report",
        json!({"worker": "box:0", "timestamp": 1, "task": t2, "queue": q}),
    )
    .await;
    api.ok("tasks.stop", json!({"task": t2})).await;
    let doc = api.ok("tasks.get_by_id", json!({"task": t2})).await["task"].clone();
    assert_eq!(doc["status"], "in_progress");
    assert_eq!(doc["status_message"], "stopping");
    assert_eq!(doc["last_worker"], "box:0");
    let workers = api.ok("workers.get_all", json!({"last_seen": 0})).await;
    assert_eq!(workers["workers"][0]["task"]["id"], json!(t2));

    // dequeue returns a queued task to its earlier status
    let t3 = api.task("dequeued").await;
    api.ok("tasks.enqueue", json!({"task": t3, "queue": q}))
        .await;
    let d = api.ok("tasks.dequeue", json!({"task": t3})).await;
    assert_eq!(d["updated"], 1);
    assert_eq!(api.status(&t3).await, "created");
}

#[tokio::test]
async fn concurrent_pops_hand_out_each_task_exactly_once() {
    let api = Arc::new(start().await);
    let q = api.default_queue().await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let t = api.task(&format!("task {i}")).await;
        api.ok("tasks.enqueue", json!({"task": t, "queue": q}))
            .await;
        ids.push(t);
    }
    let mut pollers = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let q = q.clone();
        pollers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let r = api.ok("queues.get_next_task", json!({"queue": q})).await;
                match r["entry"]["task"].as_str() {
                    Some(t) => got.push(t.to_string()),
                    None => return got,
                }
            }
        }));
    }
    let mut all = Vec::new();
    for p in pollers {
        all.extend(p.await.expect("poller"));
    }
    all.sort();
    ids.sort();
    assert_eq!(all, ids, "every task once, none twice");
}

#[tokio::test]
async fn long_poll_returns_as_soon_as_a_task_is_enqueued() {
    let api = Arc::new(start().await);
    let q = api.default_queue().await;
    let t = api.task("long poll").await;
    let waiter = {
        let api = api.clone();
        let q = q.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let r = api
                .ok(
                    "queues.get_next_task",
                    json!({"queue": q, "wait_ms": 10_000}),
                )
                .await;
            (start.elapsed(), r)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued_at = Instant::now();
    api.ok("tasks.enqueue", json!({"task": t, "queue": q}))
        .await;
    let (elapsed, r) = waiter.await.expect("waiter");
    assert_eq!(r["entry"]["task"], json!(t));
    assert!(
        elapsed >= Duration::from_millis(250),
        "it waited: {elapsed:?}"
    );
    assert!(
        enqueued_at.elapsed() < Duration::from_secs(2),
        "woke up promptly, not at the 10 s deadline"
    );
    // With nothing to hand out it answers {} at the deadline.
    let start = Instant::now();
    let r = api
        .ok("queues.get_next_task", json!({"queue": q, "wait_ms": 300}))
        .await;
    assert_eq!(r, json!({}));
    assert!(start.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn next_task_over_several_queues_and_reordering() {
    let api = start().await;
    let high = api.default_queue().await;
    let low = api.ok("queues.create", json!({"name": "low-queue"})).await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let info = api.ok("server.info", json!({})).await;
    assert_eq!(info["long_poll"], true);
    let a = api.task("low one").await;
    let b = api.task("high one").await;
    api.ok("tasks.enqueue", json!({"task": a, "queue": low}))
        .await;
    api.ok("tasks.enqueue", json!({"task": b, "queue": high}))
        .await;
    // The list is a priority order: the first non-empty queue wins and is named.
    let r = api
        .ok(
            "queues.get_next_task",
            json!({"queue": high, "queues": [high, low], "wait_ms": 0}),
        )
        .await;
    assert_eq!(
        (r["entry"]["task"].clone(), r["queue"].clone()),
        (json!(b), json!(high))
    );
    let r = api
        .ok(
            "queues.get_next_task",
            json!({"queue": high, "queues": [high, low]}),
        )
        .await;
    assert_eq!(
        (r["entry"]["task"].clone(), r["queue"].clone()),
        (json!(a), json!(low))
    );
    let r = api
        .ok(
            "queues.get_next_task",
            json!({"queue": high, "queues": [high, low]}),
        )
        .await;
    assert_eq!(r, json!({}));

    // move_task_to_front / back reorder entries.
    let c = api.task("third").await;
    api.ok("tasks.enqueue", json!({"task": a, "queue": low}))
        .await;
    api.ok("tasks.enqueue", json!({"task": c, "queue": low}))
        .await;
    let r = api
        .ok(
            "queues.move_task_to_front",
            json!({"queue": low, "task": c}),
        )
        .await;
    assert_eq!(r["position"], 0);
    let q = api.ok("queues.get_by_id", json!({"queue": low})).await;
    assert_eq!(q["queue"]["entries"][0]["task"], json!(c));
    api.ok("queues.move_task_to_back", json!({"queue": low, "task": c}))
        .await;
    let q = api.ok("queues.get_by_id", json!({"queue": low})).await;
    assert_eq!(q["queue"]["entries"][1]["task"], json!(c));
    assert_eq!(
        api.err(
            "queues.move_task_to_front",
            json!({"queue": low, "task": "nope"})
        )
        .await,
        (400, 703)
    );
}

#[tokio::test]
async fn get_all_filters_projection_ordering_and_paging() {
    let api = start().await;
    let p = api
        .ok("projects.create", json!({"name": "team/proj"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let parents = api.ok("projects.get_all", json!({"name": "^team$"})).await;
    assert_eq!(parents["projects"].as_array().map(Vec::len), Some(1));
    for name in ["alpha", "beta", "gamma"] {
        api.ok(
            "tasks.create",
            json!({"name": name, "type": "training", "project": p, "script": {"entry_point": format!("{name}.py")}}),
        )
        .await;
    }
    let r = api
        .ok(
            "tasks.get_all",
            json!({"project": [p], "name": "^(alpha|gamma)$", "only_fields": ["name", "script.entry_point"], "order_by": ["-name"]}),
        )
        .await;
    assert_eq!(
        r["tasks"]
            .as_array()
            .expect("list")
            .iter()
            .map(|t| t["name"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        ["gamma", "alpha"]
    );
    assert_eq!(r["tasks"][0]["script"], json!({"entry_point": "gamma.py"}));
    assert!(
        r["tasks"][0].get("status").is_none(),
        "only the asked fields"
    );
    let page = api
        .ok(
            "tasks.get_all",
            json!({"project": [p], "order_by": "name", "page": 1, "page_size": 2}),
        )
        .await;
    assert_eq!(page["tasks"][0]["name"], "gamma");
    assert_eq!(
        api.err("projects.create", json!({"name": "team/proj"}))
            .await,
        (400, 801)
    );
}

#[tokio::test]
async fn clone_copies_the_recipe_not_the_run() {
    let api = start().await;
    let src = api.task("source").await;
    api.ok(
        "tasks.edit",
        json!({"task": src, "script": {"entry_point": "train.py"}, "hyperparams": {"General": {"lr": {"section": "General", "name": "lr", "value": "0.1"}}}, "system_tags": ["development"]}),
    )
    .await;
    api.ok("tasks.started", json!({"task": src})).await;
    api.ok(
        "tasks.edit",
        json!({"task": src, "runtime": {"x": 1}, "force": true}),
    )
    .await;
    let id = api
        .ok("tasks.clone", json!({"task": src, "new_task_name": "copy"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let t = api.ok("tasks.get_by_id", json!({"task": id})).await["task"].clone();
    assert_eq!(t["name"], "copy");
    assert_eq!(t["status"], "created");
    assert_eq!(t["parent"], json!(src));
    assert_eq!(t["script"]["entry_point"], "train.py");
    assert_eq!(t["hyperparams"]["General"]["lr"]["value"], "0.1");
    assert_eq!(t["runtime"], json!({}));
    assert_eq!(t["system_tags"], json!([]));
}

#[tokio::test]
async fn watchdog_stops_silent_tasks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.port = 0;
    config.files_port = 0;
    config.task_timeout_sec = 1;
    config.credential = Some(Credential {
        access_key: "K".into(),
        secret_key: "S".into(),
    });
    let server = Server::start(config).await.expect("starts");
    let base = format!("http://{}", server.api_addr());
    let http = reqwest::Client::new();
    let call = |endpoint: &str, body: Value| {
        http.get(format!("{base}/{endpoint}"))
            .basic_auth("K", Some("S"))
            .json(&body)
            .send()
    };
    let created: Value = call("tasks.create", json!({"name": "silent"}))
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let id = created["data"]["id"].as_str().expect("id").to_string();
    call("tasks.started", json!({"task": id}))
        .await
        .expect("send");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t: Value = call("tasks.get_by_id", json!({"task": id}))
            .await
            .expect("send")
            .json()
            .await
            .expect("json");
        if t["data"]["task"]["status"] == "stopped" {
            assert_eq!(
                t["data"]["task"]["status_reason"],
                "Forced stop (non-responsive)"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watchdog never stopped the task"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn created_credentials_work_at_once() {
    let api = start().await;
    let c = api
        .ok("auth.create_credentials", json!({"label": "ci"}))
        .await;
    let key = c["credentials"]["access_key"].as_str().expect("key");
    let secret = c["credentials"]["secret_key"].as_str().expect("secret");
    assert_eq!(key.len(), 30);
    let r = api
        .http
        .get(format!("{}/auth.login", api.base))
        .basic_auth(key, Some(secret))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 200);
    let listed = api.ok("auth.get_credentials", json!({})).await;
    assert!(listed.to_string().contains(key));
    assert!(
        !listed.to_string().contains(secret),
        "secrets are never listed"
    );
}

#[tokio::test]
async fn a_batch_keeps_its_good_lines_and_lone_surrogates() {
    let api = start().await;
    let t = api.task("logs").await;
    api.ok("tasks.started", json!({"task": t})).await;
    // What Python's json sends for `print(os.fsdecode(b"file_\\xff.txt"))`, then a line that
    // is not JSON, then a good one.
    let line = |msg: &str, ts: i64| {
        format!(
            r#"{{"type": "log", "task": "{t}", "msg": "{msg}", "timestamp": {ts}, "level": "info"}}"#
        )
    };
    let body = format!(
        "{}\n{{\"type\": \"log\", \"task\": \n{}\n",
        line("file_\\udcff.txt", 1000),
        line("after", 1001)
    );
    let resp = api
        .http
        .post(format!("{}/events.add_batch", api.base))
        .bearer_auth(&api.token)
        .header("Content-Type", "application/json-lines")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 200);
    let env: Value = resp.json().await.expect("envelope");
    assert_eq!(env["data"]["added"], 2, "{env}");
    assert_eq!(env["data"]["errors"], 1, "{env}");
    let info = env["data"]["errors_info"].to_string();
    assert!(info.contains("batch item #1"), "{info}");
    let log = api
        .ok(
            "events.get_task_log",
            json!({"task": t, "navigate_earlier": false}),
        )
        .await;
    let msgs: Vec<&str> = log["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["msg"].as_str())
        .collect();
    assert_eq!(msgs, vec!["file_\u{fffd}.txt", "after"]);
}

/// The claims of a token, read as the clients read them (no signature check).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("jwt");
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .expect("b64"),
    )
    .expect("claims")
}

/// `auth.login` with a key pair or a token; (HTTP status, token).
async fn login(api: &Api, basic: Option<(&str, &str)>, bearer: Option<&str>) -> (u16, String) {
    let mut r = api.http.get(format!("{}/auth.login", api.base));
    if let Some((k, s)) = basic {
        r = r.basic_auth(k, Some(s));
    }
    if let Some(t) = bearer {
        r = r.bearer_auth(t);
    }
    let resp = r.send().await.expect("send");
    let status = resp.status().as_u16();
    let env: Value = resp.json().await.expect("envelope");
    let token = env["data"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (status, token)
}

/// A call with a given token; the HTTP status.
async fn call_with(api: &Api, token: &str) -> u16 {
    api.http
        .get(format!("{}/tasks.get_all", api.base))
        .bearer_auth(token)
        .json(&json!({}))
        .send()
        .await
        .expect("send")
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_revoked_key_takes_its_tokens_with_it() {
    let api = start().await;
    let c = api.ok("auth.create_credentials", json!({})).await;
    let key = c["credentials"]["access_key"].as_str().expect("key");
    let secret = c["credentials"]["secret_key"].as_str().expect("secret");
    let (status, token) = login(&api, Some((key, secret)), None).await;
    assert_eq!(status, 200);
    assert_eq!(call_with(&api, &token).await, 200);
    let (status, refreshed) = login(&api, None, Some(&token)).await;
    assert_eq!(status, 200);

    // Revoked by another process (`clearml-agent server keys revoke`), on the database.
    let dir = api._dir.path().to_path_buf();
    let keys = clearml_server::list_keys(&dir).expect("list");
    assert!(keys.iter().any(|k| k == key) && keys.iter().any(|k| k == "KEY"));
    assert!(clearml_server::revoke_key(&dir, key).expect("revoke"));
    assert!(!clearml_server::revoke_key(&dir, key).expect("revoke twice"));
    assert!(
        !clearml_server::list_keys(&dir)
            .expect("list")
            .iter()
            .any(|k| k == key)
    );
    let deadline = Instant::now() + clearml_server::KEY_RELOAD + Duration::from_secs(3);
    while call_with(&api, &token).await != 401 {
        assert!(
            Instant::now() < deadline,
            "the revoked key's token still works"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(call_with(&api, &refreshed).await, 401);
    assert_eq!(
        login(&api, None, Some(&token)).await.0,
        401,
        "no refresh either"
    );
    assert_eq!(login(&api, Some((key, secret)), None).await.0, 401);
    // The other key is untouched.
    assert_eq!(call_with(&api, &api.token).await, 200);

    // Through the API: at once.
    let c = api.ok("auth.create_credentials", json!({})).await;
    let key2 = c["credentials"]["access_key"].as_str().expect("key");
    let secret2 = c["credentials"]["secret_key"].as_str().expect("secret");
    let (_, token2) = login(&api, Some((key2, secret2)), None).await;
    assert_eq!(call_with(&api, &token2).await, 200);
    api.ok("auth.revoke_credentials", json!({"access_key": key2}))
        .await;
    assert_eq!(call_with(&api, &token2).await, 401);
}

#[tokio::test]
async fn logging_in_with_a_token_does_not_extend_it() {
    let api = start().await;
    let first = claims(&api.token);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, renewed) = login(&api, None, Some(&api.token)).await;
    assert_eq!(status, 200);
    let renewed = claims(&renewed);
    assert!(renewed["iat"].as_i64() > first["iat"].as_i64());
    assert_eq!(
        renewed["exp"], first["exp"],
        "a token login must not push the expiry"
    );
    // A key login starts a new term.
    let (_, fresh) = login(&api, Some(("KEY", "SECRET")), None).await;
    assert!(claims(&fresh)["exp"].as_i64() > first["exp"].as_i64());
}
