//! The HTTP face of the API: `/{service}.{action}` or `/v{X.Y}/{service}.{action}`, any method,
//! JSON (or json-lines) bodies even on GET, and the `{meta, data}` envelope (server-api.md §1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api::{self, Ctx};
use crate::error::ApiError;
use crate::req::{Req, new_id, unquote_plus};

/// Bodies larger than this are refused with a 413 (the SDK splits batches at 15 MiB).
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// The endpoints that answer without a token (`debug.ping` echoes its body) read at most this.
pub const MAX_PUBLIC_BODY: usize = 64 * 1024;
/// At most this many bytes of request bodies are read and parsed at once, all requests
/// together; the rest wait their turn. A parsed JSON value can be 30 times its text, so this,
/// not the per-request limit, is what bounds the memory requests can take.
pub const BODY_BUDGET: usize = MAX_BODY;
/// The longest wait a `queues.get_next_task` long poll may ask for.
const MAX_WAIT_MS: i64 = 25_000;

pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    // No DefaultBodyLimit: `handle` checks the token before it reads any of the body and
    // enforces MAX_BODY itself (a 413 without reading an oversize body).
    axum::Router::new()
        .fallback(handle)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::access_log::layer,
        ))
        .with_state(ctx)
}

/// `(requested version, endpoint)` from a request path, or `None` when it is not an API path.
fn parse_path(path: &str) -> Option<(Option<String>, String)> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    let (version, name) = match p.split_once('/') {
        Some((v, rest)) => {
            let num = v.strip_prefix('v')?;
            if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
                return None;
            }
            (Some(num.to_string()), rest)
        }
        None => (None, p),
    };
    let (service, action) = name.split_once('.')?;
    let ident = |s: &str| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.len() >= 2
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    (ident(service) && ident(action)).then(|| (version, name.to_string()))
}

fn envelope(endpoint: &str, version: &str, result: Result<Value, ApiError>) -> Response {
    let id = new_id();
    let failure = result.as_ref().err().map(|e| crate::access_log::Failure {
        code: e.code,
        subcode: e.subcode,
        msg: e.msg.clone(),
    });
    let (code, subcode, msg, data) = match result {
        Ok(data) => (200, 0, "OK".to_string(), data),
        Err(e) => (e.code, e.subcode, e.msg, json!({})),
    };
    let body = json!({
        "meta": {
            "id": id,
            "trx": id,
            "endpoint": {"name": endpoint, "requested_version": version, "actual_version": version},
            "result_code": code,
            "result_subcode": subcode,
            "result_msg": msg,
            "error_stack": null,
            "error_data": {},
        },
        "data": if data.is_object() { data } else { json!({}) },
    });
    let mut resp = (
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(body),
    )
        .into_response();
    resp.headers_mut()
        .insert(header::SERVER, HeaderValue::from_static("clearml"));
    if let Some(f) = failure {
        resp.extensions_mut().insert(f);
    }
    resp
}

/// Query-string arguments merged into the body, numbers and booleans typed, as the real
/// server does.
fn merge_query(body: &mut Map<String, Value>, query: Option<&str>) {
    let Some(q) = query else { return };
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = unquote_plus(k);
        let v = unquote_plus(v);
        let value = if v == "true" {
            json!(true)
        } else if v == "false" {
            json!(false)
        } else if let Ok(i) = v.parse::<i64>() {
            json!(i)
        } else if let Ok(f) = v.parse::<f64>() {
            json!(f)
        } else {
            json!(v)
        };
        body.insert(k, value);
    }
}

/// Parses the body: a JSON object, or json-lines (one object per line) for batch endpoints.
/// A request's JSON object, and its lines when it was json-lines.
/// The lines that are not JSON objects come back apart, with their index and the reason.
type ParsedBody = (
    Map<String, Value>,
    Option<Vec<Map<String, Value>>>,
    Vec<(usize, String)>,
);

fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<ParsedBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::validation("the request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Ok((Map::new(), None, Vec::new()));
    }
    let json_lines = content_type.contains("json-lines") || content_type.contains("jsonlines");
    if !json_lines {
        match parse_json(text) {
            Ok(Value::Object(m)) => return Ok((m, None, Vec::new())),
            Ok(_) => {
                return Err(ApiError::validation(
                    "the request body must be a JSON object",
                ));
            }
            // A body of several JSON objects on separate lines is json-lines even when the
            // client did not say so.
            Err(e) if !text.trim().contains('\n') => {
                return Err(ApiError::validation(format!(
                    "invalid JSON in the request body: {e}"
                )));
            }
            Err(_) => {}
        }
    }
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match parse_json(line) {
            Ok(Value::Object(m)) => lines.push(m),
            Ok(_) => bad.push((i, "not a JSON object".to_string())),
            Err(e) => bad.push((i, e.to_string())),
        }
    }
    Ok((Map::new(), Some(lines), bad))
}

