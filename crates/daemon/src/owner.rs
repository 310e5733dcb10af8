//! `daemon --use-owner-token`: each task runs with its owner's identity, as clearml-agent 3.0.3
//! does. The agent's key must be an administrator's; for each task the daemon logs in with
//! `X-Clearml-Impersonate-As: <task owner>` and gets a token that acts as the owner. The task's
//! console, its status changes and everything its process (our `execute`, then the task's code
//! through `CLEARML_AUTH_TOKEN`) reports go through that token, so the server attributes them
//! to the owner. The task's process gets the token instead of the agent's keys.
//!
//! Unlike 3.0.3, which skips a task whose owner it cannot log in as (leaving it in progress), a
//! refusal fails the task with the server's reason: the task never runs as the agent.

use std::sync::Arc;

use base64::Engine as _;
use clearml_api::Client;
use serde_json::{Value, json};

use crate::DaemonError;

/// The owner's token handed to this process by a daemon with `--use-owner-token` (also what
/// the SDK reads).
pub(crate) fn token_from_env() -> Option<String> {
    std::env::var(clearml_api::AUTH_TOKEN_VAR)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
}

/// The identity claim of a token (read without verifying, as the Python clients do).
pub(crate) fn token_identity(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("identity").cloned()
}

/// Whether an identity may run tasks as their owners: 3.0.3's rule (admin, root, system, or a
/// service account of type 2 and up); an identity without a role is left to the server.
pub(crate) fn role_may_impersonate(identity: &Value) -> Result<(), String> {
    let Some(role) = identity.get("role").and_then(Value::as_str) else {
        return Ok(());
    };
    let service_account = identity
        .get("service_account_type")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
        .unwrap_or(0);
    if matches!(role, "admin" | "root" | "system") || service_account >= 2 {
        return Ok(());
    }
    Err(format!(
        "User role not suitable for --use-owner-token option (requires at least admin or \
         service account, found {role})"
    ))
}

/// At daemon start: refuses an agent key that may not impersonate, before any task is taken.
pub(crate) async fn check_agent_key(client: &Client) -> Result<(), DaemonError> {
    let token = client.token().await?;
    let identity = token_identity(&token).unwrap_or(Value::Null);
    role_may_impersonate(&identity).map_err(DaemonError::Task)
}

/// The clients of one task run as its owner: one for the status calls, one for log shipping.
pub(crate) struct OwnerSession {
    pub user: String,
    pub token: String,
    pub client: Arc<Client>,
    pub ship_client: Arc<Client>,
}

/// Logs in as the owner of `task`; the error says why it cannot (for the task's failure).
pub(crate) async fn owner_session(
    client: &Client,
    ship_client: &Client,
    task: &str,
) -> Result<OwnerSession, String> {
    let found = client
        .call(
            "tasks.get_all",
            json!({"id": [task], "only_fields": ["id", "user"], "search_hidden": true}),
        )
        .await
        .map_err(|e| format!("cannot read the task's owner: {e}"))?;
    let user = found
        .get("tasks")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|t| t.get("user"))
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| "the task has no owner (user) to run as".to_string())?
        .to_string();
    let token = client.login_as(&user).await.map_err(|e| {
        format!("the server refused to let the agent act as the task's owner {user}: {e}")
    })?;
    let acting = token_identity(&token)
        .and_then(|i| i.get("user").and_then(Value::as_str).map(str::to_string));
    if acting.as_deref() != Some(user.as_str()) {
        return Err(format!(
            "the server does not support --use-owner-token: asked for a token of {user}, got \
             one of {}",
            acting.as_deref().unwrap_or("an unknown user")
        ));
    }
    let make = |c: &Client| {
        Client::with_token(c.config().clone(), &token)
            .map(Arc::new)
            .map_err(|e| e.to_string())
    };
    Ok(OwnerSession {
        client: make(client)?,
        ship_client: make(ship_client)?,
        user,
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_that_may_run_tasks_as_their_owners() {
        assert!(role_may_impersonate(&json!({"role": "admin"})).is_ok());
        assert!(role_may_impersonate(&json!({"role": "system"})).is_ok());
        assert!(
            role_may_impersonate(&json!({"role": "user", "service_account_type": "2"})).is_ok()
        );
        let e = role_may_impersonate(&json!({"role": "user"})).unwrap_err();
        assert!(e.contains("found user"), "{e}");
        assert!(role_may_impersonate(&json!({})).is_ok());
    }

    #[test]
    fn the_identity_of_a_token() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"identity": {"user": "u1", "role": "user"}}).to_string());
        let token = format!("h.{claims}.s");
        assert_eq!(token_identity(&token).unwrap()["user"], "u1");
        assert_eq!(token_identity("nonsense"), None);
    }

    fn client(base: &str, key: &str, secret: &str) -> Client {
        Client::new(clearml_api::ClientConfig {
            api_server: base.to_string(),
            access_key: key.into(),
            secret_key: secret.into(),
            verify_certificate: true,
            method: "post".into(),
            worker: None,
            retry_for: std::time::Duration::from_secs(5),
            timeout: std::time::Duration::from_secs(10),
        })
        .unwrap()
    }

    /// Against our server: an admin key gets the owner's session; a user's key is refused at
    /// the start and, per task, with the server's reason (the task would fail with it).
    #[tokio::test]
    async fn owner_sessions_against_our_server() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = clearml_server::ServerConfig::new(dir.path().to_path_buf());
        config.port = 0;
        config.files_port = 0;
        config.credential = Some(clearml_server::Credential {
            access_key: "ADMIN".into(),
            secret_key: "SECRET".into(),
        });
        let server = clearml_server::Server::start(config).await.unwrap();
        let base = format!("http://{}", server.api_addr());
        let admin = client(&base, "ADMIN", "SECRET");
        check_agent_key(&admin).await.unwrap();
        let alice = admin
            .call("auth.create_user", json!({"name": "alice"}))
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let token = admin.login_as(&alice).await.unwrap();
        let cred = Client::with_token(admin.config().clone(), &token)
            .unwrap()
            .call("auth.create_credentials", json!({}))
            .await
            .unwrap()["credentials"]
            .clone();
        let user = client(
            &base,
            cred["access_key"].as_str().unwrap(),
            cred["secret_key"].as_str().unwrap(),
        );
        let task = user
            .call("tasks.create", json!({"name": "t", "type": "training"}))
            .await
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();

        let session = owner_session(&admin, &admin, &task).await.unwrap();
        assert_eq!(session.user, alice);
        let me = session
            .client
            .call("users.get_current_user", json!({}))
            .await
            .unwrap();
        assert_eq!(me["user"]["name"], "alice");

        let e = check_agent_key(&user).await.unwrap_err().to_string();
        assert!(e.contains("found user"), "{e}");
        let e = owner_session(&user, &user, &task).await.err().unwrap();
        assert!(e.contains("impersonation not allowed"), "{e}");
        let e = owner_session(&admin, &admin, "no-such-task")
            .await
            .err()
            .unwrap();
        assert!(e.contains("no owner"), "{e}");
    }
}
