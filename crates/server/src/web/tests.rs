//! The dashboard over a real socket: sign-in, escaping of task data, CSRF checks.
#![allow(clippy::print_stderr)] // the load test reports its timings

use std::sync::Arc;

use serde_json::{Value, json};

use crate::api::{self, Ctx};
use crate::req::Req;

struct Dash {
    _dir: tempfile::TempDir,
    ctx: Arc<Ctx>,
    base: String,
    signin_link: String,
    http: reqwest::Client,
}

async fn dash() -> Dash {
    let (dir, mut ctx) = api::test_ctx();
    let pair = crate::auth::Credential {
        access_key: "WEBTESTKEY".into(),
        secret_key: "web-test-secret".into(),
    };
    ctx.auth = crate::auth::Auth::load(&ctx.store, Some(pair)).expect("auth");
    let ctx = Arc::new(ctx);
    crate::queues::ensure_default(&ctx).expect("default queue");
    let files = crate::files::router(dir.path().join("files"), Arc::new(|_: &str| false));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (started, _handle) = super::start(
        ctx.clone(),
        dir.path().join("db.sqlite3"),
        files,
        1,
        listener,
        crate::conn::Limits {
            header_read_timeout: std::time::Duration::from_secs(10),
            idle_timeout: std::time::Duration::from_secs(120),
            max_connections: 64,
        },
        "WEBTESTKEY".into(),
    )
    .expect("start");
    Dash {
        _dir: dir,
        ctx,
        base: format!("http://{}", started.addr),
        signin_link: started.signin_link.clone(),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
    }
}

fn call(ctx: &Ctx, endpoint: &str, body: Value) -> Value {
    let req = Req {
        body: body.as_object().cloned().unwrap_or_default(),
        lines: None,
        bad_lines: Vec::new(),
        caller: None,
        worker_header: None,
    };
    match api::call(ctx, endpoint, &req) {
        Some(Ok(v)) => v,
        other => panic!("{endpoint}: {other:?}"),
    }
}

impl Dash {
    /// Signs in with the server's key pair; the session cookie.
    async fn sign_in(&self) -> String {
        let c = self.ctx.auth.credentials()[0].clone();
        let resp = self
            .http
            .post(format!("{}/", self.base))
            .form(&[
                ("access_key", c.access_key.as_str()),
                ("secret_key", c.secret_key.as_str()),
                ("next", "/projects"),
            ])
            .send()
            .await
            .expect("sign in");
        assert_eq!(resp.status(), 303);
        let cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .expect("a session cookie")
            .to_string();
        assert!(
            cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
            "{cookie}"
        );
        cookie.split(';').next().unwrap_or_default().to_string()
    }

    async fn get(&self, path: &str, cookie: &str) -> (u16, String) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap_or_default())
    }

    fn new_task(&self, name: &str) -> String {
        let v = call(
            &self.ctx,
            "tasks.create",
            json!({"name": name, "type": "training", "project": null}),
        );
        v["id"].as_str().expect("id").to_string()
    }

    fn status(&self, tid: &str) -> String {
        let v = call(&self.ctx, "tasks.get_by_id", json!({"task": tid}));
        v["task"]["status"].as_str().unwrap_or_default().to_string()
    }
}

fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    page[at..].split('"').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn wrong_secret_gets_no_session_and_pages_need_one() {
    let d = dash().await;
    let tid = d.new_task("secret stuff");
    let c = d.ctx.auth.credentials()[0].clone();
    let resp = d
        .http
        .post(format!("{}/", d.base))
        .form(&[
            ("access_key", c.access_key.as_str()),
            ("secret_key", "wrong"),
        ])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get("set-cookie").is_none());
    assert!(
        resp.text()
            .await
            .unwrap_or_default()
            .contains("Wrong access key or secret key")
    );
    for path in [
        format!("/projects/*/experiments/{tid}/output/log"),
        "/projects".to_string(),
        "/workers-and-queues/queues".to_string(),
    ] {
        let (status, body) = d.get(&path, "clearml_web_session=forged").await;
        assert_eq!(status, 303, "{path}");
        assert!(!body.contains("secret stuff"));
    }
    let (status, _) = d.get(&format!("/web-data/log/{tid}"), "").await;
    assert_eq!(status, 401);
    // A made-up sign-in link grants nothing; the one the server printed works once.
    assert_eq!(d.get("/signin/guess", "").await.0, 401);
    let path = d
        .signin_link
        .split_once("/signin/")
        .map(|(_, t)| format!("/signin/{t}"))
        .expect("link");
    let resp = d
        .http
        .get(format!("{}{path}", d.base))
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 303);
    assert!(resp.headers().get("set-cookie").is_some());
    assert_eq!(d.get(&path, "").await.0, 401);
}

