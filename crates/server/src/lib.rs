//! An embedded ClearML-compatible server: the REST API the ClearML SDK and agents speak, and
//! the files server, over one SQLite database and a folder.
//!
//! The contract is what the real Python clients send and read (clearml 2.1.12, clearml-agent
//! 3.0.3); where the real server's schema and the clients disagree, the clients win. Layout:
//! - `http` turns requests into calls and results into the `{meta, data}` envelope, including
//!   GET-with-body, json-lines batches and the long-poll extension of `queues.get_next_task`
//!   (a `wait_ms` field the real server ignores) and of `tasks.get_all` (`wait_ms` with
//!   `wait_while`: held until the one task's status or message changes, so an agent sees an
//!   abort at once; advertised as `task_long_poll` in `server.info`);
//! - `auth` issues and checks HS256 JWTs with a persistent secret;
//! - `tasks`, `queues`, `projects`, `workers`, `events`, `models` implement the services, each
//!   call one SQLite transaction (`store`), so a reply means the change is on disk;
//! - `project_stats` (project-wide views over tasks) and `bulk` (the web UI's `*_many`, tag
//!   lists and queue moves) sit in front of their services in the dispatch table;
//! - `metrics_series` keeps the queue and worker statistics over time (in memory, with a
//!   retention limit) behind `queues.get_queue_metrics` and `workers.get_stats`;
//! - `access_log` logs every request at info (target `clearml_server::access`);
//! - `query` filters, orders, pages and projects (`only_fields`, MongoDB semantics);
//! - `files` serves uploads and downloads on its own port (and under `/files` on the API port);
//! - `web` is the dashboard on the web port (ClearML's URL scheme, its own sign-in).

mod access_log;
mod api;
mod auth;
mod bulk;
mod conn;
mod error;
mod events;
pub mod files;
mod http;
mod metrics_series;
mod models;
mod private;
mod project_stats;
mod projects;
mod query;
mod queues;
mod req;
mod store;
mod tasks;
mod web;
mod workers;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    /// The dashboard's port (`None`: no dashboard). A port that is taken does not stop the
    /// server: the API matters more; [`Server::web_error`] says why there is no dashboard.
    pub web_port: Option<u16>,
    pub data_dir: PathBuf,
    /// Credentials to accept (added to the stored ones). When none are given and none are
    /// stored, a pair is generated on first start.
    pub credential: Option<Credential>,
    /// In-progress tasks with no report for this long are stopped (the real server: 7200 s).
    pub task_timeout_sec: i64,
    /// Workers vanish this long after their last report (the real server: 600 s).
    pub worker_timeout_sec: i64,
    /// A request's headers must arrive within this (10 s).
    pub header_read_timeout: Duration,
    /// A connection with nothing moving for this long is closed (120 s).
    pub idle_timeout: Duration,
    /// Open connections per port (API, files) at most (512, fewer when the open-file limit
    /// is low); more are closed at once.
    pub max_connections: usize,
}

