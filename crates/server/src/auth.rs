//! `auth.login` and token checks.
//!
//! Clients decode the token as a JWT (without verifying it) to learn the API version and the
//! expiry, so tokens are real HS256 JWTs with the claims the real server puts in them. The
//! signing secret is created once and kept in the database: tokens stay valid across restarts,
//! which matters because the Python clients retry a 401 with the stale header (server-api.md §2.4).
//!
//! A token names the access key it was obtained with (`access_key` claim) and the time of the
//! key login it descends from (`login_iat`): a token stops working when its key is revoked,
//! and logging in with a token gives one that expires with the first (no renewal for ever).
//! Tokens from before these claims are refused once any key has been revoked after they were
//! issued. The key list is re-read from the database every few seconds, so a revocation made
//! by `clearml-agent server keys revoke` (another process) takes effect in a running server.

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
    /// The access key the token descends from (absent in tokens of earlier versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// When that key logged in; a token's expiry is never later than this plus 30 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_iat: Option<i64>,
}

/// Who made a call: the key, when it logged in, and as whom the call acts (the key's user,
/// or the user an admin impersonates with `X-Clearml-Impersonate-As`).
#[derive(Debug, Clone)]
pub struct Caller {
    pub access_key: Option<String>,
    pub login_iat: i64,
    pub identity: Identity,
}

/// A key pair that may log in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Credential {
    pub access_key: String,
    pub secret_key: String,
}

/// A user made by `auth.create_user` (the server's own user is not in this list), and the
/// access keys that are theirs (any other key is the server's own user's, the administrator's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: String,
    pub name: String,
    pub role: String,
    #[serde(default)]
    pub keys: Vec<String>,
}

/// The roles that may impersonate other users and ask for their tokens, as on the real server
/// (its system roles and `admin`).
pub fn may_impersonate(role: &str) -> bool {
    matches!(role, "admin" | "root" | "system")
}

#[derive(Clone)]
pub struct Auth {
    secret: Vec<u8>,
    /// Shared so that keys made by `auth.create_credentials` work at once.
    credentials: std::sync::Arc<std::sync::RwLock<Vec<Credential>>>,
    /// When a key was last revoked (seconds; 0: never).
    revoked_at: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The server's own user: its keys are the administrator's.
    pub identity: Identity,
    users: std::sync::Arc<std::sync::RwLock<Vec<User>>>,
}

