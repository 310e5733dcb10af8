//! The access log: one info event per request with method, endpoint, status, time and worker,
//! the error detail at debug, and never a token or a body.

use std::io::Write;
use std::sync::{Arc, Mutex};

use clearml_server::{Credential, Server, ServerConfig};
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn every_request_is_logged_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // One thread: the server's tasks run where the subscriber is installed.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = ServerConfig::new(dir.path().to_path_buf());
        config.port = 0;
        config.files_port = 0;
        config.credential = Some(Credential {
            access_key: "KEY".into(),
            secret_key: "SECRET-VALUE".into(),
        });
        let server = Server::start(config).await.expect("starts");
        let base = format!("http://{}", server.api_addr());
        let http = reqwest::Client::new();
        let login: Value = http
            .get(format!("{base}/auth.login"))
            .basic_auth("KEY", Some("SECRET-VALUE"))
            .send()
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        let token = login["data"]["token"].as_str().expect("token").to_string();
        let status = http
            .post(format!("{base}/v2.23/tasks.get_by_id"))
            .bearer_auth(&token)
            .header("X-ClearML-Worker", "box:gpu0")
            .json(&json!({"task": "no-such-task", "secret_field": "BODY-SECRET"}))
            .send()
            .await
            .expect("send")
            .status();
        assert_eq!(status.as_u16(), 400);
        token
    });
    drop(rt);
    let text = String::from_utf8_lossy(
        &captured
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
    .to_string();
    let access: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("clearml_server::access"))
        .collect();
    let line = access
        .iter()
        .find(|l| l.contains("INFO") && l.contains("tasks.get_by_id"))
        .unwrap_or_else(|| panic!("no access line for tasks.get_by_id in:\n{text}"));
    assert!(line.contains("POST"), "{line}");
    assert!(line.contains("status=400"), "{line}");
    assert!(line.contains("worker=box:gpu0"), "{line}");
    assert!(line.contains("ms="), "{line}");
    assert!(
        access
            .iter()
            .any(|l| l.contains("DEBUG") && l.contains("Invalid task id")),
        "no error detail at debug in:\n{text}"
    );
    assert!(access.iter().any(|l| l.contains("auth.login")), "{text}");
    for secret in [token.as_str(), "SECRET-VALUE", "BODY-SECRET"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
}