/// `serde_json` with Python's leniency for lone UTF-16 surrogates: Python's `json` writes
/// `"\udcff"` for a byte `os.fsdecode` could not decode, and reads it back, but `serde_json`
/// refuses it. Such a half of a pair becomes U+FFFD, so the line is kept.
fn parse_json(text: &str) -> Result<Value, serde_json::Error> {
    match serde_json::from_str(text) {
        Err(e) if text.contains("\\u") => match replace_lone_surrogates(text) {
            Some(fixed) => serde_json::from_str(&fixed),
            None => Err(e),
        },
        r => r,
    }
}

/// The text with every `\uXXXX` escape of a lone surrogate replaced by `\ufffd`; `None` when
/// there is none (the error was something else).
fn replace_lone_surrogates(text: &str) -> Option<String> {
    fn escape_at(b: &[u8], i: usize) -> Option<u16> {
        if b.get(i) != Some(&b'\\') || b.get(i + 1) != Some(&b'u') {
            return None;
        }
        let hex = std::str::from_utf8(b.get(i + 2..i + 6)?).ok()?;
        if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(hex, 16).ok()
    }
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            i += 1;
            continue;
        }
        match escape_at(b, i) {
            Some(0xD800..=0xDBFF)
                if escape_at(b, i + 6).is_some_and(|low| (0xDC00..=0xDFFF).contains(&low)) =>
            {
                i += 12;
            }
            Some(0xD800..=0xDFFF) => {
                out.push_str(&text[copied..i]);
                out.push_str("\\ufffd");
                changed = true;
                i += 6;
                copied = i;
            }
            // Any other escape is two characters (or six for `\u`); skipping it keeps an
            // escaped backslash from starting a false escape.
            Some(_) => i += 6,
            None => i += 2,
        }
    }
    out.push_str(&text[copied..]);
    changed.then_some(out)
}

async fn handle(State(ctx): State<Arc<Ctx>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    if parts.method == axum::http::Method::OPTIONS {
        return StatusCode::OK.into_response();
    }
    let Some((version, endpoint)) = parse_path(&path) else {
        if path == "/" || path.is_empty() {
            return (StatusCode::OK, "ClearML embedded server").into_response();
        }
        return envelope(
            "",
            "",
            Err(ApiError::new(
                400,
                0,
                format!("Invalid request path {path}"),
            )),
        );
    };
    let version = version.unwrap_or_else(|| crate::auth::API_VERSION.to_string());
    // The token first: nothing of the body of a request without a valid one is read.
    let public = api::is_public(&endpoint);
    let mut caller = None;
    if !public {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| cookie_token(&parts.headers).map(|t| format!("Bearer {t}")));
        let impersonate = parts
            .headers
            .get("x-clearml-impersonate-as")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        let checked = ctx
            .auth
            .check_header(auth.as_deref())
            .and_then(|c| match impersonate {
                Some(id) => ctx.auth.impersonate(c, id),
                None => Ok(c),
            });
        match checked {
            Ok(c) => caller = Some(c),
            Err(e) => return envelope(&endpoint, &version, Err(e)),
        }
    }
    let limit = if public { MAX_PUBLIC_BODY } else { MAX_BODY };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return envelope(&endpoint, &version, Err(too_large(limit)));
    }
    // Wait for a share of the body budget (a body of unknown length reserves the limit).
    let reserve = declared.map_or(limit, |n| n as usize).clamp(1, BODY_BUDGET);
    let Ok(_permit) = ctx
        .body_budget
        .acquire_many(u32::try_from(reserve).unwrap_or(u32::MAX))
        .await
    else {
        return envelope(
            &endpoint,
            &version,
            Err(ApiError::internal("the server is shutting down")),
        );
    };
    let bytes = match read_body(body, limit).await {
        Ok(b) => b,
        Err(e) => return envelope(&endpoint, &version, Err(e)),
    };
    let (mut body, lines, bad_lines) = match parse_body(&parts.headers, &bytes) {
        Ok(b) => b,
        Err(e) => return envelope(&endpoint, &version, Err(e)),
    };
    drop(bytes);
    if endpoint != "events.add_batch"
        && let Some((i, e)) = bad_lines.first()
    {
        return envelope(
            &endpoint,
            &version,
            Err(ApiError::validation(format!(
                "invalid JSON in batch item #{i}: {e}"
            ))),
        );
    }
    merge_query(&mut body, parts.uri.query());
    let worker_header = ["x-clearml-worker", "x-trains-worker"]
        .iter()
        .find_map(|h| parts.headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = Req {
        body,
        lines,
        bad_lines,
        caller,
        worker_header,
    };
    // The two long polls: a queue pop waits for a task, a task watch for a status change.
    let task_watch = endpoint == "tasks.get_all" && req.body.contains_key("wait_while");
    let wait_ms = if endpoint == "queues.get_next_task" || task_watch {
        req.i64_opt("wait_ms")
            .ok()
            .flatten()
            .unwrap_or(0)
            .clamp(0, MAX_WAIT_MS)
    } else {
        0
    };
    let deadline = Instant::now() + Duration::from_millis(wait_ms as u64);
    let req = Arc::new(req);
    loop {
        // Register interest before looking, so a change between the look and the wait is
        // not missed.
        let changed = if task_watch {
            &ctx.task_changed
        } else {
            &ctx.queue_changed
        };
        let notified = changed.notified();
        let result = run_blocking(ctx.clone(), endpoint.clone(), req.clone()).await;
        let empty = if task_watch {
            matches!(&result, Some(Ok(r)) if task_unchanged(r, req.body.get("wait_while")))
        } else {
            matches!(&result, Some(Ok(Value::Object(m))) if m.is_empty())
        };
        let now = Instant::now();
        if wait_ms > 0 && empty && now < deadline {
            let _ = tokio::time::timeout(deadline - now, notified).await;
            continue;
        }
        return match result {
            Some(r) => envelope(&endpoint, &version, r),
            None => envelope(
                &endpoint,
                &version,
                Err(ApiError::not_found_endpoint(&endpoint, &version)),
            ),
        };
    }
}

