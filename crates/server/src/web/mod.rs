//! The dashboard: a small web UI on its own port (`--web-port`, 8080 by default, ClearML's web
//! port), served from the binary.
//!
//! - URLs follow ClearML's web app, so every link the SDK prints opens the matching page:
//!   `/projects`, `/projects/<pid|*>/experiments` (or `/tasks`), `.../<tid>/output/log`,
//!   `.../output/metrics/scalar`, `.../output/metrics/plots`, `.../output/debugImages`,
//!   `.../execution`, `.../artifacts`, `.../hyper-params/...`, `/workers-and-queues/{workers,queues}`.
//! - Pages are rendered on the server by hand-written code (`html`: every piece of data is
//!   escaped on its way in); charts are inline SVG drawn here (`charts`). The one script
//!   (`static/app.js`) only adds the console's live tail; everything works without it.
//! - Reads use a read-only SQLite connection of their own (`data`); actions (abort, enqueue,
//!   reset, clone) go through the API's own dispatch (`api::call`), so the status machine is
//!   the API's.
//! - Sign-in at `/` with one of the server's key pairs (fields `access_key`, `secret_key`)
//!   gives an `HttpOnly; SameSite=Lax` session cookie held in memory; every page needs it, and
//!   every action (a POST) also needs the session's CSRF token. A one-time sign-in link is made
//!   at start for the console. The API's own authentication is untouched.
//! - Downloads go through the files server, mounted under `/files` behind the session check
//!   (which hands the files server a fresh API token in the session's stead).

mod charts;
mod data;
mod html;
mod pages;
mod tabs;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::api::Ctx;
use crate::auth::constant_eq;
use html::{Page, esc};

const COOKIE: &str = "clearml_web_session";
const SESSION_SECONDS: i64 = 7 * 24 * 3600;

struct Session {
    csrf: String,
    expires: i64,
    /// The key pair signed in with: revoking it ends the session.
    access_key: String,
    created: i64,
}

/// The dashboard's state.
pub(crate) struct Web {
    ctx: Arc<Ctx>,
    db_path: PathBuf,
    db: Mutex<Option<data::Db>>,
    sessions: Mutex<HashMap<String, Session>>,
    /// The one-time sign-in token, until used.
    once: Mutex<Option<String>>,
    /// The files server's port: artifact URLs on it are served under `/files` here.
    files_port: u16,
    /// The key a one-time sign-in link stands for (the server's own).
    admin_key: String,
}

/// A started dashboard: where it listens and the one-time sign-in link.
pub(crate) struct Started {
    pub addr: SocketAddr,
    pub signin_link: String,
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Serves the dashboard on `listener` in the background.
pub(crate) fn start(
    ctx: Arc<Ctx>,
    db_path: PathBuf,
    files_router: Router,
    files_port: u16,
    listener: tokio::net::TcpListener,
    limits: crate::conn::Limits,
    admin_key: String,
) -> std::io::Result<(Started, tokio::task::JoinHandle<()>)> {
    let addr = listener.local_addr()?;
    let once = crate::auth::random_token(40);
    let web = Arc::new(Web {
        ctx,
        db_path,
        db: Mutex::new(None),
        sessions: Mutex::new(HashMap::new()),
        once: Mutex::new(Some(once.clone())),
        files_port,
        admin_key,
    });
    let app = router(web, files_router);
    // The same header-read and idle timeouts and connection cap as the API listener.
    let handle = tokio::spawn(crate::conn::serve(listener, app, limits, "dashboard"));
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    Ok((
        Started {
            addr,
            signin_link: format!("http://{host}:{}/signin/{once}", addr.port()),
        },
        handle,
    ))
}

fn router(web: Arc<Web>, files_router: Router) -> Router {
    let files = Router::new()
        .nest_service("/files", files_router)
        .layer(middleware::from_fn_with_state(web.clone(), files_guard));
    Router::new()
        .route("/", get(signin_page).post(signin))
        .route("/signin/{token}", get(signin_once))
        .route("/signout", post(signout))
        .route("/static/{name}", get(static_file))
        .route("/projects", get(pages::projects))
        .route("/projects/{pid}", get(pages::project_root))
        .route("/projects/{pid}/{section}", get(pages::task_list))
        .route("/projects/{pid}/{section}/{tid}", get(pages::task_page))
        .route(
            "/projects/{pid}/{section}/{tid}/{*rest}",
            get(pages::task_page),
        )
        .route("/workers-and-queues", get(pages::workers))
        .route("/workers-and-queues/workers", get(pages::workers))
        .route("/workers-and-queues/queues", get(pages::queues))
        .route("/web-data/log/{tid}", get(tabs::log_tail))
        .route("/actions/tasks/{tid}/{action}", post(task_action))
        .merge(files)
        .fallback(not_found)
        .with_state(web)
}

impl Web {
    /// The session of a request, if it carries a live one: `(token, csrf)`.
    fn session(&self, headers: &HeaderMap) -> Option<(String, String)> {
        self.live_session(headers, |token, s| (token.to_string(), s.csrf.clone()))
    }

