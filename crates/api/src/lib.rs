//! A client for the ClearML REST API, as the agent and the task commands use it.
//!
//! Every call is `POST /v{version}/{service}.{action}` with a JSON body (configurable like
//! `api.http.default_method`: the Python clients send GET with a body, which some proxies
//! drop). The client logs in with the access key and secret (`auth.login`, Basic), keeps the
//! JWT, and logs in again before it expires or when a call answers 401, rebuilding the
//! `Authorization` header for the retry (the Python clients retry with the stale one).
//! Server errors (5xx), 429 and connection failures are retried with exponential backoff;
//! other 4xx answers are final and come back as [`ApiError::Server`] with the code, subcode and
//! message of the envelope.

pub mod lookup;

use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// The API version prefix we send; our server and real 1.x/2.x servers accept it.
pub const API_VERSION: &str = "2.14";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with an error envelope.
    #[error("{endpoint}: {code}/{subcode}: {message}")]
    Server {
        endpoint: String,
        code: u16,
        subcode: u32,
        message: String,
    },
    /// No usable answer after the retries.
    #[error("{endpoint}: cannot reach the server at {url}: {message}")]
    Unreachable {
        endpoint: String,
        url: String,
        message: String,
    },
    #[error("{0}")]
    Config(String),
}

impl ApiError {
    /// The HTTP code and subcode of a server error.
    pub fn codes(&self) -> Option<(u16, u32)> {
        match self {
            ApiError::Server { code, subcode, .. } => Some((*code, *subcode)),
            _ => None,
        }
    }
}

/// Where and who.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub api_server: String,
    pub access_key: String,
    pub secret_key: String,
    pub verify_certificate: bool,
    /// `post` (default), `get` or `put`.
    pub method: String,
    /// Sent as `X-ClearML-Worker`.
    pub worker: Option<String>,
    /// How long to keep retrying a failing call before giving up.
    pub retry_for: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl ClientConfig {
    /// The API settings of a loaded configuration; missing server or credentials are errors that
    /// say what to set.
    pub fn from_config(config: &clearml_config::Config) -> Result<ClientConfig, ApiError> {
        let api = config.api().map_err(|e| ApiError::Config(e.to_string()))?;
        let api_server = api.api_server.ok_or_else(|| {
            ApiError::Config(
                "no API server configured: set api.api_server in clearml.conf or CLEARML_API_HOST"
                    .into(),
            )
        })?;
        let (Some(access_key), Some(secret_key)) = (api.access_key, api.secret_key) else {
            return Err(ApiError::Config(
                "no credentials configured: set api.credentials in clearml.conf or CLEARML_API_ACCESS_KEY/CLEARML_API_SECRET_KEY"
                    .into(),
            ));
        };
        Ok(ClientConfig {
            api_server,
            access_key,
            secret_key,
            verify_certificate: api.verify_certificate,
            method: api.default_method.unwrap_or_else(|| "post".into()),
            worker: None,
            retry_for: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        })
    }
}

struct Token {
    value: String,
    /// Refresh when this instant passes (12 h before `exp`, or sooner for short tokens).
    refresh_at: Instant,
}

/// What a request carries.
enum Body {
    Json(Value),
    Lines(String),
}

pub struct Client {
    http: reqwest::Client,
    config: ClientConfig,
    base: String,
    token: Mutex<Option<Token>>,
    /// A client made with [`Client::with_token`]: it has no keys and logs in again with its
    /// token (as the Python clients do with `CLEARML_AUTH_TOKEN`).
    token_only: Option<String>,
}

/// The environment variable that hands a task process its (owner's) token instead of keys.
pub const AUTH_TOKEN_VAR: &str = "CLEARML_AUTH_TOKEN";

impl Client {
    pub fn new(config: ClientConfig) -> Result<Client, ApiError> {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(!config.verify_certificate)
            .timeout(config.timeout)
            .build()
            .map_err(|e| ApiError::Config(format!("cannot build the HTTP client: {e}")))?;
        let base = config.api_server.trim_end_matches('/').to_string();
        Ok(Client {
            http,
            config,
            base,
            token: Mutex::new(None),
            token_only: None,
        })
    }

    /// A client that acts with `token` instead of the configured keys (which it never uses).
    pub fn with_token(config: ClientConfig, token: &str) -> Result<Client, ApiError> {
        let mut c = Client::new(config)?;
        c.token_only = Some(token.to_string());
        Ok(c)
    }

