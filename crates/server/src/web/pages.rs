//! The pages: projects, task lists, the task page and its tabs, queues and workers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::charts;
use super::data::{self, Db, Doc};
use super::html::{Page, csrf_field, enc, esc, status_badge};
use super::{Web, html_response, message_page, redirect, to_signin};
use crate::api::Ctx;

/// Console events per page.
const LOG_PAGE: i64 = 1000;
/// Tasks per list page.
const LIST_PAGE: usize = 100;
/// Debug images kept per (metric, variant): the newest iterations.
const IMAGES_PER_VARIANT: usize = 3;
/// Statuses a task can be filtered by.
const STATUSES: &[&str] = &[
    "created",
    "queued",
    "in_progress",
    "stopped",
    "completed",
    "failed",
    "closed",
    "published",
];

#[derive(Debug)]
pub enum PageError {
    NotFound(String),
    Internal(String),
}

impl From<rusqlite::Error> for PageError {
    fn from(e: rusqlite::Error) -> Self {
        PageError::Internal(format!("database: {e}"))
    }
}

type Q = Query<HashMap<String, String>>;

fn s<'a>(d: &'a Doc, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn at<'a>(d: &'a Doc, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

fn at_str<'a>(d: &'a Doc, path: &str) -> &'a str {
    at(d, path).and_then(Value::as_str).unwrap_or_default()
}

/// `2024-05-01T10:00:00.123+00:00` as `2024-05-01 10:00:00`.
fn when(t: &str) -> String {
    let t = t.replace('T', " ");
    t.get(..19).map_or(t.clone(), str::to_string)
}

fn ms_when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

fn finish(web: &Web, headers: &HeaderMap, result: Result<Page, PageError>) -> Response {
    let csrf = web.session(headers).map(|s| s.1);
    match result {
        Ok(p) => html_response(StatusCode::OK, p.finish()),
        Err(PageError::NotFound(what)) => {
            message_page(StatusCode::NOT_FOUND, "Not found", &what, csrf.as_deref())
        }
        Err(PageError::Internal(e)) => message_page(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Error",
            &e,
            csrf.as_deref(),
        ),
    }
}

macro_rules! session_or_signin {
    ($web:expr, $headers:expr, $uri:expr) => {
        match $web.session(&$headers) {
            Some((_, csrf)) => csrf,
            None => return to_signin(&$uri),
        }
    };
}

fn project_names(db: &Db) -> Result<HashMap<String, String>, PageError> {
    Ok(db
        .all("projects")?
        .into_iter()
        .map(|p| (s(&p, "id").to_string(), s(&p, "name").to_string()))
        .collect())
}

fn queue_names(db: &Db) -> Result<HashMap<String, String>, PageError> {
    Ok(db
        .all("queues")?
        .into_iter()
        .map(|q| (s(&q, "id").to_string(), s(&q, "name").to_string()))
        .collect())
}

fn user_name(ctx: &Ctx, id: &str) -> String {
    if id == ctx.auth.identity.user {
        ctx.auth.identity.user_name.clone()
    } else {
        id.to_string()
    }
}

fn task_href(pid: &str, tid: &str, tab: &str) -> String {
    section_href(pid, "experiments", tid, tab)
}

/// A task page's path; `section` is `experiments` or `tasks` (newer SDKs print the latter).
fn section_href(pid: &str, section: &str, tid: &str, tab: &str) -> String {
    let pid = if pid.is_empty() { "*" } else { pid };
    format!("/projects/{}/{section}/{}/{tab}", enc_pid(pid), enc(tid))
}

fn enc_pid(pid: &str) -> String {
    if pid == "*" { "*".into() } else { enc(pid) }
}

// ---------------------------------------------------------------------------------------------
// projects and task lists

