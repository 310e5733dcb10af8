//! An embedded ClearML-compatible server: the REST API the ClearML SDK and agents speak, and
//! the files server, over one SQLite database and a folder.
//!
//! The contract is what the real Python clients send and read (clearml 2.1.12, clearml-agent
//! 3.0.3); where the real server's schema and the clients disagree, the clients win. Layout:
//! - `http` turns requests into calls and results into the `{meta, data}` envelope, including
//!   GET-with-body, json-lines batches and the long-poll extension of `queues.get_next_task`
//!   (a `wait_ms` field the real server ignores);
//! - `auth` issues and checks HS256 JWTs with a persistent secret;
//! - `tasks`, `queues`, `projects`, `workers`, `events`, `models` implement the services, each
//!   call one SQLite transaction (`store`), so a reply means the change is on disk;
//! - `project_stats` (project-wide views over tasks) and `bulk` (the web UI's `*_many`, tag
//!   lists and queue moves) sit in front of their services in the dispatch table;
//! - `metrics_series` keeps the queue and worker statistics over time (in memory, with a
//!   retention limit) behind `queues.get_queue_metrics` and `workers.get_stats`;
//! - `access_log` logs every request at info (target `clearml_server::access`);
//! - `query` filters, orders, pages and projects (`only_fields`, MongoDB semantics);
//! - `files` serves uploads and downloads on its own port (and under `/files` on the API port).

mod access_log;
mod api;
mod auth;
mod bulk;
mod error;
mod events;
pub mod files;
mod http;
mod metrics_series;
mod models;
mod project_stats;
mod projects;
mod query;
mod queues;
mod req;
mod store;
mod tasks;
mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use auth::{API_VERSION, Credential};
pub use error::ApiError;

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub files_port: u16,
    pub data_dir: PathBuf,
    /// Credentials to accept (added to the stored ones). When none are given and none are
    /// stored, a pair is generated on first start.
    pub credential: Option<Credential>,
    /// In-progress tasks with no report for this long are stopped (the real server: 7200 s).
    pub task_timeout_sec: i64,
    /// Workers vanish this long after their last report (the real server: 600 s).
    pub worker_timeout_sec: i64,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8008,
            files_port: 8081,
            data_dir,
            credential: None,
            task_timeout_sec: 7200,
            worker_timeout_sec: 600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot create the data folder {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("cannot open the database {0}: {1}")]
    Database(PathBuf, rusqlite::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(String, std::io::Error),
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// A started server.
pub struct Server {
    api_addr: SocketAddr,
    files_addr: SocketAddr,
    credential: Credential,
    generated: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens the data folder, binds both ports and starts serving in the background.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| ServerError::DataDir(config.data_dir.clone(), e))?;
        let files_root = config.data_dir.join("files");
        std::fs::create_dir_all(&files_root)
            .map_err(|e| ServerError::DataDir(files_root.clone(), e))?;
        let db_path = config.data_dir.join("server.sqlite3");
        let store =
            store::Store::open(&db_path).map_err(|e| ServerError::Database(db_path.clone(), e))?;

        let mut auth = auth::Auth::load(&store, config.credential.clone())?;
        let mut generated = false;
        if auth.credentials().is_empty() {
            let c = Credential {
                access_key: auth::random_access_key(),
                secret_key: auth::random_token(50),
            };
            auth = auth::Auth::load(&store, Some(c))?;
            generated = true;
        }
        let credential = match &config.credential {
            Some(c) => c.clone(),
            None => auth
                .credentials()
                .first()
                .cloned()
                .ok_or_else(|| ApiError::internal("no credentials"))?,
        };

        let ctx = Arc::new(api::Ctx {
            jobs: api::start_db_thread(),
            store,
            auth,
            workers: std::sync::Mutex::new(Default::default()),
            queue_changed: tokio::sync::Notify::new(),
            worker_timeout_sec: config.worker_timeout_sec,
            task_update_timeout_sec: config.worker_timeout_sec,
            series: Default::default(),
        });
        queues::ensure_default(&ctx)?;

        let check_auth = ctx.auth.clone();
        let token_check: files::TokenCheck =
            Arc::new(move |token: &str| check_auth.verify(token).is_ok());
        let files_router = files::router(files_root, token_check);
        let api_router = http::router(ctx.clone()).nest_service("/files", files_router.clone());

        let api_listener = bind(&config.host, config.port).await?;
        let files_listener = bind(&config.host, config.files_port).await?;
        let api_addr = api_listener
            .local_addr()
            .map_err(|e| ServerError::Bind(config.host.clone(), e))?;
        let files_addr = files_listener
            .local_addr()
            .map_err(|e| ServerError::Bind(config.host.clone(), e))?;

        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(api_listener, api_router).await {
                tracing::error!("API server stopped: {e}");
            }
        }));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(files_listener, files_router).await {
                tracing::error!("files server stopped: {e}");
            }
        }));
        let watchdog_ctx = ctx.clone();
        let timeout = config.task_timeout_sec.max(1);
        tasks.push(tokio::spawn(async move {
            let period = Duration::from_secs((timeout as u64 / 4).clamp(1, 60));
            loop {
                tokio::time::sleep(period).await;
                let c = watchdog_ctx.clone();
                match tokio::task::spawn_blocking(move || tasks::stop_stale(&c, timeout)).await {
                    Ok(Ok(n)) if n > 0 => tracing::info!("stopped {n} non-responsive task(s)"),
                    Ok(Err(e)) => tracing::warn!("watchdog: {e}"),
                    _ => {}
                }
            }
        }));
        let sampler_ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            // The real server re-logs every queue's state periodically too, so a queue that
            // nothing touches still has points.
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let c = sampler_ctx.clone();
                let _ = tokio::task::spawn_blocking(move || c.series.sample_queues(&c)).await;
            }
        }));
        Ok(Server {
            api_addr,
            files_addr,
            credential,
            generated,
            tasks,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn files_addr(&self) -> SocketAddr {
        self.files_addr
    }

    /// The credentials clients should use.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// True when this start generated the credentials (first start without keys).
    pub fn generated_credentials(&self) -> bool {
        self.generated
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        for t in self.tasks {
            t.abort();
        }
    }
}

async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, ServerError> {
    let addr = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServerError::Bind(addr, e))
}
