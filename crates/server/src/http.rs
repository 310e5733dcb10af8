//! The HTTP face of the API: `/{service}.{action}` or `/v{X.Y}/{service}.{action}`, any method,
//! JSON (or json-lines) bodies even on GET, and the `{meta, data}` envelope (server-api.md §1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::api::{self, Ctx};
use crate::error::ApiError;
use crate::req::{Req, new_id};

/// Bodies larger than this are refused (the SDK splits batches at 15 MiB).
const MAX_BODY: usize = 64 * 1024 * 1024;
/// The longest wait a `queues.get_next_task` long poll may ask for.
const MAX_WAIT_MS: i64 = 25_000;

pub fn router(ctx: Arc<Ctx>) -> axum::Router {
    axum::Router::new()
        .fallback(handle)
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            crate::access_log::layer,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
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
        let k = percent_decode(k);
        let v = percent_decode(v);
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

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the body: a JSON object, or json-lines (one object per line) for batch endpoints.
/// A request's JSON object, and its lines when it was json-lines.
type ParsedBody = (Map<String, Value>, Option<Vec<Map<String, Value>>>);

fn parse_body(headers: &HeaderMap, bytes: &Bytes) -> Result<ParsedBody, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ApiError::validation("the request body is not UTF-8"))?;
    if text.trim().is_empty() {
        return Ok((Map::new(), None));
    }
    let json_lines = content_type.contains("json-lines") || content_type.contains("jsonlines");
    if !json_lines {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => return Ok((m, None)),
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
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => lines.push(m),
            Ok(_) => {
                return Err(ApiError::validation(format!(
                    "batch item #{i} is not a JSON object"
                )));
            }
            Err(e) => {
                return Err(ApiError::validation(format!(
                    "invalid JSON in batch item #{i}: {e}"
                )));
            }
        }
    }
    Ok((Map::new(), Some(lines)))
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
    let bytes = match axum::body::to_bytes(Body::new(body), MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return envelope(
                &endpoint,
                &version,
                Err(ApiError::validation(format!(
                    "cannot read the request body: {e}"
                ))),
            );
        }
    };
    let (mut body, lines) = match parse_body(&parts.headers, &bytes) {
        Ok(b) => b,
        Err(e) => return envelope(&endpoint, &version, Err(e)),
    };
    merge_query(&mut body, parts.uri.query());
    if !api::is_public(&endpoint) {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| cookie_token(&parts.headers).map(|t| format!("Bearer {t}")));
        if let Err(e) = ctx.auth.check_header(auth.as_deref()) {
            return envelope(&endpoint, &version, Err(e));
        }
    }
    let worker_header = ["x-clearml-worker", "x-trains-worker"]
        .iter()
        .find_map(|h| parts.headers.get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = Req {
        body,
        lines,
        worker_header,
    };
    let wait_ms = if endpoint == "queues.get_next_task" {
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
        // Register interest before looking, so an enqueue between the look and the wait is
        // not missed.
        let notified = ctx.queue_changed.notified();
        let result = run_blocking(ctx.clone(), endpoint.clone(), req.clone()).await;
        let empty = matches!(&result, Some(Ok(Value::Object(m))) if m.is_empty());
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
    fn query_values_are_typed() {
        let mut m = Map::new();
        merge_query(&mut m, Some("a=1&b=true&c=x%20y&d=1.5"));
        assert_eq!(
            Value::Object(m),
            json!({"a": 1, "b": true, "c": "x y", "d": 1.5})
        );
    }
}