    /// Who the session acts as when it calls the API or the files server.
    fn session_caller(&self, headers: &HeaderMap) -> Option<crate::auth::Caller> {
        self.live_session(headers, |_, s| crate::auth::Caller {
            access_key: Some(s.access_key.clone()),
            login_iat: s.created,
            identity: self.ctx.auth.identity_of_key(&s.access_key),
        })
    }

    /// The request's session, unless it expired or its key was revoked since.
    fn live_session<T>(
        &self,
        headers: &HeaderMap,
        f: impl FnOnce(&str, &Session) -> T,
    ) -> Option<T> {
        let token = cookie(headers, COOKIE)?;
        let keys: Vec<String> = self
            .ctx
            .auth
            .credentials()
            .into_iter()
            .map(|c| c.access_key)
            .collect();
        let mut sessions = lock(&self.sessions);
        let t = now();
        sessions.retain(|_, s| s.expires > t && keys.contains(&s.access_key));
        sessions.get(&token).map(|s| f(&token, s))
    }

    fn new_session(&self, access_key: &str) -> String {
        let token = crate::auth::random_token(43);
        lock(&self.sessions).insert(
            token.clone(),
            Session {
                csrf: crate::auth::random_token(32),
                expires: now() + SESSION_SECONDS,
                access_key: access_key.to_string(),
                created: now(),
            },
        );
        token
    }

    fn credentials_ok(&self, access_key: &str, secret_key: &str) -> bool {
        // Look at every pair so the time taken does not say which key exists.
        self.ctx.auth.credentials().iter().fold(false, |ok, c| {
            let a = constant_eq(&c.access_key, access_key);
            let s = constant_eq(&c.secret_key, secret_key);
            ok | (a & s)
        })
    }

    /// Runs `f` on the read-only connection (opened on first use) off the async threads.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&data::Db, &Ctx) -> Result<T, pages::PageError> + Send + 'static,
    ) -> Result<T, pages::PageError> {
        let web = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = lock(&web.db);
            if guard.is_none() {
                *guard = Some(data::Db::open(&web.db_path)?);
            }
            match guard.as_ref() {
                Some(db) => f(db, &web.ctx),
                None => Err(pages::PageError::Internal("no database".into())),
            }
        })
        .await
        .map_err(|e| pages::PageError::Internal(e.to_string()))?
    }

    /// The dashboard path of a file the files server holds (`uri` on the files port, or under
    /// `/files` on any port), else `None`.
    fn file_link(&self, uri: &str) -> Option<String> {
        let rest = uri
            .strip_prefix("http://")
            .or_else(|| uri.strip_prefix("https://"))?;
        let (authority, path) = rest.split_once('/')?;
        let port = authority
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if let Some(p) = path.strip_prefix("files/") {
            return Some(format!("/files/{p}"));
        }
        (port == Some(self.files_port)).then(|| format!("/files/{path}"))
    }
}

/// A cookie's value from the request headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name && !v.is_empty()).then(|| v.to_string())
        })
}

