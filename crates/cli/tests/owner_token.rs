//! `daemon --use-owner-token` end to end against our server: the agent runs with the server's
//! admin key, the task was created by another user (alice) with her own key, and the task runs
//! as alice: its own API calls, its console and the task's last change are hers. A daemon with
//! a non-admin key is refused at start with the reason.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};

mod common;
mod daemon_setup;
use daemon_setup::*;

/// Calls our server as `key`, optionally impersonating `as_user`; returns `data`.
fn call_as(
    s: &Setup,
    key: (&str, &str),
    as_user: Option<&str>,
    endpoint: &str,
    body: Value,
) -> Value {
    let url = format!("http://127.0.0.1:{}/{endpoint}", s.port);
    s.rt.block_on(async {
        let mut r = reqwest::Client::new()
            .post(url)
            .basic_auth(key.0, Some(key.1))
            .json(&body);
        if let Some(u) = as_user {
            r = r.header("X-Clearml-Impersonate-As", u);
        }
        let env: Value = r.send().await.expect("send").json().await.expect("json");
        assert_eq!(env["meta"]["result_code"], 200, "{endpoint}: {env}");
        env["data"].clone()
    })
}

#[test]
fn tasks_run_as_their_owner_and_a_user_key_is_refused() {
    let mut s = Setup::new("");
    let admin = call_as(&s, (KEY, SECRET), None, "users.get_current_user", json!({}))["user"]["id"]
        .as_str()
        .expect("admin id")
        .to_string();
    let alice = call_as(
        &s,
        (KEY, SECRET),
        None,
        "auth.create_user",
        json!({"name": "alice"}),
    )["id"]
        .as_str()
        .expect("alice")
        .to_string();
    let cred = call_as(
        &s,
        (KEY, SECRET),
        Some(&alice),
        "auth.create_credentials",
        json!({}),
    )["credentials"]
        .clone();
    let (alice_key, alice_secret) = (
        cred["access_key"].as_str().expect("key").to_string(),
        cred["secret_key"].as_str().expect("secret").to_string(),
    );

    // A daemon whose key is alice's (a plain user) may not run tasks as their owners.
    let refused = s
        .agent()
        .env("CLEARML_API_ACCESS_KEY", &alice_key)
        .env("CLEARML_API_SECRET_KEY", &alice_secret)
        .args(["daemon", "--queue", "default", "--use-owner-token"])
        .output()
        .expect("daemon");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!refused.status.success(), "{text}");
    assert!(
        text.contains("User role not suitable for --use-owner-token")
            && text.contains("found user"),
        "{text}"
    );

    // Alice creates and enqueues a task with her own key.
    let script = s.dir.path().join("whoami.sh");
    std::fs::write(
        &script,
        format!(
            "echo \"agent key in the task: ${{CLEARML_API_ACCESS_KEY:-none}}\"\n\
             curl -s -X POST -H \"Authorization: Bearer $CLEARML_AUTH_TOKEN\" \
             -H 'Content-Type: application/json' -d '{{}}' \
             http://127.0.0.1:{}/users.get_current_user\necho\n",
            s.port
        ),
    )
    .expect("script");
    let out = common::run(
        s.agent()
            .env("CLEARML_API_ACCESS_KEY", &alice_key)
            .env("CLEARML_API_SECRET_KEY", &alice_secret)
            .args(["task", "create", "--project", "e2e", "--name", "alices"])
            .arg("--script")
            .arg(&script)
            .args(["--binary", "/bin/bash", "--queue", "default"]),
    );
    let task = out.lines().last().unwrap_or_default().trim().to_string();
    assert_eq!(s.task_doc(&task)["user"], json!(alice), "created by alice");

    let d = s.start_daemon(&["--queue", "default", "--use-owner-token"]);
    s.wait_status(&task, &["completed", "failed"], Duration::from_secs(120));
    let log = s.log(&task);
    let doc = s.task_doc(&task);
    assert_eq!(
        doc["status"],
        "completed",
        "{doc}\n{log}\n{}",
        s.daemon_output(d)
    );
    // The task's own call acted as alice, and it had no agent key to fall back on.
    assert!(log.contains("\"name\":\"alice\""), "{log}");
    assert!(log.contains("agent key in the task: none"), "{log}");
    assert!(log.contains(&format!("as its owner {alice}")), "{log}");
    // What was reported about the task is attributed to alice, not to the agent's admin.
    assert_eq!(doc["last_changed_by"], json!(alice), "{doc}");
    assert_ne!(doc["last_changed_by"], json!(admin));
    assert!(!log.contains(KEY) && !log.contains(SECRET), "{log}");
}
