//! The client against the embedded server on a loopback port.

use std::time::Duration;

use clearml_api::{ApiError, Client, ClientConfig};
use clearml_server::{Credential, Server, ServerConfig};
use serde_json::json;

async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().to_path_buf());
    config.port = 0;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
    });
    (Server::start(config).await.expect("starts"), dir)
}

fn config(url: String, secret: &str) -> ClientConfig {
    ClientConfig {
        api_server: url,
        access_key: "KEY".into(),
        secret_key: secret.into(),
        verify_certificate: true,
        method: "post".into(),
        worker: Some("test-worker".into()),
        retry_for: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn calls_log_in_and_return_data() {
    let (server, _dir) = server().await;
    let client =
        Client::new(config(format!("http://{}", server.api_addr()), "SECRET")).expect("client");
    let created = client
        .call("tasks.create", json!({"name": "from client"}))
        .await
        .expect("create");
    let id = created["id"].as_str().expect("id");
    let task = client
        .call("tasks.get_by_id", json!({"task": id}))
        .await
        .expect("get");
    assert_eq!(task["task"]["name"], "from client");
    // GET with a body works too (what the Python clients send).
    let mut get = config(format!("http://{}", server.api_addr()), "SECRET");
    get.method = "get".into();
    let client = Client::new(get).expect("client");
    client
        .call("tasks.get_all", json!({}))
        .await
        .expect("get_all");
}

#[tokio::test]
async fn four_hundreds_are_final_and_typed() {
    let (server, _dir) = server().await;
    let client =
        Client::new(config(format!("http://{}", server.api_addr()), "SECRET")).expect("client");
    let e = client
        .call("tasks.get_by_id", json!({"task": "missing"}))
        .await
        .expect_err("unknown task");
    assert_eq!(e.codes(), Some((400, 101)));
    let bad =
        Client::new(config(format!("http://{}", server.api_addr()), "WRONG")).expect("client");
    let e = bad
        .call("tasks.get_all", json!({}))
        .await
        .expect_err("bad secret");
    assert_eq!(e.codes(), Some((401, 22)));
}

#[tokio::test]
async fn an_unreachable_server_is_retried_then_reported() {
    // Nothing listens on this port (bound then dropped).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mut c = config(format!("http://127.0.0.1:{port}"), "SECRET");
    c.retry_for = Duration::from_millis(900);
    let client = Client::new(c).expect("client");
    let started = std::time::Instant::now();
    let e = client
        .call("tasks.get_all", json!({}))
        .await
        .expect_err("down");
    assert!(matches!(e, ApiError::Unreachable { .. }), "{e}");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "it retried"
    );
}
