//! The files server: the HTTP contract of ClearML's `fileserver/fileserver.py`, as the Python SDK
//! (clearml 2.1.12) uses it, over a plain folder.
//!
//! Routes, relative to wherever the router is mounted (its own port, or nested under `/files`):
//! - `GET /` answers `OK` (a ping). No token is needed; a token that is sent must be valid,
//!   as on the real server.
//! - `POST /` takes `multipart/form-data`. **Each file part's field name is the destination
//!   path** (raw: it may hold spaces and a leading `/`); the part is stored at
//!   `<root>/<name without leading '/'>` and the reply is `200` with the JSON list of the stored
//!   names (leading `/` stripped). Parts without a `filename` are plain form fields and are
//!   ignored, like Flask's `request.files`.
//! - `GET /<path>` (percent-decoded) streams the file back; `?download` adds
//!   `Content-Disposition: attachment`; single `Range: bytes=…` requests get `206`; `HEAD` works.
//! - `DELETE /<path>` removes one file: `200` with the JSON string of the path, or `404`.
//! - `POST /delete_many {"files": [...]}` removes files and folders (each entry is
//!   `unquote_plus`-decoded first): `200` with
//!   `{"deleted": {"<entry>": "<decoded path>"}, "errors": {"<message>": ["<entry>", ...]}}`.
//!
//! Errors are JSON `{"code": <status>, "msg": "<text>"}` (the SDK only looks at the status):
//! `401` without a valid token, `404` for a missing file or any path that would leave the root,
//! `400` for a malformed request, `409` when a file or folder is in the way of an upload, `415`
//! for a compressed request body, `416` for a range past the end, `500` for disk errors.
//!
//! Design notes:
//! - Paths never leave the root. A request path is split on `/` into components; `..`, NUL and
//!   anything the platform would read as more than one plain component are refused. Symlinks
//!   are handled by canonicalising: on upload each parent folder is created one level at a time
//!   and canonicalised before the next level, so a link to the outside is caught *before*
//!   anything is created through it; downloads and deletes canonicalise the target. (A process
//!   with write access to the root that swaps folders for links mid-request is out of scope.)
//! - Uploads stream: every multipart chunk goes straight into a hidden temporary file in the
//!   destination folder, which is renamed over the destination once complete. Readers therefore
//!   see the old file or the new one, never half of one, and a failed or aborted upload leaves
//!   nothing behind. The route has no body size limit (artifacts and models can be gigabytes).
//! - Downloads stream from an open file handle with an exact `Content-Length`.
//! - Blocking filesystem walks run in `spawn_blocking`, one task per request step rather than
//!   one per syscall.

use std::io::{self, ErrorKind, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Multipart, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter};
use tokio_util::io::ReaderStream;

/// Decides whether a bearer token (the text after "Bearer ", or the clearml_token_basic cookie value) is valid.
pub type TokenCheck = std::sync::Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The cookie the ClearML web UI sends the token in (`fileserver.auth.cookie_names`).
const TOKEN_COOKIE: &str = "clearml_token_basic";
/// Read and write buffer size: large enough that a multi-gigabyte file is not a million
/// blocking-pool round trips, small enough not to matter per connection.
const IO_CHUNK: usize = 256 * 1024;

struct Files {
    /// The configured root; canonicalised per request, so it may be created or moved later.
    root: PathBuf,
    check: TokenCheck,
}

type Shared = Arc<Files>;

/// The files server: serves `root` at `/`. Mount it on its own port, or nest it under a prefix.
pub fn router(root: PathBuf, check: TokenCheck) -> axum::Router {
    // Best effort: an unusable root shows up as a 500 on the first upload, with the reason.
    if let Err(e) = std::fs::create_dir_all(&root) {
        tracing::warn!("files root {} cannot be created: {e}", root.display());
    }
    let state: Shared = Arc::new(Files { root, check });
    Router::new()
        .route(
            "/",
            get(ping)
                .post(upload)
                // Uploads are streamed to disk, so the 2 MB default is no protection, only a cap.
                .layer(DefaultBodyLimit::disable()),
        )
        .route("/{*path}", get(download).delete(delete_one).post(post_path))
        .with_state(state)
}

// ---------------------------------------------------------------------------------------------
// Errors

