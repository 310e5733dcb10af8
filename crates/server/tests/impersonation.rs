//! Users, `X-Clearml-Impersonate-As` and `auth.get_token_for_user` against a real server on a
//! loopback port: an admin key may act as another user, a user key may not.

use clearml_server::{Credential, Server, ServerConfig};
use serde_json::{Value, json};

struct Api {
    base: String,
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
        access_key: "ADMIN".into(),
        secret_key: "ADMINSECRET".into(),
    });
    let server = Server::start(config).await.expect("starts");
    Api {
        base: format!("http://{}", server.api_addr()),
        http: reqwest::Client::new(),
        _server: server,
        _dir: dir,
    }
}

/// How a call authenticates.
enum As<'a> {
    Key(&'a str, &'a str),
    Token(&'a str),
}

impl Api {
    /// (HTTP status, envelope) of a call, with `X-Clearml-Impersonate-As` when `impersonate`.
    async fn raw(
        &self,
        endpoint: &str,
        who: &As<'_>,
        impersonate: Option<&str>,
        body: Value,
    ) -> (u16, Value) {
        let mut r = self
            .http
            .post(format!("{}/{endpoint}", self.base))
            .json(&body);
        r = match who {
            As::Key(k, s) => r.basic_auth(k, Some(s)),
            As::Token(t) => r.bearer_auth(t),
        };
        if let Some(u) = impersonate {
            r = r.header("X-Clearml-Impersonate-As", u);
        }
        let resp = r.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("envelope"))
    }

    async fn ok(&self, endpoint: &str, who: &As<'_>, imp: Option<&str>, body: Value) -> Value {
        let (status, env) = self.raw(endpoint, who, imp, body).await;
        assert_eq!(status, 200, "{endpoint}: {env}");
        env["data"].clone()
    }
}

fn identity(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("jwt");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("b64");
    serde_json::from_slice::<Value>(&bytes).expect("claims")["identity"].clone()
}

const ADMIN: As<'static> = As::Key("ADMIN", "ADMINSECRET");

#[tokio::test]
async fn an_admin_acts_as_a_user_and_a_user_may_not() {
    let api = start().await;
    let me = api
        .ok("users.get_current_user", &ADMIN, None, json!({}))
        .await;
    assert_eq!(me["user"]["role"], "admin", "{me}");
    let admin_id = me["user"]["id"].as_str().expect("id").to_string();
    let alice = api
        .ok("auth.create_user", &ADMIN, None, json!({"name": "alice"}))
        .await["id"]
        .as_str()
        .expect("id")
        .to_string();
    // Keys for alice: made by the admin acting as her.
    let cred = api
        .ok("auth.create_credentials", &ADMIN, Some(&alice), json!({}))
        .await["credentials"]
        .clone();
    let (key, secret) = (
        cred["access_key"].as_str().expect("key").to_string(),
        cred["secret_key"].as_str().expect("secret").to_string(),
    );
    let alice_key = As::Key(&key, &secret);
    let token = api.ok("auth.login", &alice_key, None, json!({})).await["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(identity(&token)["user"], json!(alice));
    assert_eq!(identity(&token)["role"], "user");
    let listed = api.ok("users.get_all", &ADMIN, None, json!({})).await;
    let names: Vec<&str> = listed["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert!(names.contains(&"alice"), "{listed}");

    // What alice creates is hers.
    let task = api
        .ok(
            "tasks.create",
            &alice_key,
            None,
            json!({"name": "hers", "type": "training"}),
        )
        .await["id"]
        .as_str()
        .expect("task")
        .to_string();
    let doc = api
        .ok("tasks.get_by_id", &ADMIN, None, json!({"task": task}))
        .await["task"]
        .clone();
    assert_eq!(doc["user"], json!(alice), "{doc}");

    // A user may neither impersonate nor ask for tokens.
    let (status, env) = api
        .raw(
            "users.get_current_user",
            &alice_key,
            Some(&admin_id),
            json!({}),
        )
        .await;
    assert_eq!(status, 400, "{env}");
    assert_eq!(env["meta"]["result_subcode"], 6, "{env}");
    let msg = env["meta"]["result_msg"].as_str().unwrap_or_default();
    assert!(msg.contains("impersonation not allowed"), "{env}");
    let (status, env) = api
        .raw(
            "auth.get_token_for_user",
            &alice_key,
            None,
            json!({"user": admin_id}),
        )
        .await;
    assert_eq!(status, 403, "{env}");
    let (status, _) = api
        .raw("auth.create_user", &alice_key, None, json!({"name": "eve"}))
        .await;
    assert_eq!(status, 403);
    // Alice sees and may revoke only her own keys, never the admin's.
    let listed = api
        .ok("auth.get_credentials", &alice_key, None, json!({}))
        .await;
    assert_eq!(
        listed["credentials"],
        json!([{"access_key": key}]),
        "{listed}"
    );
    let (status, _) = api
        .raw(
            "auth.revoke_credentials",
            &alice_key,
            None,
            json!({"access_key": "ADMIN"}),
        )
        .await;
    assert_eq!(status, 400);
    api.ok("users.get_current_user", &ADMIN, None, json!({}))
        .await;

    // The admin, impersonating alice, logs in as her: the token acts as alice, and what it
    // reports is attributed to her.
    let as_alice = api.ok("auth.login", &ADMIN, Some(&alice), json!({})).await["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(identity(&as_alice)["user"], json!(alice));
    let admins_task = api
        .ok(
            "tasks.create",
            &ADMIN,
            None,
            json!({"name": "admin's", "type": "training"}),
        )
        .await["id"]
        .as_str()
        .expect("task")
        .to_string();
    let before = api
        .ok(
            "tasks.get_by_id",
            &ADMIN,
            None,
            json!({"task": admins_task}),
        )
        .await["task"]["user"]
        .clone();
    assert_eq!(before, json!(admin_id));
    api.ok(
        "events.add_batch",
        &As::Token(&as_alice),
        None,
        json!({"type": "log", "task": admins_task, "msg": "hi", "level": "info",
               "timestamp": 1}),
    )
    .await;
    let doc = api
        .ok(
            "tasks.get_by_id",
            &ADMIN,
            None,
            json!({"task": admins_task}),
        )
        .await["task"]
        .clone();
    assert_eq!(doc["last_changed_by"], json!(alice), "{doc}");
    let me = api
        .ok(
            "users.get_current_user",
            &As::Token(&as_alice),
            None,
            json!({}),
        )
        .await;
    assert_eq!(me["user"]["id"], json!(alice));

    // auth.get_token_for_user: the admin gets a token of alice; an unknown user is refused.
    let t = api
        .ok(
            "auth.get_token_for_user",
            &ADMIN,
            None,
            json!({"user": alice}),
        )
        .await["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert_eq!(identity(&t)["user"], json!(alice));
    let (status, _) = api
        .raw(
            "auth.get_token_for_user",
            &ADMIN,
            None,
            json!({"user": "nobody"}),
        )
        .await;
    assert_eq!(status, 400);
    let (status, env) = api
        .raw("users.get_current_user", &ADMIN, Some("nobody"), json!({}))
        .await;
    assert_eq!(
        (status, env["meta"]["result_subcode"].clone()),
        (400, json!(6))
    );
    assert!(
        env["meta"]["result_msg"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown user"),
        "{env}"
    );
}
