//! `auth.login` and token checks.
//!
//! Clients decode the token as a JWT (without verifying it) to learn the API version and the
//! expiry, so tokens are real HS256 JWTs with the claims the real server puts in them. The
//! signing secret is created once and kept in the database: tokens stay valid across restarts,
//! which matters because the Python clients retry a 401 with the stale header (server-api.md §2.4).

use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::store::Store;

/// The API version we claim; the SDK then uses its 2.23 classes and the agent its 2.5 ones.
pub const API_VERSION: &str = "2.31";
pub const SERVER_VERSION: &str = "2.0.0";
/// 30 days, as the real server. Shorter tokens make the agent log in before every call.
const TOKEN_SECONDS: i64 = 30 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Identity {
    pub user: String,
    pub company: String,
    pub role: String,
    pub user_name: String,
    pub company_name: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub identity: Identity,
    pub iat: i64,
    pub exp: i64,
    pub session_id: String,
    pub env: String,
    pub auth_type: String,
    pub api_version: String,
    pub server_version: String,
    pub server_build: String,
    pub feature_set: String,
}

/// A key pair that may log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: String,
}

#[derive(Clone)]
pub struct Auth {
    secret: Vec<u8>,
    /// Shared so that keys made by `auth.create_credentials` work at once.
    credentials: std::sync::Arc<std::sync::RwLock<Vec<Credential>>>,
    pub identity: Identity,
}

impl Auth {
    /// Loads (or creates on first start) the signing secret and the identity, and the stored
    /// credentials plus `extra`.
    pub fn load(store: &Store, extra: Option<Credential>) -> Result<Auth, ApiError> {
        store.write(|tx| {
            let secret = match tx.meta("jwt_secret")? {
                Some(s) => s,
                None => {
                    let s = random_token(48);
                    tx.set_meta("jwt_secret", &s)?;
                    s
                }
            };
            let user = match tx.meta("user_id")? {
                Some(u) => u,
                None => {
                    let u = crate::req::new_id();
                    tx.set_meta("user_id", &u)?;
                    u
                }
            };
            let company = match tx.meta("company_id")? {
                Some(c) => c,
                None => {
                    let c = crate::req::new_id();
                    tx.set_meta("company_id", &c)?;
                    c
                }
            };
            let mut credentials: Vec<Credential> = match tx.meta("credentials")? {
                Some(text) => serde_json::from_str(&text)
                    .map_err(|e| ApiError::internal(format!("stored credentials: {e}")))?,
                None => Vec::new(),
            };
            if let Some(c) = extra {
                if !credentials.iter().any(|x| x.access_key == c.access_key) {
                    credentials.push(c);
                } else {
                    for x in credentials.iter_mut() {
                        if x.access_key == c.access_key {
                            x.secret_key = c.secret_key.clone();
                        }
                    }
                }
                let text = serde_json::to_string(&credentials)
                    .map_err(|e| ApiError::internal(e.to_string()))?;
                tx.set_meta("credentials", &text)?;
            }
            Ok(Auth {
                secret: secret.into_bytes(),
                credentials: std::sync::Arc::new(std::sync::RwLock::new(credentials)),
                identity: Identity {
                    user,
                    company,
                    role: "user".into(),
                    user_name: "clearml-agent".into(),
                    company_name: "clearml".into(),
                },
            })
        })
    }

    /// The key pairs that may log in.
    pub fn credentials(&self) -> Vec<Credential> {
        self.credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Accepts another key pair from now on (it is already stored by the caller).
    pub fn add_credential(&self, c: Credential) {
        self.credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(c);
    }

    /// A new token for the identity.
    pub fn issue(&self) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            identity: self.identity.clone(),
            iat: now,
            exp: now + TOKEN_SECONDS,
            session_id: crate::req::new_id(),
            env: "<unknown>".into(),
            auth_type: "Bearer".into(),
            api_version: API_VERSION.into(),
            server_version: SERVER_VERSION.into(),
            server_build: "embedded".into(),
            feature_set: "basic".into(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| ApiError::internal(format!("token: {e}")))
    }

    /// Checks a bearer token.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = true;
        jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&self.secret), &validation)
            .map(|d| d.claims)
            .map_err(|e| ApiError::unauthorized(30, format!("Invalid token ({e})")))
    }

    /// Checks an `Authorization` header (Basic or Bearer).
    pub fn check_header(&self, header: Option<&str>) -> Result<(), ApiError> {
        let Some(h) = header else {
            return Err(ApiError::unauthorized(
                20,
                "Unauthorized (missing credentials)",
            ));
        };
        if let Some(token) = h.strip_prefix("Bearer ") {
            return self.verify(token.trim()).map(|_| ());
        }
        if let Some(b64) = h.strip_prefix("Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    ApiError::unauthorized(21, "Bad credentials (malformed basic header)")
                })?;
            let (key, secret) = decoded.split_once(':').ok_or_else(|| {
                ApiError::unauthorized(21, "Bad credentials (malformed basic header)")
            })?;
            if self
                .credentials
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|c| c.access_key == key && constant_eq(&c.secret_key, secret))
            {
                return Ok(());
            }
            return Err(ApiError::unauthorized(22, "Invalid credentials"));
        }
        Err(ApiError::unauthorized(
            21,
            "Bad credentials (unsupported scheme)",
        ))
    }
}

fn constant_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A random URL-safe token of `n` characters.
pub fn random_token(n: usize) -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..n)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

/// A new access key in the real format: 30 characters of A-Z and 0-9.
pub fn random_access_key() -> String {
    use rand::Rng as _;
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..30)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}