#[tokio::test]
async fn a_script_in_a_task_name_renders_as_text() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    let evil = "<script>alert('x')</script><img src=x onerror=alert(1)>";
    let tid = d.new_task(evil);
    for tab in ["execution", "output/log", "output/metrics/scalar"] {
        let (status, page) = d
            .get(&format!("/projects/*/experiments/{tid}/{tab}"), &cookie)
            .await;
        assert_eq!(status, 200, "{tab}");
        assert!(!page.contains("<script>alert"), "{tab}: {page}");
        assert!(!page.contains("<img src=x"), "{tab}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{tab}"
        );
    }
    let (_, list) = d.get("/projects/*/experiments?name=script", &cookie).await;
    assert!(list.contains("&lt;script&gt;") && !list.contains("<script>alert"));
}

#[tokio::test]
async fn actions_need_the_session_csrf_token() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    let tid = d.new_task("to enqueue");
    let (_, page) = d
        .get(&format!("/projects/*/experiments/{tid}/execution"), &cookie)
        .await;
    let csrf = csrf_of(&page);
    let queue = call(&d.ctx, "queues.get_default", json!({}))["id"]
        .as_str()
        .expect("queue")
        .to_string();
    let url = format!("{}/actions/tasks/{tid}/enqueue", d.base);
    // A wrong token, no token, and no session are all refused, and nothing changes.
    for (cookie_h, form) in [
        (
            cookie.as_str(),
            vec![("csrf", "not-the-token"), ("queue", queue.as_str())],
        ),
        (cookie.as_str(), vec![("queue", queue.as_str())]),
        ("", vec![("csrf", csrf.as_str()), ("queue", queue.as_str())]),
    ] {
        let resp = d
            .http
            .post(&url)
            .header("cookie", cookie_h)
            .form(&form)
            .send()
            .await
            .expect("post");
        assert_eq!(resp.status(), 403);
        assert_eq!(d.status(&tid), "created");
    }
    let resp = d
        .http
        .post(&url)
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("queue", queue.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 303);
    assert_eq!(d.status(&tid), "queued");
    let (_, queues) = d.get("/workers-and-queues/queues", &cookie).await;
    assert!(queues.contains("to enqueue"));
    // Abort through the same form: the API's stop moves a task nobody runs at once.
    let resp = d
        .http
        .post(format!("{}/actions/tasks/{tid}/abort", d.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 303);
    assert_eq!(d.status(&tid), "stopped");
    // Clone goes to the new draft.
    let resp = d
        .http
        .post(format!("{}/actions/tasks/{tid}/clone", d.base))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("name", "the clone")])
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .to_string();
    let (_, page) = d.get(&loc, &cookie).await;
    assert!(page.contains("the clone"), "{loc}");
}

#[tokio::test]
async fn console_pages_and_the_tail_read_events() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    let tid = d.new_task("logs");
    let mut lines = Vec::new();
    for i in 0..2500 {
        lines.push(json!({"type": "log", "task": tid, "msg": format!("line {i}"), "timestamp": 1_700_000_000_000i64 + i}));
    }
    for i in 0..3000 {
        lines.push(json!({"type": "training_stats_scalar", "task": tid, "metric": "loss", "variant": "train", "iter": i, "value": 1.0 / f64::from(i + 1)}));
    }
    let req = Req {
        body: Default::default(),
        lines: Some(
            lines
                .into_iter()
                .filter_map(|v| v.as_object().cloned())
                .collect(),
        ),
        bad_lines: Vec::new(),
        caller: None,
        worker_header: None,
    };
    let r = api::call(&d.ctx, "events.add_batch", &req);
    assert!(matches!(r, Some(Ok(_))), "{r:?}");
    let (_, page) = d
        .get(
            &format!("/projects/*/experiments/{tid}/output/log"),
            &cookie,
        )
        .await;
    assert!(page.contains("line 2499") && page.contains("line 1500"));
    assert!(!page.contains("line 1499\n"), "only the newest page");
    assert!(page.contains("older lines"));
    let (_, found) = d
        .get(
            &format!("/projects/*/experiments/{tid}/output/log?q=LINE+42"),
            &cookie,
        )
        .await;
    assert!(
        found.contains("line 42\n") && found.contains("line 420\n") && !found.contains("line 43\n")
    );
    let (_, tail) = d
        .get(&format!("/web-data/log/{tid}?after=0"), &cookie)
        .await;
    let v: Value = serde_json::from_str(&tail).expect("json");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1000));
    let (_, scalars) = d
        .get(
            &format!("/projects/*/experiments/{tid}/output/metrics/scalar"),
            &cookie,
        )
        .await;
    assert!(scalars.contains("<svg") && scalars.contains("data-metric=\"loss\""));
    assert!(scalars.len() < 200_000, "downsampled: {}", scalars.len());
}