impl ServerConfig {
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 8008,
            files_port: 8081,
            web_port: None,
            data_dir,
            credential: None,
            task_timeout_sec: 7200,
            worker_timeout_sec: 600,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 512,
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
    web: Result<Option<web::Started>, String>,
    warnings: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    /// Opens the data folder, binds both ports and starts serving in the background.
    pub async fn start(config: ServerConfig) -> Result<Server, ServerError> {
        let mut warnings = private::prepare_data_dir(&config.data_dir)?;
        let files_root = config.data_dir.join("files");
        std::fs::create_dir_all(&files_root)
            .map_err(|e| ServerError::DataDir(files_root.clone(), e))?;
        let db_path = config.data_dir.join("server.sqlite3");
        warnings.extend(private::prepare_db_files(&db_path)?);
        for w in &warnings {
            tracing::warn!("{w}");
        }
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
            task_changed: tokio::sync::Notify::new(),
            body_budget: tokio::sync::Semaphore::new(http::BODY_BUDGET),
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

        let limits = conn::Limits {
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            max_connections: conn::connection_cap(config.max_connections),
        };
        if limits.max_connections < config.max_connections {
            let w = format!(
                "the open-file limit allows {} connections per port, not {}",
                limits.max_connections, config.max_connections
            );
            tracing::warn!("{w}");
            warnings.push(w);
        }
        let mut tasks = Vec::new();
        let web = match config.web_port {
            None => Ok(None),
            Some(port) => match bind(&config.host, port).await {
                Ok(listener) => web::start(
                    ctx.clone(),
                    db_path.clone(),
                    files_router.clone(),
                    files_addr.port(),
                    listener,
                    limits,
                    credential.access_key.clone(),
                )
                .map(|(started, handle)| {
                    tasks.push(handle);
                    Some(started)
                })
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        tasks.push(tokio::spawn(conn::serve(
            api_listener,
            api_router,
            limits,
            "API server",
        )));
        tasks.push(tokio::spawn(conn::serve(
            files_listener,
            files_router,
            limits,
            "files server",
        )));
        // Keys revoked by another process (`server keys revoke`) stop working within seconds.
        let keys_ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(KEY_RELOAD).await;
                let c = keys_ctx.clone();
                if let Ok(Err(e)) =
                    tokio::task::spawn_blocking(move || c.auth.reload(&c.store)).await
                {
                    tracing::warn!("cannot re-read the access keys: {e}");
                }
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
            web,
            warnings,
            tasks,
        })
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    pub fn files_addr(&self) -> SocketAddr {
        self.files_addr
    }

    /// Where the dashboard listens, when it runs.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web
            .as_ref()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.addr))
    }

    /// A link that signs a browser in to the dashboard, once.
    pub fn web_signin_link(&self) -> Option<&str> {
        self.web
            .as_ref()
            .ok()
            .and_then(|w| w.as_ref().map(|w| w.signin_link.as_str()))
    }

    /// Why the dashboard asked for is not running.
    pub fn web_error(&self) -> Option<&str> {
        self.web.as_ref().err().map(String::as_str)
    }

    /// The credentials clients should use.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// True when this start generated the credentials (first start without keys).
    pub fn generated_credentials(&self) -> bool {
        self.generated
    }

    /// What the start found worth telling the operator (a data folder others can read).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Serves until `shutdown` completes.
    pub async fn run_until(self, shutdown: impl std::future::Future<Output = ()>) {
        shutdown.await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// How often a running server re-reads the access keys from its database.
pub const KEY_RELOAD: Duration = Duration::from_secs(2);

/// The database of a data folder that must already hold one (for `server keys`).
fn existing_store(data_dir: &Path) -> Result<store::Store, ServerError> {
    let db = data_dir.join("server.sqlite3");
    if !db.is_file() {
        return Err(ServerError::DataDir(
            data_dir.to_path_buf(),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no server database here (has the server been started with this --data-dir?)",
            ),
        ));
    }
    store::Store::open(&db).map_err(|e| ServerError::Database(db, e))
}

/// The access keys a server with this data folder accepts (secrets are not shown).
pub fn list_keys(data_dir: &Path) -> Result<Vec<String>, ServerError> {
    let store = existing_store(data_dir)?;
    Ok(store.write(|tx| auth::access_keys(tx))?)
}

/// Revokes an access key: it can no longer log in, and tokens obtained with it stop working
/// (within [`KEY_RELOAD`] in a running server). `false` when there is no such key.
pub fn revoke_key(data_dir: &Path, access_key: &str) -> Result<bool, ServerError> {
    let store = existing_store(data_dir)?;
    Ok(store.write(|tx| auth::revoke(tx, access_key))?)
}

async fn bind(host: &str, port: u16) -> Result<tokio::net::TcpListener, ServerError> {
    let addr = format!("{host}:{port}");
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| ServerError::Bind(addr, e))
}