/// A request that ends in an error status with a JSON `{code, msg}` body.
#[derive(Debug)]
struct Failure {
    status: StatusCode,
    msg: String,
}

impl Failure {
    fn new(status: StatusCode, msg: impl Into<String>) -> Self {
        Self {
            status,
            msg: msg.into(),
        }
    }

    fn not_found(path: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("File {path} not found"))
    }

    fn unauthorized(msg: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, msg)
    }

    fn bad_request(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, msg)
    }

    fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::warn!("files server: {what}: {e}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"))
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = json!({ "code": self.status.as_u16(), "msg": self.msg });
        (self.status, axum::Json(body)).into_response()
    }
}

type Result<T, E = Failure> = std::result::Result<T, E>;

/// Runs a blocking filesystem step off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Failure::internal("filesystem task failed", e))?
}

// ---------------------------------------------------------------------------------------------
// Authentication

/// Takes the token the way `fileserver/auth.py` does: the `Authorization` header wins and must
/// be a bearer token; otherwise the web UI's cookie.
fn request_token(headers: &HeaderMap) -> Result<Option<String>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| Failure::unauthorized("Invalid authorization header"))?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Failure::unauthorized(
                "Only bearer token authorization is supported",
            ));
        }
        return Ok(Some(token.trim().to_owned()));
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=')
                && name.trim() == TOKEN_COOKIE
            {
                let value = value.trim().trim_matches('"');
                if !value.is_empty() {
                    return Ok(Some(value.to_owned()));
                }
            }
        }
    }
    Ok(None)
}

/// Checks the request's token; without one, fails only when `required`.
fn authorize(files: &Files, headers: &HeaderMap, required: bool) -> Result<()> {
    match request_token(headers)? {
        Some(token) if !token.is_empty() && (files.check)(&token) => Ok(()),
        Some(_) => Err(Failure::unauthorized("Invalid token")),
        None if required => Err(Failure::unauthorized("Missing token")),
        None => Ok(()),
    }
}

/// The real server refuses compressed request bodies rather than storing them compressed.
fn refuse_content_encoding(headers: &HeaderMap) -> Result<()> {
    match headers.get(header::CONTENT_ENCODING) {
        Some(v) if !v.as_bytes().eq_ignore_ascii_case(b"identity") => Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content encoding is not supported ({})",
                String::from_utf8_lossy(v.as_bytes())
            ),
        )),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Paths

/// Splits a relative path into plain components, dropping empty and `.` ones (so a leading `/`
/// means nothing). `None` if any component could climb out (`..`), carries a NUL, or is not one
/// plain component to the platform (a drive prefix or a `\` separator on Windows).
fn components(raw: &str) -> Option<Vec<&str>> {
    if raw.contains('\0') {
        return None;
    }
    let mut out = Vec::new();
    for part in raw.split('/') {
        if part.is_empty() || part == "." {
            continue;
        }
        let mut parsed = Path::new(part).components();
        match (parsed.next(), parsed.next()) {
            (Some(Component::Normal(c)), None) if c == part => out.push(part),
            _ => return None,
        }
    }
    Some(out)
}

/// `true` for errors meaning "there is nothing there" (including a path through a file).
fn is_missing(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory)
}

fn canonical_root(root: &Path) -> io::Result<PathBuf> {
    std::fs::canonicalize(root)
}

/// Creates the folders of an upload one level at a time, canonicalising each before going on,
/// so that a symlink leading out of the root is refused before anything is made through it.
/// Returns the canonical folder the file goes in.
fn prepare_folder(root: &Path, folders: &[String], raw: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(|e| Failure::internal("cannot create files root", e))?;
    let canon_root =
        canonical_root(root).map_err(|e| Failure::internal("cannot resolve files root", e))?;
    let mut current = canon_root.clone();
    for folder in folders {
        let next = current.join(folder);
        match std::fs::create_dir(&next) {
            // `AlreadyExists` also covers a symlink (even a dangling one): checked just below.
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(Failure::internal("cannot create folder", e)),
        }
        current = match std::fs::canonicalize(&next) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return Err(Failure::not_found(raw)),
            Err(e) => return Err(Failure::internal("cannot resolve folder", e)),
        };
        if !current.starts_with(&canon_root) {
            return Err(Failure::not_found(raw));
        }
        if !current.is_dir() {
            return Err(Failure::new(
                StatusCode::CONFLICT,
                format!("{raw}: a file is in the way of folder {folder}"),
            ));
        }
    }
    Ok(current)
}

