//! Checking the keys against the server (`auth.login`) and saying plainly why it failed.

use std::error::Error as _;
use std::time::Duration;

use clearml_api::{ApiError, Client, ClientConfig};

/// Why the keys could not be verified. Messages never hold the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server answered and refused the keys.
    BadCredentials(String),
    /// No answer: wrong address, server down, name not found, timeout.
    Unreachable(String),
    /// The TLS connection failed (untrusted certificate, https to a plain http port, ...).
    Tls(String),
    /// Something answered, but not a ClearML API server.
    NotClearml(String),
}

impl Failure {
    pub fn is_credentials(&self) -> bool {
        matches!(self, Failure::BadCredentials(_))
    }

    /// The explanation for the user, with what to do.
    pub fn explain(&self, api: &str) -> String {
        match self {
            Failure::BadCredentials(m) => format!(
                "the server at {api} refused the access key and secret ({m}). Check that both \
                 were copied whole, and that they belong to this server."
            ),
            Failure::Unreachable(m) => format!(
                "cannot reach the API server at {api}: {m}. Check the address (a self-hosted \
                 server's API is on port 8008) and that the server is running."
            ),
            Failure::Tls(m) => format!(
                "the secure (TLS) connection to {api} failed: {m}. If the server uses a \
                 self-signed certificate, set CLEARML_API_HOST_VERIFY_CERT=false (and \
                 api.verify_certificate: false in the file afterwards); if it serves plain \
                 http, use an http:// address."
            ),
            Failure::NotClearml(m) => format!(
                "{api} did not answer as a ClearML API server ({m}). Is this the API address \
                 rather than the web app's (self-hosted: port 8008, not 8080)?"
            ),
        }
    }
}

/// Logs in with the keys. Blocks for up to about 15 seconds when the server does not answer.
pub fn verify(
    api: &str,
    access_key: &str,
    secret_key: &str,
    verify_certificate: bool,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Unreachable(format!("cannot start the network runtime: {e}")))?;
    runtime.block_on(async {
        let config = ClientConfig {
            api_server: api.to_string(),
            access_key: access_key.to_string(),
            secret_key: secret_key.to_string(),
            verify_certificate,
            method: "post".into(),
            worker: None,
            // A couple of quick retries, as the Python wizard allows, not the agent's minutes.
            retry_for: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
        };
        let client = Client::new(config).map_err(|e| Failure::Unreachable(e.to_string()))?;
        match client.token().await {
            Ok(_) => Ok(()),
            Err(ApiError::Server { code, message, .. }) if code == 401 || code == 403 => {
                Err(Failure::BadCredentials(format!("HTTP {code}: {message}")))
            }
            Err(ApiError::Server { code, message, .. }) => {
                Err(Failure::NotClearml(format!("HTTP {code}: {message}")))
            }
            Err(ApiError::Unreachable { message, .. }) => {
                Err(diagnose(api, verify_certificate, message).await)
            }
            Err(ApiError::Config(m)) => Err(Failure::Unreachable(m)),
        }
    })
}

/// The client's error says only that the request failed; one more plain request, with the
/// error's causes looked at, tells a TLS problem from a refused connection or a bad name.
async fn diagnose(api: &str, verify_certificate: bool, fallback: String) -> Failure {
    let http = match reqwest::Client::builder()
        .danger_accept_invalid_certs(!verify_certificate)
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(h) => h,
        Err(_) => return Failure::Unreachable(fallback),
    };
    match http.get(api).send().await {
        Ok(_) => Failure::Unreachable(fallback),
        Err(e) => classify(&e),
    }
}

fn classify(e: &reqwest::Error) -> Failure {
    let mut causes = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = e.source();
    while let Some(c) = cur {
        causes.push(c.to_string());
        cur = c.source();
    }
    // The useful part is the innermost causes; the outer ones repeat the URL.
    let detail = causes
        .iter()
        .rev()
        .take(2)
        .rev()
        .cloned()
        .collect::<Vec<_>>()
        .join(": ");
    let detail = if detail.is_empty() {
        e.to_string()
    } else {
        detail
    };
    let all = causes.join(" ").to_lowercase();
    let tls_words = [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "corrupt message",
        "invalidcontenttype",
        "alert",
    ];
    if tls_words.iter().any(|w| all.contains(w)) {
        return Failure::Tls(detail);
    }
    if e.is_timeout() {
        return Failure::Unreachable("no answer in time".into());
    }
    if all.contains("dns") || all.contains("lookup") || all.contains("not known") {
        return Failure::Unreachable(format!("the host name was not found ({detail})"));
    }
    if all.contains("refused") {
        return Failure::Unreachable(format!("nothing listens there ({detail})"));
    }
    Failure::Unreachable(detail)
}