/// An HTML response with the headers every page gets.
fn html_response(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: http: https:; script-src 'self'; \
             style-src 'self'; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    resp
}

fn redirect(to: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// Only paths on this site may be redirect targets (`/x`, never `//host` or `/\host`).
fn local_path(p: &str) -> Option<&str> {
    (p.starts_with('/')
        && !p.starts_with("//")
        && !p.starts_with("/\\")
        && !p.contains(['\r', '\n']))
    .then_some(p)
}

/// Where a request without a session goes: the sign-in page, then back here.
fn to_signin(uri: &axum::http::Uri) -> Response {
    let back = uri.path_and_query().map_or("/projects", |p| p.as_str());
    redirect(&format!("/?next={}", html::enc(back)))
}

fn message_page(status: StatusCode, title: &str, msg: &str, csrf: Option<&str>) -> Response {
    let mut p = Page::new(title, "", csrf);
    p.raw("<h1>")
        .text(title)
        .raw("</h1><p class=\"error\">")
        .text(msg)
        .raw("</p>");
    html_response(status, p.finish())
}

async fn not_found(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    let csrf = web.session(&headers).map(|s| s.1);
    message_page(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page.",
        csrf.as_deref(),
    )
}

fn signin_form(next: &str, error: Option<&str>) -> String {
    let mut p = Page::new("Sign in", "", None);
    p.raw("<div class=\"signin\"><h1>Sign in</h1>");
    if let Some(e) = error {
        p.raw("<p class=\"error\" id=\"signin-error\">")
            .text(e)
            .raw("</p>");
    }
    p.raw(&format!(
        "<form method=\"post\" action=\"/\">\
         <input type=\"hidden\" name=\"next\" value=\"{}\">\
         <label>Access key <input name=\"access_key\" autocomplete=\"username\" required></label>\
         <label>Secret key <input name=\"secret_key\" type=\"password\" autocomplete=\"current-password\" required></label>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"hint\">Use a key pair of this server (the one <code>clearml-agent server</code> printed \
         at start, or any pair in its database); or open the one-time sign-in link it printed.</p></div>",
        esc(next)
    ));
    p.finish()
}

async fn signin_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let next = q
        .get("next")
        .and_then(|n| local_path(n))
        .unwrap_or("/projects");
    if web.session(&headers).is_some() {
        return redirect(next);
    }
    html_response(StatusCode::OK, signin_form(next, None))
}

fn session_cookie(token: &str, max_age: i64) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn signed_in(web: &Web, access_key: &str, to: &str) -> Response {
    let token = web.new_session(access_key);
    let mut resp = redirect(to);
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&token, SESSION_SECONDS));
    resp
}

async fn signin(
    State(web): State<Arc<Web>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or_default();
    let next = local_path(field("next")).unwrap_or("/projects");
    if web.credentials_ok(field("access_key"), field("secret_key")) {
        return signed_in(&web, field("access_key"), next);
    }
    html_response(
        StatusCode::UNAUTHORIZED,
        signin_form(next, Some("Wrong access key or secret key.")),
    )
}

async fn signin_once(State(web): State<Arc<Web>>, Path(token): Path<String>) -> Response {
    let ok = {
        let mut once = lock(&web.once);
        match once.as_deref() {
            Some(t) if constant_eq(t, &token) => {
                *once = None;
                true
            }
            _ => false,
        }
    };
    if ok {
        return signed_in(&web, &web.admin_key, "/projects");
    }
    html_response(
        StatusCode::UNAUTHORIZED,
        signin_form(
            "/projects",
            Some("That sign-in link is not valid (it works once). Sign in with a key pair."),
        ),
    )
}

async fn signout(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some((token, csrf)) = web.session(&headers) {
        if !form.get("csrf").is_some_and(|c| constant_eq(c, &csrf)) {
            return csrf_rejected();
        }
        lock(&web.sessions).remove(&token);
    }
    let mut resp = redirect("/");
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie("", 0));
    resp
}

fn csrf_rejected() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "Refused",
        "The form's CSRF token does not match this session. Reload the page and try again.",
        None,
    )
}