/// 100k console reports and 50k scalar points: pages stay small (paginated, downsampled) and
/// quick. The bound is loose (a debug build on a busy machine); the page sizes are the point.
#[tokio::test]
async fn big_tasks_stay_fast() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    let tid = d.new_task("big");
    d.ctx
        .store
        .write(|tx| {
            for i in 0..100_000i64 {
                let doc = json!({"type": "log", "task": tid, "msg": format!("console line {i}"), "timestamp": i});
                tx.add_event(&tid, "log", i, doc.as_object().expect("object"))?;
            }
            for i in 0..50_000i64 {
                let variant = if i % 2 == 0 { "train" } else { "val" };
                let doc = json!({"type": "training_stats_scalar", "task": tid, "metric": "loss",
                                 "variant": variant, "iter": i / 2, "value": (i as f64).sin()});
                tx.add_event(&tid, "training_stats_scalar", i, doc.as_object().expect("object"))?;
            }
            Ok(())
        })
        .expect("events");
    for (tab, max_len) in [
        ("output/log", 400_000),
        ("output/log?q=line+99999", 100_000),
        ("output/metrics/scalar", 150_000),
    ] {
        let started = std::time::Instant::now();
        let (status, page) = d
            .get(&format!("/projects/*/experiments/{tid}/{tab}"), &cookie)
            .await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{tab}");
        assert!(page.len() < max_len, "{tab}: {} bytes", page.len());
        assert!(took < std::time::Duration::from_secs(10), "{tab}: {took:?}");
        eprintln!("{tab}: {} bytes in {took:?}", page.len());
    }
    let (_, log) = d
        .get(
            &format!("/projects/*/experiments/{tid}/output/log"),
            &cookie,
        )
        .await;
    assert!(log.contains("console line 99999\n") && !log.contains("console line 98999\n"));
    assert!(log.contains("100000 report(s)"));
}

#[tokio::test]
async fn workers_page_shows_queues_task_and_machine_stats() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    let tid = d.new_task("running <here>");
    let queue = call(&d.ctx, "queues.get_default", json!({}))["id"]
        .as_str()
        .expect("queue")
        .to_string();
    call(
        &d.ctx,
        "workers.register",
        json!({"worker": "box:gpu0", "queues": [queue]}),
    );
    call(
        &d.ctx,
        "workers.status_report",
        json!({"worker": "box:gpu0", "timestamp": 1, "task": tid,
               "machine_stats": {"cpu_usage": [12.5, 40.0], "gpu_usage": [97.0], "memory_used": 2048}}),
    );
    let (status, page) = d.get("/workers-and-queues/workers", &cookie).await;
    assert_eq!(status, 200);
    assert!(page.contains("box:gpu0"));
    assert!(page.contains("running &lt;here&gt;") && page.contains(&tid));
    assert!(page.contains("cpu_usage</b> 12.5, 40") && page.contains("gpu_usage</b> 97"));
    let (_, queues) = d.get("/workers-and-queues/queues", &cookie).await;
    assert!(
        queues.contains("box:gpu0"),
        "the queue lists the worker serving it"
    );
}

#[tokio::test]
async fn revoking_the_key_ends_the_dashboard_session() {
    let d = dash().await;
    let cookie = d.sign_in().await;
    assert_eq!(d.get("/projects", &cookie).await.0, 200);
    let key = d.ctx.auth.credentials()[0].access_key.clone();
    // A second pair, so the server still has one after the revoke.
    call(&d.ctx, "auth.create_credentials", json!({}));
    call(
        &d.ctx,
        "auth.revoke_credentials",
        json!({"access_key": key}),
    );
    let (status, body) = d.get("/projects", &cookie).await;
    assert_ne!(
        status, 200,
        "a revoked key's session still opens pages: {body:.200}"
    );
}
