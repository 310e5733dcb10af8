//! The pages: projects, task lists, the task page and its tabs, queues and workers.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::data::{Db, Doc};
use super::html::{Page, csrf_field, enc, esc, status_badge};
use super::tabs::*;
use super::{Web, html_response, message_page, redirect, to_signin};
use crate::api::Ctx;

/// Console events per page.
pub(super) const LOG_PAGE: i64 = 1000;
/// Tasks per list page.
pub(super) const LIST_PAGE: usize = 100;
/// Debug images kept per (metric, variant): the newest iterations.
pub(super) const IMAGES_PER_VARIANT: usize = 3;
/// Statuses a task can be filtered by.
pub(super) const STATUSES: &[&str] = &[
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

pub(super) type Q = Query<HashMap<String, String>>;

pub(super) fn s<'a>(d: &'a Doc, k: &str) -> &'a str {
    d.get(k).and_then(Value::as_str).unwrap_or_default()
}

pub(super) fn at<'a>(d: &'a Doc, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut cur = d.get(parts.next()?)?;
    for p in parts {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub(super) fn at_str<'a>(d: &'a Doc, path: &str) -> &'a str {
    at(d, path).and_then(Value::as_str).unwrap_or_default()
}

/// `2024-05-01T10:00:00.123+00:00` as `2024-05-01 10:00:00`.
pub(super) fn when(t: &str) -> String {
    let t = t.replace('T', " ");
    t.get(..19).map_or(t.clone(), str::to_string)
}

pub(super) fn ms_when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

pub(super) fn finish(web: &Web, headers: &HeaderMap, result: Result<Page, PageError>) -> Response {
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

pub(super) fn project_names(db: &Db) -> Result<HashMap<String, String>, PageError> {
    Ok(db
        .all("projects")?
        .into_iter()
        .map(|p| (s(&p, "id").to_string(), s(&p, "name").to_string()))
        .collect())
}

pub(super) fn queue_names(db: &Db) -> Result<HashMap<String, String>, PageError> {
    Ok(db
        .all("queues")?
        .into_iter()
        .map(|q| (s(&q, "id").to_string(), s(&q, "name").to_string()))
        .collect())
}

pub(super) fn user_name(ctx: &Ctx, id: &str) -> String {
    ctx.auth
        .user(id)
        .map_or_else(|| id.to_string(), |u| u.user_name)
}

pub(super) fn task_href(pid: &str, tid: &str, tab: &str) -> String {
    section_href(pid, "experiments", tid, tab)
}

/// A task page's path; `section` is `experiments` or `tasks` (newer SDKs print the latter).
pub(super) fn section_href(pid: &str, section: &str, tid: &str, tab: &str) -> String {
    let pid = if pid.is_empty() { "*" } else { pid };
    format!("/projects/{}/{section}/{}/{tab}", enc_pid(pid), enc(tid))
}

pub(super) fn enc_pid(pid: &str) -> String {
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
pub(super) enum Tab {
    Execution,
    Config,
    Artifacts,
    Log,
    Scalars,
    Plots,
    Images,
}

pub(super) const TABS: &[(Tab, &str, &str)] = &[
    (Tab::Execution, "execution", "Execution"),
    (Tab::Config, "hyper-params/hyper-param", "Configuration"),
    (Tab::Artifacts, "artifacts", "Artifacts"),
    (Tab::Log, "output/log", "Console"),
    (Tab::Scalars, "output/metrics/scalar", "Scalars"),
    (Tab::Plots, "output/metrics/plots", "Plots"),
    (Tab::Images, "output/debugImages", "Debug images"),
];

pub(super) fn tab_of(rest: &str) -> Tab {
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

pub(super) fn task_view(
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

// ---------------------------------------------------------------------------------------------
// queues and workers

pub(super) fn workers_of(ctx: &Ctx) -> Vec<Doc> {
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

pub(super) fn ref_names(v: Option<&Value>) -> Vec<(String, String)> {
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

pub(super) fn stat_text(v: &Value) -> String {
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