/// The stored users.
pub(crate) fn stored_users(tx: &crate::store::Tx<'_>) -> Result<Vec<User>, ApiError> {
    match tx.meta("users")? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::internal(format!("stored users: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// The stored key pairs.
fn stored_credentials(tx: &crate::store::Tx<'_>) -> Result<Vec<Credential>, ApiError> {
    match tx.meta("credentials")? {
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| ApiError::internal(format!("stored credentials: {e}"))),
        None => Ok(Vec::new()),
    }
}

fn stored_revoked_at(tx: &crate::store::Tx<'_>) -> Result<i64, ApiError> {
    Ok(tx
        .meta("keys_revoked_at")?
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// The stored access keys.
pub fn access_keys(tx: &crate::store::Tx<'_>) -> Result<Vec<String>, ApiError> {
    Ok(stored_credentials(tx)?
        .into_iter()
        .map(|c| c.access_key)
        .collect())
}

/// Removes a key pair from the store; `false` when there was no such key. Tokens it issued
/// stop working (at once in this process, within seconds in a running server).
pub fn revoke(tx: &mut crate::store::Tx<'_>, access_key: &str) -> Result<bool, ApiError> {
    let mut all = stored_credentials(tx)?;
    let before = all.len();
    all.retain(|c| c.access_key != access_key);
    if all.len() == before {
        return Ok(false);
    }
    let text = serde_json::to_string(&all).map_err(|e| ApiError::internal(e.to_string()))?;
    tx.set_meta("credentials", &text)?;
    tx.set_meta(
        "keys_revoked_at",
        &chrono::Utc::now().timestamp().to_string(),
    )?;
    Ok(true)
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
            let mut credentials = stored_credentials(tx)?;
            let users = stored_users(tx)?;
            let revoked_at = stored_revoked_at(tx)?;
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
                revoked_at: std::sync::Arc::new(revoked_at.into()),
                users: std::sync::Arc::new(std::sync::RwLock::new(users)),
                identity: Identity {
                    user,
                    company,
                    role: "admin".into(),
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

    /// Every user: the server's own, then those made by `auth.create_user`.
    pub fn users(&self) -> Vec<Identity> {
        let mut out = vec![self.identity.clone()];
        out.extend(
            self.users
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .map(|u| self.identity_of(u)),
        );
        out
    }

    fn identity_of(&self, u: &User) -> Identity {
        Identity {
            user: u.id.clone(),
            company: self.identity.company.clone(),
            role: u.role.clone(),
            user_name: u.name.clone(),
            company_name: self.identity.company_name.clone(),
        }
    }

    /// The identity of user `id`, if there is such a user.
    pub fn user(&self, id: &str) -> Option<Identity> {
        self.users().into_iter().find(|i| i.user == id)
    }

    /// Stores a new user and knows it from now on; returns its id.
    pub fn create_user(
        &self,
        tx: &mut crate::store::Tx<'_>,
        name: &str,
        role: &str,
    ) -> Result<String, ApiError> {
        let mut all = stored_users(tx)?;
        let user = User {
            id: crate::req::new_id(),
            name: name.to_string(),
            role: role.to_string(),
            keys: Vec::new(),
        };
        all.push(user.clone());
        let text = serde_json::to_string(&all).map_err(|e| ApiError::internal(e.to_string()))?;
        tx.set_meta("users", &text)?;
        let id = user.id.clone();
        self.users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(user);
        Ok(id)
    }

    /// Records that `access_key` belongs to user `id` (not the server's own user: nothing to
    /// record for it).
    pub fn give_key(
        &self,
        tx: &mut crate::store::Tx<'_>,
        id: &str,
        access_key: &str,
    ) -> Result<(), ApiError> {
        if id == self.identity.user {
            return Ok(());
        }
        let mut all = stored_users(tx)?;
        let Some(u) = all.iter_mut().find(|u| u.id == id) else {
            return Err(ApiError::internal(format!("no user {id}")));
        };
        u.keys.push(access_key.to_string());
        let text = serde_json::to_string(&all).map_err(|e| ApiError::internal(e.to_string()))?;
        tx.set_meta("users", &text)?;
        *self
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = all;
        Ok(())
    }

    /// Whether the current caller (`identity`) may see or revoke `access_key`: an admin any
    /// key, a user only their own.
    pub fn may_manage_key(&self, identity: &Identity, access_key: &str) -> bool {
        may_impersonate(&identity.role) || self.identity_of_key(access_key).user == identity.user
    }

    /// As whom a key acts: the user it was given to, else the server's own user.
    pub(crate) fn identity_of_key(&self, access_key: &str) -> Identity {
        self.users
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|u| u.keys.iter().any(|k| k == access_key))
            .map_or_else(|| self.identity.clone(), |u| self.identity_of(u))
    }

    /// `X-Clearml-Impersonate-As`: the call acts as user `id`, with that user's identity and
    /// role, if the caller may impersonate (the real server's rule: admin or a system role).
    /// Refused as the real server does: 400, subcode 6 (impersonation error).
    pub fn impersonate(&self, caller: Caller, id: &str) -> Result<Caller, ApiError> {
        if !may_impersonate(&caller.identity.role) {
            return Err(ApiError::new(
                400,
                6,
                format!(
                    "Impersonation error: impersonation not allowed (role={})",
                    caller.identity.role
                ),
            ));
        }
        let Some(identity) = self.user(id) else {
            return Err(ApiError::new(
                400,
                6,
                format!("Impersonation error: unknown user (id={id})"),
            ));
        };
        Ok(Caller { identity, ..caller })
    }

    /// Re-reads the key list and the last revocation time (another process may have changed
    /// them: `server keys revoke`).
    pub fn reload(&self, store: &Store) -> Result<(), ApiError> {
        let (credentials, revoked_at, users) = store.write(|tx| {
            Ok((
                stored_credentials(tx)?,
                stored_revoked_at(tx)?,
                stored_users(tx)?,
            ))
        })?;
        *self
            .users
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = users;
        *self
            .credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = credentials;
        self.revoked_at
            .store(revoked_at, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Forgets a key at once in this process (it is already removed from the store).
    pub fn forget(&self, access_key: &str) {
        self.credentials
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|c| c.access_key != access_key);
        self.revoked_at.store(
            chrono::Utc::now().timestamp(),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn has_key(&self, access_key: &str) -> bool {
        self.credentials
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|c| c.access_key == access_key)
    }

    /// A new token for `caller`, as whom it acts (`None`: a token of the server's own user
    /// with no key behind it, for tests).
    pub fn issue(&self, caller: Option<&Caller>) -> Result<String, ApiError> {
        let now = chrono::Utc::now().timestamp();
        let login_iat = caller.map_or(now, |c| c.login_iat.min(now));
        let claims = Claims {
            identity: caller.map_or_else(|| self.identity.clone(), |c| c.identity.clone()),
            iat: now,
            exp: login_iat + TOKEN_SECONDS,
            session_id: crate::req::new_id(),
            env: "<unknown>".into(),
            auth_type: "Bearer".into(),
            api_version: API_VERSION.into(),
            server_version: SERVER_VERSION.into(),
            server_build: "embedded".into(),
            feature_set: "basic".into(),
            access_key: caller.and_then(|c| c.access_key.clone()),
            login_iat: Some(login_iat),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.secret),
        )
        .map_err(|e| ApiError::internal(format!("token: {e}")))
    }

    /// Checks a bearer token: signature, expiry, and that its key was not revoked since.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = true;
        let claims = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.secret),
            &validation,
        )
        .map(|d| d.claims)
        .map_err(|e| ApiError::unauthorized(30, format!("Invalid token ({e})")))?;
        let revoked = match &claims.access_key {
            Some(key) => !self.has_key(key),
            None => claims.iat <= self.revoked_at.load(std::sync::atomic::Ordering::Relaxed),
        };
        if revoked {
            return Err(ApiError::unauthorized(
                30,
                "Invalid token (the access key it was issued for was revoked)",
            ));
        }
        Ok(claims)
    }

    /// Checks an `Authorization` header (Basic or Bearer): who is calling.
    pub fn check_header(&self, header: Option<&str>) -> Result<Caller, ApiError> {
        let Some(h) = header else {
            return Err(ApiError::unauthorized(
                20,
                "Unauthorized (missing credentials)",
            ));
        };
        if let Some(token) = h.strip_prefix("Bearer ") {
            return self.verify(token.trim()).map(|c| Caller {
                login_iat: c.login_iat.unwrap_or(c.iat),
                access_key: c.access_key,
                identity: c.identity,
            });
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
            let known = self
                .credentials
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|c| c.access_key == key && constant_eq(&c.secret_key, secret));
            if known {
                return Ok(Caller {
                    access_key: Some(key.to_string()),
                    login_iat: chrono::Utc::now().timestamp(),
                    identity: self.identity_of_key(key),
                });
            }
            return Err(ApiError::unauthorized(22, "Invalid credentials"));
        }
        Err(ApiError::unauthorized(
            21,
            "Bad credentials (unsupported scheme)",
        ))
    }
}

/// Equality whose time does not depend on where the strings differ (secrets, CSRF tokens).
pub(crate) fn constant_eq(a: &str, b: &str) -> bool {
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