    /// `auth.login` with the configured keys and `X-Clearml-Impersonate-As: user`: a token
    /// that acts as `user` (the server allows it for admin keys only). Not retried beyond the
    /// usual transient failures; a refusal comes back as the server's error.
    pub async fn login_as(&self, user: &str) -> Result<String, ApiError> {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            self.config.access_key, self.config.secret_key
        ));
        let resp = self
            .http
            .post(format!("{}/auth.login", self.base))
            .header("Authorization", format!("Basic {basic}"))
            .header("X-Clearml-Impersonate-As", user)
            .json(&json!({}))
            .send()
            .await
            .map_err(|e| ApiError::Unreachable {
                endpoint: "auth.login".into(),
                url: self.base.clone(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let data = parse_envelope("auth.login", status, &text)?;
        data.get("token")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| ApiError::Server {
                endpoint: "auth.login".into(),
                code: 200,
                subcode: 0,
                message: "the login answer has no token".into(),
            })
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// A fresh or cached token.
    pub async fn token(&self) -> Result<String, ApiError> {
        let mut guard = self.token.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let t = self.login().await?;
        let value = t.value.clone();
        *guard = Some(t);
        Ok(value)
    }

    async fn invalidate(&self) {
        *self.token.lock().await = None;
    }

    async fn login(&self) -> Result<Token, ApiError> {
        let authorization = match &self.token_only {
            Some(t) => format!("Bearer {t}"),
            None => format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!(
                    "{}:{}",
                    self.config.access_key, self.config.secret_key
                ))
            ),
        };
        let data = self
            .send_with_retries("auth.login", &Body::Json(json!({})), &authorization, false)
            .await?;
        let value = data
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::Server {
                endpoint: "auth.login".into(),
                code: 200,
                subcode: 0,
                message: "the login answer has no token".into(),
            })?
            .to_string();
        let remaining = token_seconds_left(&value).unwrap_or(24 * 3600);
        // Refresh 12 h before expiry, or half-way for tokens shorter than a day.
        let margin = if remaining > 24 * 3600 {
            12 * 3600
        } else {
            remaining / 2
        };
        Ok(Token {
            value,
            refresh_at: Instant::now() + Duration::from_secs((remaining - margin).max(1) as u64),
        })
    }

    /// Calls `endpoint` with `body`; returns the envelope's `data`.
    pub async fn call(&self, endpoint: &str, body: Value) -> Result<Value, ApiError> {
        self.call_body(endpoint, Body::Json(body)).await
    }

    /// Calls a batch endpoint (`events.add_batch`) with one JSON object per line
    /// (`Content-Type: application/json-lines`), as the Python clients send events.
    pub async fn call_lines(&self, endpoint: &str, lines: &[Value]) -> Result<Value, ApiError> {
        let mut text = String::new();
        for line in lines {
            text.push_str(&line.to_string());
            text.push('\n');
        }
        self.call_body(endpoint, Body::Lines(text)).await
    }

    async fn call_body(&self, endpoint: &str, body: Body) -> Result<Value, ApiError> {
        let token = self.token().await?;
        match self
            .send_with_retries(endpoint, &body, &format!("Bearer {token}"), true)
            .await
        {
            Err(ApiError::Server { code: 401, .. }) => {
                // The token was refused (revoked, or the server's secret changed): log in again
                // and retry once with the new header.
                self.invalidate().await;
                let token = self.token().await?;
                self.send_with_retries(endpoint, &body, &format!("Bearer {token}"), true)
                    .await
            }
            other => other,
        }
    }

    async fn send_with_retries(
        &self,
        endpoint: &str,
        body: &Body,
        authorization: &str,
        versioned: bool,
    ) -> Result<Value, ApiError> {
        let url = if versioned {
            format!("{}/v{API_VERSION}/{endpoint}", self.base)
        } else {
            format!("{}/{endpoint}", self.base)
        };
        let started = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let method = match self.config.method.as_str() {
                "get" => reqwest::Method::GET,
                "put" => reqwest::Method::PUT,
                _ => reqwest::Method::POST,
            };
            let mut request = self
                .http
                .request(method, &url)
                .header("Authorization", authorization);
            request = match body {
                Body::Json(v) => request.json(v),
                Body::Lines(text) => request
                    .header("Content-Type", "application/json-lines")
                    .body(text.clone()),
            };
            if let Some(w) = &self.config.worker {
                request = request
                    .header("X-ClearML-Worker", w)
                    .header("X-Trains-Worker", w);
            }
            let outcome = match request.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    parse_envelope(endpoint, status, &text)
                }
                Err(e) => Err(ApiError::Unreachable {
                    endpoint: endpoint.to_string(),
                    url: self.base.clone(),
                    message: e.to_string(),
                }),
            };
            let retry = match &outcome {
                Ok(_) => false,
                Err(ApiError::Server { code, .. }) => *code >= 500 || *code == 429,
                Err(ApiError::Unreachable { .. }) => true,
                Err(ApiError::Config(_)) => false,
            };
            if !retry || started.elapsed() + delay > self.config.retry_for {
                return outcome;
            }
            tracing::debug!("{endpoint}: retrying in {delay:?} after {outcome:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(10));
        }
    }
}

fn parse_envelope(endpoint: &str, status: u16, text: &str) -> Result<Value, ApiError> {
    let env: Value = serde_json::from_str(text).map_err(|_| ApiError::Server {
        endpoint: endpoint.to_string(),
        code: status,
        subcode: 0,
        message: format!(
            "not a ClearML answer (HTTP {status}): {}",
            text.chars().take(200).collect::<String>()
        ),
    })?;
    let meta = env.get("meta");
    let code = meta
        .and_then(|m| m.get("result_code"))
        .and_then(Value::as_u64)
        .map_or(status, |c| c as u16);
    if code == 200 {
        return Ok(env.get("data").cloned().unwrap_or_else(|| json!({})));
    }
    Err(ApiError::Server {
        endpoint: endpoint.to_string(),
        code,
        subcode: meta
            .and_then(|m| m.get("result_subcode"))
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32,
        message: meta
            .and_then(|m| m.get("result_msg"))
            .and_then(Value::as_str)
            .unwrap_or("no message")
            .to_string(),
    })
}

/// Seconds until the JWT's `exp` (read without verifying, as the Python clients do).
fn token_seconds_left(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_i64()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(exp - now)
}