/// Resolves an existing entry to its canonical path, refusing anything outside the root.
fn resolve_existing(root: &Path, parts: &[&str], raw: &str) -> Result<PathBuf> {
    let canon_root = match canonical_root(root) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Err(Failure::not_found(raw)),
        Err(e) => return Err(Failure::internal("cannot resolve files root", e)),
    };
    let mut full = canon_root.clone();
    full.extend(parts);
    let canon = match std::fs::canonicalize(&full) {
        Ok(p) => p,
        Err(e) if is_missing(&e) => return Err(Failure::not_found(raw)),
        Err(e) => return Err(Failure::internal("cannot resolve file", e)),
    };
    if !canon.starts_with(&canon_root) {
        return Err(Failure::not_found(raw));
    }
    Ok(canon)
}

/// For deletion: the entry itself (not what a symlink points at) inside its canonical parent,
/// plus its canonical target. Both are checked to be inside the root, and the entry is never
/// the root itself, so neither removing it nor walking into it can reach outside.
fn resolve_for_delete(root: &Path, parts: &[&str], raw: &str) -> Result<(PathBuf, PathBuf)> {
    let Some((name, parents)) = parts.split_last() else {
        return Err(Failure::not_found(raw));
    };
    let parent = resolve_existing(root, parents, raw)?;
    let target = resolve_existing(root, parts, raw)?;
    let canon_root = canonical_root(root).map_err(|e| Failure::internal("files root", e))?;
    if target == canon_root {
        return Err(Failure::not_found(raw));
    }
    Ok((parent.join(name), target))
}

// ---------------------------------------------------------------------------------------------
// Ping and upload

async fn ping(State(files): State<Shared>, headers: HeaderMap) -> Result<&'static str> {
    authorize(&files, &headers, false)?;
    Ok("OK")
}

async fn upload(
    State(files): State<Shared>,
    headers: HeaderMap,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<axum::Json<Vec<String>>> {
    authorize(&files, &headers, true)?;
    refuse_content_encoding(&headers)?;
    let mut multipart = multipart.map_err(|e| Failure::bad_request(e.body_text()))?;
    let mut stored = Vec::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(e) => return Err(Failure::new(e.status(), e.body_text())),
        };
        // Like Flask's `request.files`: only file parts count, and a nameless one is skipped.
        let Some(name) = field.name().filter(|n| !n.is_empty()).map(str::to_owned) else {
            continue;
        };
        if field.file_name().is_none() {
            continue;
        }
        stored.push(store_field(&files.root, &name, field).await?);
    }
    tracing::debug!("files server: stored {} files", stored.len());
    Ok(axum::Json(stored))
}

/// Streams one multipart part to `<root>/<name>`, through a temporary file and a rename.
async fn store_field(
    root: &Path,
    name: &str,
    mut field: axum::extract::multipart::Field<'_>,
) -> Result<String> {
    let parts = components(name).ok_or_else(|| Failure::not_found(name))?;
    let Some((file_name, folders)) = parts.split_last() else {
        return Err(Failure::bad_request(format!(
            "field name {name:?} does not name a file"
        )));
    };
    if name.ends_with('/') {
        return Err(Failure::bad_request(format!(
            "field name {name:?} names a folder, not a file"
        )));
    }
    let file_name = (*file_name).to_owned();
    let folders: Vec<String> = folders.iter().map(|s| (*s).to_owned()).collect();

    let folder = {
        let (root, raw, file_name) = (root.to_owned(), name.to_owned(), file_name.clone());
        blocking(move || {
            let folder = prepare_folder(&root, &folders, &raw)?;
            if folder.join(&file_name).is_dir() {
                return Err(Failure::new(
                    StatusCode::CONFLICT,
                    format!("{raw}: a folder is in the way"),
                ));
            }
            Ok(folder)
        })
        .await?
    };
    let target = folder.join(&file_name);
    // Same folder as the target, so the final rename is atomic; hidden and unique so parallel
    // uploads of one path never share a temporary file.
    let temp = TempFile(Some(
        folder.join(format!(".{}.upload.tmp", uuid::Uuid::new_v4().simple())),
    ));
    let temp_path = temp.path().to_owned();

    let file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp_path)
        .await
        .map_err(|e| Failure::internal("cannot create file", e))?;
    let mut out = BufWriter::with_capacity(IO_CHUNK, file);
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => out
                .write_all(&chunk)
                .await
                .map_err(|e| Failure::internal("cannot write file", e))?,
            Ok(None) => break,
            Err(e) => return Err(Failure::new(e.status(), e.body_text())),
        }
    }
    out.flush()
        .await
        .map_err(|e| Failure::internal("cannot write file", e))?;
    drop(out);

    tokio::fs::rename(&temp_path, &target)
        .await
        .map_err(|e| Failure::internal("cannot store file", e))?;
    temp.keep();
    Ok(name.trim_start_matches('/').to_owned())
}

