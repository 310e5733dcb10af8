//! The access log: one `info` event per API request under the target
//! `clearml_server::access` (method, endpoint, HTTP status, milliseconds, the calling worker
//! from the `X-ClearML-Worker` header, and the user), and the error's code and message at
//! `debug` when the call failed. Never the body, the query string or a token: the endpoint is
//! taken from the path alone.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::Ctx;

/// The tracing target of the access log.
pub const TARGET: &str = "clearml_server::access";

/// Attached to an error reply by the envelope so the log can say why a call failed without
/// reading the body back.
#[derive(Clone, Debug)]
pub struct Failure {
    pub code: u16,
    pub subcode: u32,
    pub msg: String,
}

/// The middleware (see [`crate::http::router`]).
pub async fn layer(State(ctx): State<Arc<Ctx>>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().clone();
    let endpoint = endpoint_of(request.uri().path());
    let worker = ["x-clearml-worker", "x-trains-worker"]
        .iter()
        .find_map(|h| request.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(clean)
        .unwrap_or_default();
    let response = next.run(request).await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let status = response.status().as_u16();
    tracing::info!(
        target: TARGET,
        method = %method,
        endpoint = %endpoint,
        status,
        ms = format!("{ms:.1}"),
        worker = %worker,
        user = %ctx.user(),
        "{method} {endpoint} {status} {ms:.1}ms"
    );
    if let Some(f) = response.extensions().get::<Failure>() {
        tracing::debug!(
            target: TARGET,
            endpoint = %endpoint,
            code = f.code,
            subcode = f.subcode,
            "{endpoint} failed: {}/{} {}",
            f.code,
            f.subcode,
            f.msg
        );
    }
    response
}

/// `/v2.23/tasks.get_all` -> `tasks.get_all`; anything else is kept as its (cleaned) path.
fn endpoint_of(path: &str) -> String {
    let trimmed = path.trim_start_matches('/');
    let name = match trimmed.split_once('/') {
        Some((v, rest)) if v.starts_with('v') => rest,
        _ => trimmed,
    };
    clean(if name.is_empty() { "/" } else { name })
}

/// Printable, bounded text for a log field (a header or path a client controls).
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_names() {
        assert_eq!(endpoint_of("/v2.23/tasks.get_all"), "tasks.get_all");
        assert_eq!(endpoint_of("/tasks.get_all"), "tasks.get_all");
        assert_eq!(endpoint_of("/"), "/");
        assert_eq!(clean("a\nb\u{7}c"), "abc");
    }
}
