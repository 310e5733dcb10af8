//! The task page's tabs: execution, configuration, artifacts, console, scalars, plots, debug images.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Web;
use super::charts;
use super::data::{self, Db, Doc};
use super::html::{Page, enc, esc};
use super::pages::*;

pub(super) fn kv_table(p: &mut Page, rows: &[(&str, String)]) {
    p.raw("<table class=\"kv\">");
    for (k, v) in rows {
        p.raw(&format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v)));
    }
    p.raw("</table>");
}

pub(super) fn execution(p: &mut Page, t: &Doc) {
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

pub(super) fn config(p: &mut Page, t: &Doc) {
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

pub(super) fn link_or_text(web: &Web, uri: &str) -> String {
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

pub(super) fn artifacts(p: &mut Page, web: &Web, db: &Db, t: &Doc) -> Result<(), PageError> {
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

pub(super) fn log_line(ev: &data::LogEvent) -> String {
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

pub(super) fn log(
    p: &mut Page,
    db: &Db,
    t: &Doc,
    q: &HashMap<String, String>,
) -> Result<(), PageError> {
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

pub(super) fn scalars(p: &mut Page, db: &Db, tid: &str) -> Result<(), PageError> {
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

pub(super) fn plots(p: &mut Page, db: &Db, tid: &str) -> Result<(), PageError> {
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

pub(super) fn images(p: &mut Page, web: &Web, db: &Db, tid: &str) -> Result<(), PageError> {
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