/// Removes the temporary file of an upload that did not finish (an error, or the client going
/// away, which drops the request future mid-stream).
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn path(&self) -> &Path {
        self.0.as_deref().unwrap_or(Path::new(""))
    }

    fn keep(mut self) {
        self.0 = None;
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // Synchronous, but one unlink; a Drop cannot await.
            let _ = std::fs::remove_file(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Download

/// What `Range` asks for, against a file of a known length.
#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// No usable range: serve the whole file (what RFC 9110 allows for ranges we don't do).
    Full,
    /// Inclusive byte positions.
    Part(u64, u64),
    /// Syntactically fine but past the end: 416.
    Unsatisfiable,
}

fn parse_range(value: &str, len: u64) -> RangeSpec {
    let Some((unit, spec)) = value.trim().split_once('=') else {
        return RangeSpec::Full;
    };
    // Multiple ranges would need a multipart/byteranges reply; no client here asks for one.
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeSpec::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeSpec::Full;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last `n` bytes.
        return match last.parse::<u64>() {
            Ok(0) => RangeSpec::Unsatisfiable,
            Ok(_) if len == 0 => RangeSpec::Unsatisfiable,
            Ok(n) => RangeSpec::Part(len.saturating_sub(n), len - 1),
            Err(_) => RangeSpec::Full,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return RangeSpec::Full;
    };
    let end = if last.is_empty() {
        None
    } else {
        match last.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return RangeSpec::Full,
        }
    };
    if start >= len {
        return RangeSpec::Unsatisfiable;
    }
    let end = end.map_or(len - 1, |e| e.min(len - 1));
    RangeSpec::Part(start, end)
}

/// A guess from the extension. Gzip-like files are served as bytes, as the real server does,
/// so that clients do not transparently decompress them.
fn content_type(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "json" => "application/json",
        "txt" | "log" | "conf" | "cfg" | "ini" => "text/plain; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "html" | "htm" => "text/html; charset=utf-8",
        "yaml" | "yml" => "application/yaml",
        "xml" => "application/xml",
        "js" => "text/javascript",
        "py" => "text/x-python; charset=utf-8",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "bmp" => "image/bmp",
        "webp" => "image/webp",
        "svg" => "image/svg+xml",
        "tif" | "tiff" => "image/tiff",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        "wav" => "audio/wav",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "tar" => "application/x-tar",
        _ => "application/octet-stream",
    }
}

/// `Content-Disposition: attachment` with a plain ASCII `filename` and the exact UTF-8 name in
/// `filename*` (RFC 6266), since task and artifact names are often not ASCII.
fn attachment(name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let mut value = format!("attachment; filename=\"{ascii}\"");
    if ascii != name {
        value.push_str("; filename*=UTF-8''");
        for b in name.bytes() {
            if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
                value.push(char::from(b));
            } else {
                value.push_str(&format!("%{b:02X}"));
            }
        }
    }
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static("attachment"))
}

fn http_date(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%a, %d %b %Y %H:%M:%S GMT")
        .to_string()
}

fn wants_download(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|pair| pair.split_once('=').map_or(pair, |(k, _)| k) == "download")
    })
}