pub async fn projects(State(web): State<Arc<Web>>, headers: HeaderMap, uri: Uri) -> Response {
    let csrf = session_or_signin!(web, headers, uri);
    let r = web
        .read(move |db, _| {
            let tasks = db.all("tasks")?;
            let mut counts: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
            for t in &tasks {
                *counts
                    .entry(s(t, "project").to_string())
                    .or_default()
                    .entry(s(t, "status").to_string())
                    .or_default() += 1;
            }
            let mut projects = db.all("projects")?;
            projects.sort_by_key(|p| s(p, "name").to_lowercase());
            let mut p = Page::new("Projects", "projects", Some(&csrf));
            p.raw("<h1>Projects</h1><table class=\"list\"><thead><tr><th>Project</th><th>Tasks</th><th>By status</th><th>Last update</th></tr></thead><tbody>");
            let row = |p: &mut Page, href: String, name: &str, c: Option<&BTreeMap<String, usize>>, upd: &str| {
                let total: usize = c.map_or(0, |c| c.values().sum());
                let by: String = c
                    .map(|c| {
                        c.iter()
                            .map(|(k, n)| format!("{} {n}", status_badge(k)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default();
                p.raw(&format!(
                    "<tr><td><a href=\"{href}\">{}</a></td><td>{total}</td><td>{by}</td><td>{}</td></tr>",
                    esc(name),
                    esc(&when(upd))
                ));
            };
            let mut all: BTreeMap<String, usize> = BTreeMap::new();
            for c in counts.values() {
                for (k, n) in c {
                    *all.entry(k.clone()).or_default() += n;
                }
            }
            row(&mut p, "/projects/*/experiments".into(), "All experiments", Some(&all), "");
            for pr in &projects {
                let id = s(pr, "id");
                row(
                    &mut p,
                    format!("/projects/{}/experiments", enc(id)),
                    s(pr, "name"),
                    counts.get(id),
                    s(pr, "last_update"),
                );
            }
            p.raw("</tbody></table>");
            Ok(p)
        })
        .await;
    finish(&web, &headers, r)
}

pub async fn project_root(Path(pid): Path<String>) -> Response {
    redirect(&format!("/projects/{}/experiments", enc_pid(&pid)))
}

pub async fn task_list(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    Path((pid, section)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let csrf = session_or_signin!(web, headers, uri);
    if section != "experiments" && section != "tasks" {
        return finish(
            &web,
            &headers,
            Err(PageError::NotFound("There is no such page.".into())),
        );
    }
    let r = web
        .read(move |db, ctx| {
            let project = if pid == "*" {
                None
            } else {
                Some(
                    db.doc("projects", &pid)?
                        .ok_or_else(|| PageError::NotFound(format!("No project {pid}.")))?,
                )
            };
            let status = q.get("status").filter(|v| !v.is_empty()).cloned();
            let name = q.get("name").map(|v| v.trim().to_lowercase()).filter(|v| !v.is_empty());
            let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(0);
            let projects = project_names(db)?;
            let queues = queue_names(db)?;
            let mut tasks: Vec<Doc> = db
                .all("tasks")?
                .into_iter()
                .filter(|t| pid == "*" || s(t, "project") == pid)
                .filter(|t| status.as_deref().is_none_or(|st| s(t, "status") == st))
                .filter(|t| {
                    name.as_deref()
                        .is_none_or(|n| s(t, "name").to_lowercase().contains(n))
                })
                .collect();
            tasks.reverse();
            let title = project
                .as_ref()
                .map_or("All experiments".to_string(), |p| s(p, "name").to_string());
            let mut p = Page::new(&title, "tasks", Some(&csrf));
            p.raw("<p class=\"crumbs\"><a href=\"/projects\">Projects</a> /</p><h1>")
                .text(&title)
                .raw("</h1>");
            let mut form = format!(
                "<form method=\"get\" class=\"filters\"><label>Name <input name=\"name\" value=\"{}\"></label>\
                 <label>Status <select name=\"status\"><option value=\"\">any</option>",
                esc(q.get("name").map(String::as_str).unwrap_or_default())
            );
            for st in STATUSES {
                let sel = if status.as_deref() == Some(*st) { " selected" } else { "" };
                let _ = write!(form, "<option{sel}>{st}</option>");
            }
            form.push_str("</select></label><button>Filter</button></form>");
            p.raw(&form);
            let total = tasks.len();
            let shown: Vec<&Doc> = tasks.iter().skip(page * LIST_PAGE).take(LIST_PAGE).collect();
            p.raw(&format!(
                "<p class=\"count\">{total} task(s){}</p>",
                if total > LIST_PAGE {
                    format!(", {} per page, newest first", LIST_PAGE)
                } else {
                    String::new()
                }
            ));
            p.raw("<table class=\"list tasks\"><thead><tr><th>Name</th><th>Status</th><th>Type</th><th>Project</th><th>User</th><th>Started</th><th>Updated</th><th>Queue</th></tr></thead><tbody>");
            for t in shown {
                let tid = s(t, "id");
                let tp = s(t, "project");
                let queue = at_str(t, "execution.queue");
                p.raw(&format!(
                    "<tr><td><a href=\"{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    task_href(tp, tid, "execution"),
                    esc(s(t, "name")),
                    status_badge(s(t, "status")),
                    esc(s(t, "type")),
                    esc(projects.get(tp).map_or(tp, String::as_str)),
                    esc(&user_name(ctx, s(t, "user"))),
                    esc(&when(s(t, "started"))),
                    esc(&when(s(t, "last_update"))),
                    esc(queues.get(queue).map_or(queue, String::as_str)),
                ));
            }
            p.raw("</tbody></table>");
            if total > LIST_PAGE {
                let mut keep = String::new();
                if let Some(n) = q.get("name") {
                    let _ = write!(keep, "&name={}", enc(n));
                }
                if let Some(st) = &status {
                    let _ = write!(keep, "&status={}", enc(st));
                }
                p.raw("<p class=\"pager\">");
                if page > 0 {
                    p.raw(&format!("<a href=\"?page={}{}\">newer</a> ", page - 1, esc(&keep)));
                }
                if (page + 1) * LIST_PAGE < total {
                    p.raw(&format!("<a href=\"?page={}{}\">older</a>", page + 1, esc(&keep)));
                }
                p.raw("</p>");
            }
            Ok(p)
        })
        .await;
    finish(&web, &headers, r)
}

// ---------------------------------------------------------------------------------------------
// the task page

#[derive(Clone, Copy, PartialEq)]
enum Tab {
    Execution,
    Config,
    Artifacts,
    Log,
    Scalars,
    Plots,
    Images,
}

const TABS: &[(Tab, &str, &str)] = &[
    (Tab::Execution, "execution", "Execution"),
    (Tab::Config, "hyper-params/hyper-param", "Configuration"),
    (Tab::Artifacts, "artifacts", "Artifacts"),
    (Tab::Log, "output/log", "Console"),
    (Tab::Scalars, "output/metrics/scalar", "Scalars"),
    (Tab::Plots, "output/metrics/plots", "Plots"),
    (Tab::Images, "output/debugImages", "Debug images"),
];

fn tab_of(rest: &str) -> Tab {
    let r = rest.trim_matches('/');
    if r.starts_with("output/log") {
        Tab::Log
    } else if r.starts_with("output/metrics/scalar") {
        Tab::Scalars
    } else if r.starts_with("output/metrics/plot") {
        Tab::Plots
    } else if r.starts_with("output/debugImages") || r.starts_with("output/debug") {
        Tab::Images
    } else if r.starts_with("hyper-params") || r.starts_with("configuration") {
        Tab::Config
    } else if r.starts_with("artifacts") || r.starts_with("models") {
        Tab::Artifacts
    } else {
        Tab::Execution
    }
}

pub async fn task_page(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    uri: Uri,
    Path(params): Path<HashMap<String, String>>,
    Query(q): Q,
) -> Response {
    let csrf = session_or_signin!(web, headers, uri);
    let section = params.get("section").cloned().unwrap_or_default();
    if section != "experiments" && section != "tasks" {
        return finish(
            &web,
            &headers,
            Err(PageError::NotFound("There is no such page.".into())),
        );
    }
    let tid = params.get("tid").cloned().unwrap_or_default();
    let tab = tab_of(params.get("rest").map(String::as_str).unwrap_or_default());
    let web2 = web.clone();
    let r = web
        .read(move |db, ctx| {
            let t = db
                .doc("tasks", &tid)?
                .ok_or_else(|| PageError::NotFound(format!("No task {tid}.")))?;
            task_view(&web2, db, ctx, &t, (tab, &section), &q, &csrf)
        })
        .await;
    finish(&web, &headers, r)
}

fn task_view(
    web: &Web,
    db: &Db,
    ctx: &Ctx,
    t: &Doc,
    (tab, section): (Tab, &str),
    q: &HashMap<String, String>,
    csrf: &str,
) -> Result<Page, PageError> {
    let tid = s(t, "id");
    let pid = s(t, "project");
    let status = s(t, "status");
    let projects = project_names(db)?;
    let queues = queue_names(db)?;
    let mut p = Page::new(s(t, "name"), "tasks", Some(csrf));
    let pname = projects
        .get(pid)
        .cloned()
        .unwrap_or_else(|| "(no project)".into());
    p.raw(&format!(
        "<p class=\"crumbs\"><a href=\"/projects\">Projects</a> / <a href=\"/projects/{}/experiments\">{}</a> /</p>",
        enc_pid(if pid.is_empty() { "*" } else { pid }),
        esc(&pname)
    ));
    p.raw("<h1 id=\"task-name\">")
        .text(s(t, "name"))
        .raw("</h1>");
    if let Some(n) = q.get("notice") {
        p.raw("<p class=\"notice\">").text(n).raw("</p>");
    }
    if let Some(e) = q.get("error") {
        p.raw("<p class=\"error\">").text(e).raw("</p>");
    }
    // Status line and facts.
    let queue = at_str(t, "execution.queue");
    p.raw("<div class=\"facts\">");
    let fact = |p: &mut Page, k: &str, v: &str| {
        if !v.is_empty() {
            p.raw(&format!("<span><b>{}</b> {}</span>", esc(k), esc(v)));
        }
    };
    p.raw(&format!(
        "<span id=\"task-status\">{}</span>",
        status_badge(status)
    ));
    let msg = [s(t, "status_message"), s(t, "status_reason")]
        .iter()
        .filter(|m| !m.is_empty())
        .cloned()
        .collect::<Vec<_>>()
        .join(" · ");
    fact(&mut p, "message", &msg);
    fact(&mut p, "id", tid);
    fact(&mut p, "type", s(t, "type"));
    fact(&mut p, "user", &user_name(ctx, s(t, "user")));
    fact(&mut p, "created", &when(s(t, "created")));
    fact(&mut p, "started", &when(s(t, "started")));
    fact(&mut p, "updated", &when(s(t, "last_update")));
    fact(
        &mut p,
        "queue",
        queues.get(queue).map_or(queue, String::as_str),
    );
    fact(&mut p, "worker", s(t, "last_worker"));
    if let Some(it) = t.get("last_iteration").and_then(Value::as_i64) {
        fact(&mut p, "iteration", &it.to_string());
    }
    p.raw("</div>");
    // Actions.
    let here = section_href(
        pid,
        section,
        tid,
        TABS.iter()
            .find(|x| x.0 == tab)
            .map_or("execution", |x| x.1),
    );
    let action = |name: &str, label: &str, extra: &str| {
        format!(
            "<form method=\"post\" action=\"/actions/tasks/{}/{name}\">{}<input type=\"hidden\" name=\"back\" value=\"{}\">{extra}<button>{label}</button></form>",
            enc(tid),
            csrf_field(csrf),
            esc(&here)
        )
    };
    p.raw("<div class=\"actions\">");
    if matches!(status, "in_progress" | "queued") {
        p.raw(&action("abort", "Abort", ""));
    }
    if status == "queued" {
        p.raw(&action("dequeue", "Dequeue", ""));
    }
    if !matches!(
        status,
        "in_progress" | "queued" | "published" | "publishing"
    ) {
        let mut sel = String::from("<select name=\"queue\" aria-label=\"queue\">");
        let mut qs: Vec<(&String, &String)> = queues.iter().collect();
        qs.sort_by_key(|(_, n)| n.to_lowercase());
        for (id, name) in qs {
            let _ = write!(sel, "<option value=\"{}\">{}</option>", esc(id), esc(name));
        }
        sel.push_str("</select>");
        p.raw(&action("enqueue", "Enqueue", &sel));
    }
    if !matches!(status, "created" | "published") {
        p.raw(&action("reset", "Reset", ""));
    }
    p.raw(&action(
        "clone",
        "Clone",
        &format!(
            "<input name=\"name\" aria-label=\"new name\" value=\"Clone Of {}\">",
            esc(s(t, "name"))
        ),
    ));
    p.raw("</div>");
    // Tabs.
    p.raw("<nav class=\"tabs\">");
    for (k, path, label) in TABS {
        let class = if *k == tab { " class=\"on\"" } else { "" };
        p.raw(&format!(
            "<a href=\"{}\"{class}>{label}</a>",
            section_href(pid, section, tid, path)
        ));
    }
    p.raw("</nav><section class=\"tab\">");
    match tab {
        Tab::Execution => execution(&mut p, t),
        Tab::Config => config(&mut p, t),
        Tab::Artifacts => artifacts(&mut p, web, db, t)?,
        Tab::Log => log(&mut p, db, t, q)?,
        Tab::Scalars => scalars(&mut p, db, tid)?,
        Tab::Plots => plots(&mut p, db, tid)?,
        Tab::Images => images(&mut p, web, db, tid)?,
    }
    p.raw("</section>");
    Ok(p)
}

fn kv_table(p: &mut Page, rows: &[(&str, String)]) {
    p.raw("<table class=\"kv\">");
    for (k, v) in rows {
        p.raw(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)));
    }
    p.raw("</table>");
}

fn execution(p: &mut Page, t: &Doc) {
    p.raw("<h2>Source</h2>");
    let script = |k: &str| at_str(t, &format!("script.{k}")).to_string();
    kv_table(
        p,
        &[
            ("Repository", script("repository")),
            ("Branch", script("branch")),
            ("Commit", script("version_num")),
            ("Tag", script("tag")),
            ("Working directory", script("working_dir")),
            ("Entry point", script("entry_point")),
            ("Binary", script("binary")),
            ("Docker image", at_str(t, "container.image").to_string()),
        ],
    );
    let diff = script("diff");
    p.raw("<h2>Uncommitted changes</h2>");
    if diff.trim().is_empty() {
        p.raw("<p class=\"muted\">None.</p>");
    } else {
        p.raw("<pre class=\"diff\">").text(&diff).raw("</pre>");
    }
    p.raw("<h2>Installed packages</h2>");
    let req = at(t, "script.requirements");
    let mut any = false;
    if let Some(Value::Object(m)) = req {
        for (k, v) in m {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            if text.trim().is_empty() {
                continue;
            }
            any = true;
            p.raw(&format!("<h3>{}</h3><pre class=\"pkgs\">", esc(k)))
                .text(&text)
                .raw("</pre>");
        }
    }
    if !any {
        p.raw("<p class=\"muted\">None recorded.</p>");
    }
}

fn config(p: &mut Page, t: &Doc) {
    p.raw("<h2>Hyperparameters</h2>");
    match t.get("hyperparams") {
        Some(Value::Object(sections)) if !sections.is_empty() => {
            for (section, params) in sections {
                p.raw(&format!("<h3>{}</h3><table class=\"kv\">", esc(section)));
                if let Value::Object(params) = params {
                    for (name, param) in params {
                        let value = match param.get("value") {
                            Some(Value::String(s)) => s.clone(),
                            Some(Value::Null) | None => String::new(),
                            Some(v) => v.to_string(),
                        };
                        let desc = param
                            .get("description")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        p.raw(&format!(
                            "<tr><th>{}</th><td>{}</td><td class=\"muted\">{}</td></tr>",
                            esc(name),
                            esc(&value),
                            esc(desc)
                        ));
                    }
                }
                p.raw("</table>");
            }
        }
        _ => {
            p.raw("<p class=\"muted\">None.</p>");
        }
    }
    p.raw("<h2>Configuration objects</h2>");
    match t.get("configuration") {
        Some(Value::Object(items)) if !items.is_empty() => {
            for (name, item) in items {
                let value = match item.get("value") {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
                };
                let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
                p.raw(&format!(
                    "<h3>{} <small>{}</small></h3><pre>",
                    esc(name),
                    esc(kind)
                ))
                .text(&value)
                .raw("</pre>");
            }
        }
        _ => {
            p.raw("<p class=\"muted\">None.</p>");
        }
    }
}

fn link_or_text(web: &Web, uri: &str) -> String {
    match web.file_link(uri) {
        Some(href) => format!("<a href=\"{}\" download>{}</a>", esc(&href), esc(uri)),
        None if uri.starts_with("http://") || uri.starts_with("https://") => {
            format!(
                "<a href=\"{}\" rel=\"noreferrer\">{}</a>",
                esc(uri),
                esc(uri)
            )
        }
        None => format!("<code>{}</code>", esc(uri)),
    }
}

fn artifacts(p: &mut Page, web: &Web, db: &Db, t: &Doc) -> Result<(), PageError> {
    p.raw("<h2>Artifacts</h2>");
    let list = at(t, "execution.artifacts").and_then(Value::as_array);
    match list {
        Some(items) if !items.is_empty() => {
            p.raw("<table class=\"list\"><thead><tr><th>Key</th><th>Type</th><th>Mode</th><th>Size</th><th>File</th><th>Preview</th></tr></thead><tbody>");
            for a in items {
                let g = |k: &str| a.get(k).and_then(Value::as_str).unwrap_or_default();
                let size = a
                    .get("content_size")
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let preview = a
                    .get("type_data")
                    .and_then(|d| d.get("preview"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let preview: String = preview.chars().take(300).collect();
                p.raw(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><pre class=\"small\">{}</pre></td></tr>",
                    esc(g("key")),
                    esc(g("type")),
                    esc(g("mode")),
                    esc(&size),
                    link_or_text(web, g("uri")),
                    esc(&preview)
                ));
            }
            p.raw("</tbody></table>");
        }
        _ => {
            p.raw("<p class=\"muted\">None.</p>");
        }
    }
    p.raw("<h2>Models</h2>");
    let mut any = false;
    for dir in ["input", "output"] {
        let Some(models) = at(t, &format!("models.{dir}")).and_then(Value::as_array) else {
            continue;
        };
        for m in models {
            let id = m.get("model").and_then(Value::as_str).unwrap_or_default();
            let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
            let doc = db.doc("models", id)?;
            let uri = doc
                .as_ref()
                .map(|d| s(d, "uri").to_string())
                .unwrap_or_default();
            let mname = doc
                .as_ref()
                .map(|d| s(d, "name").to_string())
                .unwrap_or_default();
            if !any {
                p.raw("<table class=\"list\"><thead><tr><th>Direction</th><th>Name</th><th>Model</th><th>File</th></tr></thead><tbody>");
                any = true;
            }
            p.raw(&format!(
                "<tr><td>{dir}</td><td>{}</td><td>{} <small class=\"muted\">{}</small></td><td>{}</td></tr>",
                esc(name),
                esc(&mname),
                esc(id),
                if uri.is_empty() { String::new() } else { link_or_text(web, &uri) }
            ));
        }
    }
    if any {
        p.raw("</tbody></table>");
    } else {
        p.raw("<p class=\"muted\">None.</p>");
    }
    Ok(())
}

fn log_line(ev: &data::LogEvent) -> String {
    let ts = ev.doc.get("timestamp").and_then(Value::as_i64).unwrap_or(0);
    let msg = ev
        .doc
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let mut out = String::new();
    for line in msg.trim_end_matches('\n').split('\n') {
        let _ = writeln!(
            out,
            "<span class=\"ts\">{}</span> {}",
            esc(&ms_when(ts)),
            esc(line.trim_end_matches('\r'))
        );
    }
    out
}

fn log(p: &mut Page, db: &Db, t: &Doc, q: &HashMap<String, String>) -> Result<(), PageError> {
    let tid = s(t, "id");
    let search = q
        .get("q")
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty());
    let before = q.get("before").and_then(|v| v.parse::<i64>().ok());
    let total = db.log_count(tid, None)?;
    let matching = match &search {
        Some(sq) => db.log_count(tid, Some(sq))?,
        None => total,
    };
    let events = db.log_page(tid, before, search.as_deref(), LOG_PAGE)?;
    p.raw(&format!(
        "<form method=\"get\" class=\"filters\"><label>Search <input name=\"q\" value=\"{}\"></label><button>Search</button>{}</form>",
        esc(search.as_deref().unwrap_or_default()),
        if search.is_some() { "<a href=\"?\">clear</a>" } else { "" }
    ));
    let live =
        search.is_none() && before.is_none() && matches!(s(t, "status"), "in_progress" | "queued");
    p.raw(&format!(
        "<p class=\"count\">{} report(s) of console output{}; this page shows {} of them, the newest last. \
         Pages hold {LOG_PAGE} reports; older ones are a click away.{}</p>",
        total,
        match &search {
            Some(sq) => format!(", {matching} containing “{}”", esc(sq)),
            None => String::new(),
        },
        events.len(),
        if live { " The task is running: new lines appear here as they arrive." } else { "" }
    ));
    if let Some(first) = events.first()
        && events.len() as i64 == LOG_PAGE
    {
        let mut href = format!("?before={}", first.seq);
        if let Some(sq) = &search {
            let _ = write!(href, "&q={}", enc(sq));
        }
        p.raw(&format!(
            "<p class=\"pager\"><a href=\"{}\">older lines</a></p>",
            esc(&href)
        ));
    }
    let last = events.last().map_or(0, |e| e.seq);
    p.raw(&format!(
        "<pre id=\"console\" class=\"console\" data-task=\"{}\" data-after=\"{}\" data-live=\"{}\">",
        esc(tid),
        last,
        if live { "1" } else { "0" }
    ));
    for ev in &events {
        p.raw(&log_line(ev));
    }
    p.raw("</pre>");
    if before.is_some() {
        p.raw("<p class=\"pager\"><a href=\"?\">newest lines</a></p>");
    }
    Ok(())
}

fn scalars(p: &mut Page, db: &Db, tid: &str) -> Result<(), PageError> {
    let metrics = db.scalars(tid)?;
    let points: usize = metrics
        .values()
        .flat_map(|v| v.values())
        .map(|s| s.len())
        .sum();
    if metrics.is_empty() {
        p.raw("<p class=\"muted\">No scalars reported.</p>");
        return Ok(());
    }
    p.raw(&format!(
        "<p class=\"count\">{points} point(s). One chart per metric, a line per variant, x is the iteration. \
         Lines with more than {} points are drawn downsampled (per x bucket: the first, lowest and \
         highest point), so spikes stay visible; hover a line for its name.</p>",
        charts::MAX_POINTS
    ));
    let mut single: Vec<(String, String, f64)> = Vec::new();
    for (metric, variants) in &metrics {
        let mut lines = Vec::new();
        for (variant, series) in variants {
            let mut pts = Vec::with_capacity(series.len());
            for (&it, &v) in series {
                if it == data::SINGLE_VALUE_ITER {
                    single.push((metric.clone(), variant.clone(), v));
                } else {
                    pts.push((it as f64, v));
                }
            }
            if !pts.is_empty() {
                lines.push(charts::Line {
                    name: variant.clone(),
                    points: pts,
                    markers: false,
                });
            }
        }
        if !lines.is_empty() {
            p.raw(&format!(
                "<figure class=\"chart\" data-metric=\"{}\">",
                esc(metric)
            ));
            p.raw(&charts::line_chart(metric, "iteration", metric, &lines));
            p.raw("</figure>");
        }
    }
    if !single.is_empty() {
        p.raw("<h2>Single values</h2><table class=\"list\"><thead><tr><th>Metric</th><th>Variant</th><th>Value</th></tr></thead><tbody>");
        for (m, v, x) in single {
            p.raw(&format!(
                "<tr><td>{}</td><td>{}</td><td>{x}</td></tr>",
                esc(&m),
                esc(&v)
            ));
        }
        p.raw("</tbody></table>");
    }
    Ok(())
}

fn plots(p: &mut Page, db: &Db, tid: &str) -> Result<(), PageError> {
    let events = db.latest_events(tid, data::PLOT, 1)?;
    if events.is_empty() {
        p.raw("<p class=\"muted\">No plots reported.</p>");
        return Ok(());
    }
    p.raw("<p class=\"count\">The newest iteration of each plot. Scatter and line traces are drawn here as SVG; \
           other plotly trace types (heatmaps, tables, 3D, ...) are not drawn: their figure JSON is shown instead.</p>");
    for ev in &events {
        let metric = s(ev, "metric");
        let variant = s(ev, "variant");
        let iter = ev.get("iter").and_then(Value::as_i64).unwrap_or(0);
        let title = format!("{metric} / {variant}");
        p.raw(&format!(
            "<figure class=\"chart\"><figcaption>{} <small>iteration {iter}</small></figcaption>",
            esc(&title)
        ));
        let text = s(ev, "plot_str");
        let fig: Value = serde_json::from_str(text).unwrap_or(json!(null));
        match charts::plotly(&fig, &title) {
            Ok(svg) => {
                p.raw(&svg);
            }
            Err(why) => {
                let shown: String = text.chars().take(20_000).collect();
                p.raw(&format!(
                    "<p class=\"muted\">Not drawn here ({}). The figure:</p><pre class=\"small\">",
                    esc(&why)
                ))
                .text(&shown)
                .raw(if shown.len() < text.len() {
                    "\n…</pre>"
                } else {
                    "</pre>"
                });
            }
        }
        p.raw("</figure>");
    }
    Ok(())
}

fn images(p: &mut Page, web: &Web, db: &Db, tid: &str) -> Result<(), PageError> {
    let events = db.latest_events(tid, data::IMAGE, IMAGES_PER_VARIANT)?;
    if events.is_empty() {
        p.raw("<p class=\"muted\">No debug images reported.</p>");
        return Ok(());
    }
    p.raw(&format!(
        "<p class=\"count\">The newest {IMAGES_PER_VARIANT} iterations of each metric and variant.</p><div class=\"images\">"
    ));
    for ev in &events {
        let url = s(ev, "url");
        let src = web.file_link(url).or_else(|| {
            (url.starts_with("http://") || url.starts_with("https://")).then(|| url.to_string())
        });
        let iter = ev.get("iter").and_then(Value::as_i64).unwrap_or(0);
        p.raw(&format!(
            "<figure class=\"img\"><figcaption>{} / {} <small>iteration {iter}</small></figcaption>",
            esc(s(ev, "metric")),
            esc(s(ev, "variant"))
        ));
        match src {
            Some(src) => p.raw(&format!(
                "<a href=\"{0}\"><img src=\"{0}\" alt=\"{1}\" loading=\"lazy\"></a>",
                esc(&src),
                esc(url)
            )),
            None => p.raw("<code>").text(url).raw("</code>"),
        };
        p.raw("</figure>");
    }
    p.raw("</div>");
    Ok(())
}

/// JSON for the console's live tail: the reports after `after` (raw text: the script inserts
/// them as text nodes, never as markup).
pub async fn log_tail(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    Path(tid): Path<String>,
    Query(q): Q,
) -> Response {
    if web.session(&headers).is_none() {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "sign in"})),
        )
            .into_response();
    }
    let after = q
        .get("after")
        .and_then(|v| v.parse::<i64>().ok())
        .unwrap_or(0);
    let r = web
        .read(move |db, _| {
            let t = db
                .doc("tasks", &tid)?
                .ok_or_else(|| PageError::NotFound(tid.clone()))?;
            let events = db.log_after(&tid, after, LOG_PAGE)?;
            let lines: Vec<Value> = events
                .iter()
                .map(|e| {
                    json!({
                        "seq": e.seq,
                        "time": ms_when(e.doc.get("timestamp").and_then(Value::as_i64).unwrap_or(0)),
                        "msg": e.doc.get("msg").and_then(Value::as_str).unwrap_or_default(),
                    })
                })
                .collect();
            Ok(json!({"status": s(&t, "status"), "events": lines}))
        })
        .await;
    match r {
        Ok(v) => {
            let mut resp = axum::Json(v).into_response();
            resp.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            resp
        }
        Err(PageError::NotFound(_)) => StatusCode::NOT_FOUND.into_response(),
        Err(PageError::Internal(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": e})),
        )
            .into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// queues and workers

fn workers_of(ctx: &Ctx) -> Vec<Doc> {
    let req = crate::req::Req {
        body: serde_json::Map::from_iter([("last_seen".to_string(), json!(0))]),
        lines: None,
        bad_lines: Vec::new(),
        caller: None,
        worker_header: None,
    };
    match crate::api::call(ctx, "workers.get_all", &req) {
        Some(Ok(v)) => v
            .get("workers")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|w| w.as_object().cloned()).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn ref_names(v: Option<&Value>) -> Vec<(String, String)> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|q| {
                    let id = q.get("id").and_then(Value::as_str).unwrap_or_default();
                    let name = q.get("name").and_then(Value::as_str).unwrap_or(id);
                    (id.to_string(), name.to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

pub async fn queues(State(web): State<Arc<Web>>, headers: HeaderMap, uri: Uri) -> Response {
    let csrf = session_or_signin!(web, headers, uri);
    let r = web
        .read(move |db, ctx| {
            let workers = workers_of(ctx);
            let mut p = Page::new("Queues", "queues", Some(&csrf));
            p.raw("<h1>Queues</h1>");
            let queues = db.all("queues")?;
            if queues.is_empty() {
                p.raw("<p class=\"muted\">No queues.</p>");
            }
            p.raw("<table class=\"list queues\"><thead><tr><th>Queue</th><th>Length</th><th>Workers</th><th>Tasks, next first</th></tr></thead><tbody>");
            for q in &queues {
                let qid = s(q, "id");
                let entries = q.get("entries").and_then(Value::as_array).cloned().unwrap_or_default();
                let serving: Vec<String> = workers
                    .iter()
                    .filter(|w| ref_names(w.get("queues")).iter().any(|(id, _)| id == qid))
                    .map(|w| esc(s(w, "id")))
                    .collect();
                let mut tasks = String::from("<ol>");
                for e in &entries {
                    let tid = e.get("task").and_then(Value::as_str).unwrap_or_default();
                    let t = db.doc("tasks", tid)?;
                    let (name, pid) = t
                        .as_ref()
                        .map(|t| (s(t, "name").to_string(), s(t, "project").to_string()))
                        .unwrap_or_else(|| (tid.to_string(), String::new()));
                    let added = e.get("added").and_then(Value::as_str).unwrap_or_default();
                    let _ = write!(
                        tasks,
                        "<li><a href=\"{}\">{}</a> <small class=\"muted\">added {}</small></li>",
                        task_href(&pid, tid, "execution"),
                        esc(&name),
                        esc(&when(added))
                    );
                }
                tasks.push_str("</ol>");
                p.raw(&format!(
                    "<tr><td>{}</td><td class=\"qlen\">{}</td><td>{}</td><td>{}</td></tr>",
                    esc(s(q, "name")),
                    entries.len(),
                    serving.join(", "),
                    tasks
                ));
            }
            p.raw("</tbody></table>");
            Ok(p)
        })
        .await;
    finish(&web, &headers, r)
}

fn stat_text(v: &Value) -> String {
    let num = |x: &Value| {
        x.as_f64().map_or_else(
            || x.to_string(),
            |f| {
                if f.fract() == 0.0 {
                    format!("{f:.0}")
                } else {
                    format!("{f:.1}")
                }
            },
        )
    };
    match v {
        Value::Array(a) => a.iter().map(num).collect::<Vec<_>>().join(", "),
        other => num(other),
    }
}

pub async fn workers(State(web): State<Arc<Web>>, headers: HeaderMap, uri: Uri) -> Response {
    let csrf = session_or_signin!(web, headers, uri);
    let r = web
        .read(move |db, ctx| {
            let workers = workers_of(ctx);
            let mut p = Page::new("Workers", "workers", Some(&csrf));
            p.raw("<h1>Workers</h1>");
            if workers.is_empty() {
                p.raw("<p class=\"muted\">No worker reported recently.</p>");
                return Ok(p);
            }
            p.raw("<table class=\"list workers\"><thead><tr><th>Worker</th><th>Queues</th><th>Current task</th><th>Last report</th><th>Machine (CPU / GPU)</th></tr></thead><tbody>");
            for w in &workers {
                let queues: Vec<String> =
                    ref_names(w.get("queues")).into_iter().map(|(_, n)| esc(&n)).collect();
                let task = match w.get("task") {
                    Some(t) => {
                        let tid = t.get("id").and_then(Value::as_str).unwrap_or_default();
                        let name = t.get("name").and_then(Value::as_str).unwrap_or(tid);
                        let pid = db
                            .doc("tasks", tid)?
                            .map(|d| s(&d, "project").to_string())
                            .unwrap_or_default();
                        format!("<a href=\"{}\">{}</a>", task_href(&pid, tid, "output/log"), esc(name))
                    }
                    None => "<span class=\"muted\">idle</span>".into(),
                };
                let mut stats = String::new();
                if let Some(Value::Object(m)) = w.get("machine_stats") {
                    for (k, v) in m {
                        let _ = write!(stats, "<span class=\"stat\"><b>{}</b> {}</span> ", esc(k), esc(&stat_text(v)));
                    }
                }
                let last = [s(w, "last_report_time"), s(w, "last_activity_time")]
                    .into_iter()
                    .find(|x| !x.is_empty())
                    .unwrap_or_default();
                p.raw(&format!(
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"stats\">{}</td></tr>",
                    esc(s(w, "id")),
                    queues.join(", "),
                    task,
                    esc(&when(last)),
                    stats
                ));
            }
            p.raw("</tbody></table>");
            Ok(p)
        })
        .await;
    finish(&web, &headers, r)
}