async fn static_file(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.js" => (
            include_str!("static/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "style.css" => (include_str!("static/style.css"), "text/css; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

/// Downloads need the session; then the files server answers.
async fn files_guard(State(web): State<Arc<Web>>, request: Request, next: Next) -> Response {
    let Some(caller) = web.session_caller(request.headers()) else {
        return message_page(
            StatusCode::UNAUTHORIZED,
            "Sign in first",
            "Downloads need a dashboard session.",
            None,
        );
    };
    if request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    // The files server wants an API token for downloads: the session stands in for one.
    let mut request = request;
    match web
        .ctx
        .auth
        .issue(Some(&caller))
        .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
    {
        Ok(Ok(v)) => {
            request.headers_mut().insert(header::AUTHORIZATION, v);
        }
        _ => return StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
    next.run(request).await
}

/// Runs an API call through the API's own dispatch, off the async threads.
async fn api_call(web: &Arc<Web>, endpoint: &'static str, body: Value) -> Result<Value, String> {
    let ctx = web.ctx.clone();
    let body: Map<String, Value> = match body {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    tokio::task::spawn_blocking(move || {
        let req = crate::req::Req {
            body,
            lines: None,
            bad_lines: Vec::new(),
            caller: None,
            worker_header: None,
        };
        match crate::api::call(&ctx, endpoint, &req) {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(e.msg),
            None => Err(format!("{endpoint} is not available")),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// `POST /actions/tasks/<tid>/<abort|enqueue|dequeue|reset|clone>` with the CSRF token.
async fn task_action(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path((tid, action)): Path<(String, String)>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let Some((_, csrf)) = web.session(&headers) else {
        return message_page(
            StatusCode::FORBIDDEN,
            "Sign in first",
            "Actions need a dashboard session.",
            None,
        );
    };
    if !form.get("csrf").is_some_and(|c| constant_eq(c, &csrf)) {
        return csrf_rejected();
    }
    let back = form
        .get("back")
        .and_then(|b| local_path(b))
        .map(|b| b.split('?').next().unwrap_or(b).to_string())
        .unwrap_or_else(|| format!("/projects/*/experiments/{}/execution", html::enc(&tid)));
    let result = match action.as_str() {
        "abort" => api_call(
            &web,
            "tasks.stop",
            json!({"task": tid, "status_reason": "aborted from the dashboard"}),
        )
        .await
        .map(|_| "Abort requested.".to_string()),
        "enqueue" => {
            let queue = form.get("queue").cloned().unwrap_or_default();
            if queue.is_empty() {
                Err("choose a queue".to_string())
            } else {
                api_call(&web, "tasks.enqueue", json!({"task": tid, "queue": queue}))
                    .await
                    .map(|_| "Enqueued.".to_string())
            }
        }
        "dequeue" => api_call(&web, "tasks.dequeue", json!({"task": tid}))
            .await
            .map(|_| "Dequeued.".to_string()),
        "reset" => api_call(&web, "tasks.reset", json!({"task": tid}))
            .await
            .map(|_| "Reset: the task is a draft again and its results are gone.".to_string()),
        "clone" => {
            let name = form.get("name").cloned().unwrap_or_default();
            let mut body = json!({"task": tid});
            if !name.trim().is_empty() {
                body["new_task_name"] = json!(name.trim());
            }
            match api_call(&web, "tasks.clone", body).await {
                Ok(v) => {
                    let id = v.get("id").and_then(Value::as_str).unwrap_or_default();
                    return redirect(&format!(
                        "/projects/*/experiments/{}/execution?notice={}",
                        html::enc(id),
                        html::enc("Cloned: this is the new draft.")
                    ));
                }
                Err(e) => Err(e),
            }
        }
        _ => Err(format!("unknown action {action}")),
    };
    match result {
        Ok(msg) => redirect(&format!("{back}?notice={}", html::enc(&msg))),
        Err(e) => redirect(&format!("{back}?error={}", html::enc(&e))),
    }
}

#[cfg(test)]
mod tests;