async fn download(
    State(files): State<Shared>,
    path: Result<axum::extract::Path<String>, PathRejection>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response> {
    authorize(&files, &headers, true)?;
    // A path that does not decode to UTF-8 cannot name anything an upload stored.
    let axum::extract::Path(path) = path.map_err(|_| Failure::not_found("(undecodable)"))?;
    let parts = components(&path).ok_or_else(|| Failure::not_found(&path))?;
    if parts.is_empty() {
        return Err(Failure::not_found(&path));
    }
    let name = parts.last().copied().unwrap_or_default().to_owned();

    let (file, len, modified) = {
        let (root, raw) = (files.root.clone(), path.clone());
        let parts: Vec<String> = parts.iter().map(|s| (*s).to_owned()).collect();
        blocking(move || {
            let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
            let canon = resolve_existing(&root, &parts, &raw)?;
            // Look before opening: opening a FIFO would block forever.
            let is_file = std::fs::metadata(&canon)
                .map(|m| m.is_file())
                .unwrap_or(false);
            if !is_file {
                return Err(Failure::not_found(&raw));
            }
            let file = std::fs::File::open(&canon).map_err(|e| match e.kind() {
                ErrorKind::NotFound => Failure::not_found(&raw),
                _ => Failure::internal("cannot open file", e),
            })?;
            let meta = file
                .metadata()
                .map_err(|e| Failure::internal("cannot read file", e))?;
            Ok((file, meta.len(), meta.modified().ok()))
        })
        .await?
    };
    let last_modified = modified.map(http_date);

    // `If-Range` with anything other than our current date means "the file you have changed":
    // send it whole rather than splice two versions.
    let if_range_ok = match headers.get(header::IF_RANGE) {
        None => true,
        Some(v) => last_modified
            .as_deref()
            .is_some_and(|lm| v.as_bytes() == lm.as_bytes()),
    };
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if if_range_ok => parse_range(v, len),
        _ => RangeSpec::Full,
    };

    let mut response = Response::builder()
        .header(header::CONTENT_TYPE, content_type(&name))
        .header(header::ACCEPT_RANGES, "bytes")
        // Artifacts are overwritten in place under the same name; make browsers revalidate.
        .header(header::CACHE_CONTROL, "no-cache");
    if let Some(lm) = &last_modified {
        response = response.header(header::LAST_MODIFIED, lm);
    }
    if wants_download(query.as_deref()) {
        response = response.header(header::CONTENT_DISPOSITION, attachment(&name));
    }

    let (status, start, count) = match range {
        RangeSpec::Full => (StatusCode::OK, 0, len),
        RangeSpec::Part(first, last) => {
            response =
                response.header(header::CONTENT_RANGE, format!("bytes {first}-{last}/{len}"));
            (StatusCode::PARTIAL_CONTENT, first, last - first + 1)
        }
        RangeSpec::Unsatisfiable => {
            let mut failure = Failure::new(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!("range not satisfiable for a file of {len} bytes"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                failure.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(failure);
        }
    };

    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        let mut file = tokio::fs::File::from_std(file);
        if start > 0 {
            file.seek(SeekFrom::Start(start))
                .await
                .map_err(|e| Failure::internal("cannot read file", e))?;
        }
        // `take` keeps the body to the length announced even if the file grows meanwhile.
        Body::from_stream(ReaderStream::with_capacity(file.take(count), IO_CHUNK))
    };
    response
        .status(status)
        .header(header::CONTENT_LENGTH, count)
        .body(body)
        .map_err(|e| Failure::internal("cannot build response", e))
}

// ---------------------------------------------------------------------------------------------
// Delete

async fn delete_one(
    State(files): State<Shared>,
    path: Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<axum::Json<String>> {
    authorize(&files, &headers, true)?;
    let axum::extract::Path(path) = path.map_err(|_| Failure::not_found("(undecodable)"))?;
    let root = files.root.clone();
    let raw = path.clone();
    blocking(move || {
        let parts = components(&raw).ok_or_else(|| Failure::not_found(&raw))?;
        let (entry, target) = resolve_for_delete(&root, &parts, &raw)?;
        // Only files, as on the real server; folders go through `delete_many`.
        if !target.is_file() {
            return Err(Failure::not_found(&raw));
        }
        // Removes a symlink itself, never the file it points at.
        std::fs::remove_file(&entry).map_err(|e| match e.kind() {
            ErrorKind::NotFound => Failure::not_found(&raw),
            _ => Failure::internal("cannot delete file", e),
        })
    })
    .await?;
    Ok(axum::Json(path))
}

/// `POST /<path>`: only `delete_many` exists; anything else is not an endpoint.
async fn post_path(
    State(files): State<Shared>,
    path: Result<axum::extract::Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<Value>> {
    match path {
        Ok(axum::extract::Path(p)) if p == "delete_many" => {
            delete_many(&files, &headers, &body).await
        }
        _ => Err(Failure::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "uploads go to the files server base URL",
        )),
    }
}

/// Deletes one `delete_many` entry; `Err` is the message it is filed under in `errors`.
fn delete_entry(root: &Path, path: &str) -> Result<(), String> {
    if path.trim_matches('/').is_empty() {
        // An empty path would mean the whole root.
        return Err("Empty path not allowed".into());
    }
    let not_found = || "Not found".to_owned();
    let parts = components(path).ok_or_else(not_found)?;
    let (entry, target) = resolve_for_delete(root, &parts, path).map_err(|f| {
        if f.status == StatusCode::NOT_FOUND {
            not_found()
        } else {
            f.msg
        }
    })?;
    let is_link = std::fs::symlink_metadata(&entry)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    let result = if is_link || target.is_file() {
        // A link goes, never what it points at.
        std::fs::remove_file(&entry)
    } else if target.is_dir() {
        // `remove_dir_all` does not follow symlinks found inside the folder.
        std::fs::remove_dir_all(&entry)
    } else {
        return Err("Not a file or folder".into());
    };
    result.map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            not_found()
        } else {
            tracing::warn!("files server: cannot delete {}: {e}", entry.display());
            e.to_string()
        }
    })
}

