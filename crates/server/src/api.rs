//! Endpoint dispatch: `service.action` to the function that implements it.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::req::Req;
use crate::store::{Doc, Store};

/// A call to run on the database thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// Starts the thread that runs every API call, one at a time. SQLite has one writer anyway;
/// feeding it from a queue avoids hundreds of blocking threads fighting over one lock.
pub fn start_db_thread() -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let spawned = std::thread::Builder::new()
        .name("clearml-db".into())
        .spawn(move || {
            for job in rx {
                // A panic in one call must not take the server down with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the database thread: {e}");
    }
    tx
}

/// Everything an endpoint can use.
pub struct Ctx {
    /// Where calls run (see [`start_db_thread`]).
    pub jobs: std::sync::mpsc::Sender<Job>,
    pub store: Store,
    pub auth: Auth,
    /// Registered workers. Like the real server's Redis entries they expire and are not kept
    /// across restarts: workers report every 30 s and re-register by themselves.
    pub workers: Mutex<HashMap<String, Doc>>,
    /// Wakes long-polling `queues.get_next_task` calls when a task is enqueued.
    pub queue_changed: tokio::sync::Notify,
    /// Wakes long-polling `tasks.get_all` calls (`wait_ms` with `wait_while`) when a task
    /// may have changed: an agent's abort watch learns of `tasks.stop` at once.
    pub task_changed: tokio::sync::Notify,
    /// Bounds the request bodies read and parsed at once (see [`crate::http::BODY_BUDGET`]).
    pub body_budget: tokio::sync::Semaphore,
    /// A worker is considered gone this long after its last report (the real default is 600 s).
    pub worker_timeout_sec: i64,
    /// `tasks.stop` stops a task at once when no worker reported on it for this long.
    pub task_update_timeout_sec: i64,
    /// Queue and worker statistics over time.
    pub series: crate::metrics_series::Series,
}

thread_local! {
    /// As whom the call running on this thread acts (set by [`call`] for its duration). A
    /// thread-local instead of a parameter: calls run one at a time and synchronously, and
    /// every endpoint that records an owner already asks `ctx.user()`.
    static ACTING: std::cell::RefCell<Option<crate::auth::Identity>> =
        const { std::cell::RefCell::new(None) };
}

/// Restores the previous identity when a call ends (also when it panics).
struct Acting(Option<crate::auth::Identity>);

impl Acting {
    fn set(identity: Option<crate::auth::Identity>) -> Acting {
        Acting(ACTING.with(|a| a.replace(identity)))
    }
}

impl Drop for Acting {
    fn drop(&mut self) {
        let previous = self.0.take();
        ACTING.with(|a| *a.borrow_mut() = previous);
    }
}

impl Ctx {
    /// The user the current call acts as (the server's own user outside a call).
    pub fn user(&self) -> String {
        self.identity().user
    }

    /// The identity the current call acts as.
    pub fn identity(&self) -> crate::auth::Identity {
        ACTING
            .with(|a| a.borrow().clone())
            .unwrap_or_else(|| self.auth.identity.clone())
    }

    pub fn company(&self) -> &str {
        &self.auth.identity.company
    }
}

/// Endpoints that answer without a token.
pub fn is_public(endpoint: &str) -> bool {
    matches!(
        endpoint,
        "debug.ping" | "server.info" | "auth.fixed_users_mode" | "login.supported_modes"
    )
}

/// Runs one call. `None` means no such endpoint.
pub fn call(ctx: &Ctx, endpoint: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let acting = Acting::set(req.caller.as_ref().map(|c| c.identity.clone()));
    let result = dispatch(ctx, endpoint, req);
    drop(acting);
    if let Some(Ok(reply)) = &result {
        let idle_poll =
            endpoint == "queues.get_next_task" && reply.as_object().is_some_and(|m| m.is_empty());
        if !idle_poll && crate::metrics_series::changes_queues(endpoint) {
            ctx.series.sample_queues(ctx);
        }
        if may_change_a_task(endpoint) {
            ctx.task_changed.notify_waiters();
        }
    }
    result
}

/// A call after which a task's status may differ: every `tasks.*` write (and queue and
/// project calls, which can move or delete tasks). Reads and pings wake nobody.
fn may_change_a_task(endpoint: &str) -> bool {
    let Some((service, action)) = endpoint.split_once('.') else {
        return false;
    };
    matches!(service, "tasks" | "queues" | "projects")
        && !action.starts_with("get_")
        && action != "ping"
}

fn dispatch(ctx: &Ctx, endpoint: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let (service, action) = endpoint.split_once('.')?;
    match service {
        "tasks" => crate::project_stats::tasks(ctx, action, req)
            .or_else(|| crate::bulk::tasks(ctx, action, req))
            .or_else(|| crate::tasks::call(ctx, action, req)),
        "queues" => {
            crate::bulk::queues(ctx, action, req).or_else(|| crate::queues::call(ctx, action, req))
        }
        "projects" => crate::project_stats::projects(ctx, action, req)
            .or_else(|| crate::bulk::projects(ctx, action, req))
            .or_else(|| crate::projects::call(ctx, action, req)),
        "organization" => crate::bulk::organization(ctx, action, req),
        "workers" => crate::workers::call(ctx, action, req),
        "events" => {
            crate::bulk::events(ctx, action, req).or_else(|| crate::events::call(ctx, action, req))
        }
        "models" => crate::models::call(ctx, action, req),
        "auth" | "server" | "debug" | "users" | "login" => misc(ctx, endpoint, req),
        _ => None,
    }
}

fn misc(ctx: &Ctx, endpoint: &str, req: &Req) -> Option<Result<Value, ApiError>> {
    let r = match endpoint {
        "auth.login" => ctx
            .auth
            .issue(req.caller.as_ref())
            .map(|t| json!({ "token": t })),
        "auth.revoke_credentials" => req.str("access_key").and_then(|key| {
            if !ctx.auth.may_manage_key(&ctx.identity(), key) {
                return Err(ApiError::new(
                    400,
                    0,
                    format!("Invalid access key: access_key={key}"),
                ));
            }
            let revoked = ctx.store.write(|tx| crate::auth::revoke(tx, key))?;
            if !revoked {
                return Err(ApiError::new(
                    400,
                    0,
                    format!("Invalid access key: access_key={key}"),
                ));
            }
            ctx.auth.forget(key);
            Ok(json!({ "revoked": 1 }))
        }),
        "auth.validate_token" => req.opt_str("token").map(|token| {
            match ctx.auth.verify(token.unwrap_or_default()) {
                Ok(c) => {
                    json!({"valid": true, "user": c.identity.user, "company": c.identity.company})
                }
                Err(e) => json!({"valid": false, "msg": e.msg}),
            }
        }),
        "auth.create_credentials" => ctx
            .store
            .write(|tx| {
                let cred = crate::auth::Credential {
                    access_key: crate::auth::random_access_key(),
                    secret_key: crate::auth::random_token(50),
                };
                // The key is the calling user's (an admin makes one for a user by
                // impersonating them).
                ctx.auth.give_key(tx, &ctx.user(), &cred.access_key)?;
                let mut all = ctx.auth.credentials();
                all.push(cred.clone());
                let text =
                    serde_json::to_string(&all).map_err(|e| ApiError::internal(e.to_string()))?;
                tx.set_meta("credentials", &text)?;
                Ok(cred)
            })
            .and_then(|cred| {
                // Only after the commit: a key that was not stored must not work either.
                ctx.auth.add_credential(cred.clone());
                Ok(json!({"credentials": {
                    "access_key": cred.access_key,
                    "secret_key": cred.secret_key,
                    "label": req.opt_str("label")?.unwrap_or_default(),
                }}))
            }),
        "auth.get_credentials" => Ok(json!({
            "credentials": ctx.auth.credentials().iter()
                .filter(|c| ctx.auth.may_manage_key(&ctx.identity(), &c.access_key))
                .map(|c| json!({"access_key": c.access_key}))
                .collect::<Vec<_>>()
        })),
        "auth.fixed_users_mode" => Ok(json!({"enabled": false, "guest": {"enabled": false}})),
        "login.supported_modes" => Ok(json!({
            "authentication": {"fixed_users": false},
            "server_errors": {"missed_es_upgrade": false, "es_connection_error": false},
        })),
        "server.info" => Ok(json!({
            "version": crate::auth::SERVER_VERSION,
            "build": "embedded",
            "commit": env!("CARGO_PKG_VERSION"),
            "uid": ctx.company(),
            "api_version": crate::auth::API_VERSION,
            // Our extension: `queues.get_next_task` takes `wait_ms` and a `queues` list.
            "long_poll": true,
            // Our extension: `tasks.get_all` takes `wait_ms` and `wait_while` (`status` and
            // `status_message` of the one task asked for) and answers when they change.
            "task_long_poll": true,
        })),
        "debug.ping" => {
            let mut out = req.body.clone();
            out.insert("msg".into(), Value::String("ClearML server".into()));
            Ok(Value::Object(out))
        }
        "users.get_current_user" => Ok(json!({
            "user": {
                "id": ctx.user(),
                "name": ctx.identity().user_name,
                "given_name": "ClearML",
                "family_name": "Agent",
                "company": {"id": ctx.company(), "name": ctx.auth.identity.company_name},
                "role": ctx.identity().role,
                "created": "2024-01-01T00:00:00+00:00",
                "preferences": {},
            },
            "getting_started": {},
            "settings": {"max_download_items": 1000},
        })),
        "users.get_all" => Ok(json!({
            "users": ctx.auth.users().iter()
                .map(|u| json!({"id": u.user, "name": u.user_name, "company": u.company,
                                "role": u.role}))
                .collect::<Vec<_>>()
        })),
        "auth.create_user" => admin_only(ctx, endpoint).and_then(|()| {
            let name = req.str("name")?;
            let role = req.opt_str("role")?.unwrap_or("user");
            if !matches!(role, "user" | "admin") {
                return Err(ApiError::validation(format!(
                    "role must be user or admin, got {role}"
                )));
            }
            let id = ctx.store.write(|tx| ctx.auth.create_user(tx, name, role))?;
            Ok(json!({ "id": id }))
        }),
        "auth.get_token_for_user" => admin_only(ctx, endpoint).and_then(|()| {
            let id = req.str("user")?;
            let Some(identity) = ctx.auth.user(id) else {
                return Err(ApiError::new(400, 10, format!("Invalid user id: id={id}")));
            };
            let caller = req
                .caller
                .clone()
                .map(|c| crate::auth::Caller { identity, ..c });
            let token = ctx.auth.issue(caller.as_ref())?;
            Ok(json!({ "token": token }))
        }),
        _ => return None,
    };
    Some(r)
}

/// Endpoints for administrators only (admin or a system role): refused with 403 otherwise.
fn admin_only(ctx: &Ctx, endpoint: &str) -> Result<(), ApiError> {
    let role = ctx.identity().role;
    if crate::auth::may_impersonate(&role) {
        return Ok(());
    }
    Err(ApiError::new(
        403,
        0,
        format!(
            "Forbidden (role not allowed): {endpoint} needs an admin, the caller's role is {role}"
        ),
    ))
}

/// A context over a fresh database in a temporary folder, for unit tests.
#[cfg(test)]
pub(crate) fn test_ctx() -> (tempfile::TempDir, Ctx) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("db.sqlite3")).expect("store");
    let auth = Auth::load(&store, None).expect("auth");
    let ctx = Ctx {
        jobs: start_db_thread(),
        store,
        auth,
        workers: Mutex::new(HashMap::new()),
        queue_changed: tokio::sync::Notify::new(),
        task_changed: tokio::sync::Notify::new(),
        body_budget: tokio::sync::Semaphore::new(crate::http::BODY_BUDGET),
        worker_timeout_sec: 600,
        task_update_timeout_sec: 600,
        series: Default::default(),
    };
    (dir, ctx)
}