/// A `tasks.get_all` answer of exactly one task whose `status` and `status_message` are
/// still those of `wait_while`.
fn task_unchanged(reply: &Value, wait_while: Option<&Value>) -> bool {
    let Some(w) = wait_while.filter(|w| w.is_object()) else {
        return false;
    };
    let Some([task]) = reply
        .get("tasks")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    else {
        return false;
    };
    ["status", "status_message"]
        .iter()
        .all(|k| task.get(*k).unwrap_or(&Value::Null) == w.get(*k).unwrap_or(&Value::Null))
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        0,
        format!("Request body too large (the limit is {limit} bytes)"),
    )
}

/// Reads a body of at most `limit` bytes; a longer one is a 413 as soon as it passes the limit.
async fn read_body(mut body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    use axum::body::HttpBody as _;
    let mut out = Vec::new();
    loop {
        let frame = std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(out),
            Some(Err(e)) => {
                return Err(ApiError::validation(format!(
                    "cannot read the request body: {e}"
                )));
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if out.len() + data.len() > limit {
                        return Err(too_large(limit));
                    }
                    out.extend_from_slice(&data);
                }
            }
        }
    }
}

/// Runs a call on the database thread and waits for its answer without blocking the runtime.
async fn run_blocking(
    ctx: Arc<Ctx>,
    endpoint: String,
    req: Arc<Req>,
) -> Option<Result<Value, ApiError>> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job_ctx = ctx.clone();
    let job: crate::api::Job = Box::new(move || {
        let _ = tx.send(api::call(&job_ctx, &endpoint, &req));
    });
    if ctx.jobs.send(job).is_err() {
        return Some(Err(ApiError::internal("the database thread stopped")));
    }
    match rx.await {
        Ok(r) => r,
        Err(_) => Some(Err(ApiError::internal("the call was dropped"))),
    }
}

/// The `clearml_token_basic` cookie, which the real server accepts as a bearer token.
pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix("clearml_token_basic=")
                .map(str::to_string)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_paths() {
        assert_eq!(
            parse_path("/tasks.get_by_id"),
            Some((None, "tasks.get_by_id".into()))
        );
        assert_eq!(
            parse_path("/v2.23/events.add_batch/"),
            Some((Some("2.23".into()), "events.add_batch".into()))
        );
        assert_eq!(parse_path("/files/x.txt"), None);
        assert_eq!(parse_path("/v2.5/../etc"), None);
        assert_eq!(parse_path("/tasks.get-by-id"), None);
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        // What Python's json writes for `os.fsdecode(b"file_\\xff.txt")`.
        let v = parse_json(r#"{"msg": "file_\udcff.txt", "ok": "\ud83d\ude00", "lit": "\\udcff"}"#)
            .expect("accepted");
        assert_eq!(v["msg"], json!("file_\u{fffd}.txt"));
        assert_eq!(v["ok"], json!("\u{1f600}"));
        assert_eq!(v["lit"], json!("\\udcff"));
        let v =
            parse_json(r#"["\ud800", "\udbff\u0041", "\ud800\ud800\udc00"]"#).expect("accepted");
        assert_eq!(v, json!(["\u{fffd}", "\u{fffd}A", "\u{fffd}\u{10000}"]));
        assert!(
            parse_json(r#"{"a": "\udcff"#).is_err(),
            "still JSON: unterminated"
        );
    }

    #[test]
    fn a_bad_line_does_not_lose_its_batch() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json-lines"),
        );
        let text = "{\"a\": 1}\n{\"b\": \n[1]\n{\"c\": \"\\udcff\"}\n";
        let (_, lines, bad) = parse_body(&h, text.as_bytes()).expect("parsed");
        let lines = lines.expect("json-lines");
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["c"], json!("\u{fffd}"));
        assert_eq!(bad.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1, 2]);
    }

    #[test]
    fn query_values_are_typed() {
        let mut m = Map::new();
        merge_query(&mut m, Some("a=1&b=true&c=x%20y&d=1.5&e=%41"));
        assert_eq!(
            Value::Object(m),
            json!({"a": 1, "b": true, "c": "x y", "d": 1.5, "e": "A"})
        );
    }
}
