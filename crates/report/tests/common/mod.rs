//! Shared helpers: an embedded server (in this runtime, or in its own thread so it can be
//! stopped and restarted on the same port and data), a client, and log read-back.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clearml_api::{Client, ClientConfig};
use clearml_server::{Credential, Server, ServerConfig};
use serde_json::{Value, json};

pub fn server_config(data: &Path, port: u16) -> ServerConfig {
    let mut config = ServerConfig::new(data.to_path_buf());
    config.port = port;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
    });
    config
}

/// A server in the test's own runtime.
pub async fn server() -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(server_config(dir.path(), 0))
        .await
        .expect("server starts");
    (server, dir)
}

/// A client that gives up quickly by itself: the code under test does its own retrying.
pub fn client(addr: SocketAddr) -> Arc<Client> {
    Arc::new(
        Client::new(ClientConfig {
            api_server: format!("http://{addr}"),
            access_key: "KEY".into(),
            secret_key: "SECRET".into(),
            verify_certificate: true,
            method: "post".into(),
            worker: Some("test-worker".into()),
            retry_for: Duration::from_millis(300),
            timeout: Duration::from_secs(5),
        })
        .expect("client"),
    )
}

pub async fn create_task(client: &Client, name: &str) -> String {
    let created = client
        .call("tasks.create", json!({"name": name}))
        .await
        .expect("tasks.create");
    created["id"].as_str().expect("task id").to_string()
}

/// Every log event of a task, oldest first.
pub async fn log_events(client: &Client, task: &str) -> Vec<Value> {
    let data = client
        .call(
            "events.get_task_log",
            json!({"task": task, "batch_size": 1_000_000, "navigate_earlier": false, "order": "asc"}),
        )
        .await
        .expect("events.get_task_log");
    data["events"].as_array().cloned().unwrap_or_default()
}

/// The console as the server has it: the events' texts concatenated.
pub async fn log_text(client: &Client, task: &str) -> String {
    log_events(client, task)
        .await
        .iter()
        .filter_map(|e| e["msg"].as_str().map(str::to_string))
        .collect()
}

pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A server in its own thread and runtime: stopping it drops the runtime, which closes the
/// listener and every open connection at once, like a crashed server.
pub struct BackgroundServer {
    pub addr: SocketAddr,
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl BackgroundServer {
    pub fn start(data: PathBuf, port: u16) -> BackgroundServer {
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            // The port was just in use by the previous instance: retry the bind briefly.
            let deadline = Instant::now() + Duration::from_secs(10);
            let server = loop {
                match rt.block_on(Server::start(server_config(&data, port))) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("server restart: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Err(e) => panic!("server does not start: {e}"),
                }
            };
            ready_tx.send(server.api_addr()).expect("report address");
            let _ = stop_rx.recv();
            drop(server);
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        let addr = ready_rx.recv().expect("server address");
        BackgroundServer { addr, stop, thread }
    }

    pub fn stop(self) {
        let _ = self.stop.send(());
        self.thread.join().expect("server thread");
    }
}