async fn delete_many(files: &Files, headers: &HeaderMap, body: &[u8]) -> Result<axum::Json<Value>> {
    authorize(files, headers, true)?;
    refuse_content_encoding(headers)?;
    let body: Value = serde_json::from_slice(body)
        .map_err(|e| Failure::bad_request(format!("Json payload is missing or invalid: {e}")))?;
    let entries = match body.get("files") {
        Some(Value::Array(entries)) if !entries.is_empty() => entries.clone(),
        _ => return Err(Failure::bad_request("files are missing")),
    };
    let root = files.root.clone();
    let (deleted, errors) = blocking(move || {
        let mut deleted = Map::new();
        let mut errors: Map<String, Value> = Map::new();
        for entry in entries {
            let (label, outcome) = match &entry {
                Value::String(file) => {
                    let path = crate::req::unquote_plus(file);
                    let outcome = delete_entry(&root, &path).map(|()| path);
                    (file.clone(), outcome)
                }
                other => (other.to_string(), Err("Invalid path".to_owned())),
            };
            match outcome {
                Ok(path) => {
                    deleted.insert(label, Value::String(path));
                }
                Err(msg) => {
                    if let Value::Array(list) = errors
                        .entry(msg)
                        .or_insert_with(|| Value::Array(Vec::new()))
                    {
                        list.push(Value::String(label));
                    }
                }
            }
        }
        Ok((deleted, errors))
    })
    .await?;
    tracing::debug!(
        "files server: deleted {} entries, {} failed",
        deleted.len(),
        errors.len()
    );
    Ok(axum::Json(json!({ "deleted": deleted, "errors": errors })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components("/a/b c/./d"), Some(vec!["a", "b c", "d"]));
        assert_eq!(components("//"), Some(vec![]));
        assert_eq!(components("a/../b"), None);
        assert_eq!(components(".."), None);
        assert_eq!(components("a\0b"), None);
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Part(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=90-200", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), RangeSpec::Part(90, 99));
        assert_eq!(parse_range("bytes=-200", 100), RangeSpec::Part(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Full);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Full);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Full);
    }

    #[test]
    fn attachment_names() {
        assert_eq!(
            attachment("a b.json").to_str().ok(),
            Some("attachment; filename=\"a b.json\"")
        );
        assert_eq!(
            attachment("п.txt").to_str().ok(),
            Some("attachment; filename=\"_.txt\"; filename*=UTF-8''%D0%BF.txt")
        );
    }

    #[test]
    fn download_query() {
        assert!(wants_download(Some("download")));
        assert!(wants_download(Some("x=1&download=")));
        assert!(!wants_download(Some("downloads")));
        assert!(!wants_download(None));
    }
}
