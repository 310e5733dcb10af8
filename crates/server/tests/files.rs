//! The files server over a real socket: what the ClearML SDK does (multipart upload whose field
//! names are paths, percent-encoded GETs, deletes), plus the ways a request could try to leave
//! the root. Traversal requests go over a raw TCP stream, because reqwest (like browsers)
//! normalises `..` and `%2e%2e` out of URLs before sending them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clearml_server::files::{TokenCheck, router};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use reqwest::header::{self, HeaderMap};
use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "good-token";

struct Server {
    _dir: tempfile::TempDir,
    /// The files root.
    root: PathBuf,
    /// A folder next to the root, which nothing may ever write into.
    outside: PathBuf,
    addr: SocketAddr,
    base: String,
    client: Client,
}

fn check() -> TokenCheck {
    Arc::new(|token: &str| token == TOKEN)
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let addr = serve(router(root.clone(), check())).await;
    Server {
        _dir: dir,
        root,
        outside,
        addr,
        base: format!("http://{addr}"),
        client: Client::new(),
    }
}

fn auth() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        format!("Bearer {TOKEN}").parse().unwrap(),
    );
    h
}

/// A form as the SDK builds it: field name and file name are the same raw path. reqwest would
/// percent-encode names by default; the SDK (requests-toolbelt) sends them as they are.
fn form(files: &[(&str, &[u8])]) -> Form {
    let mut form = Form::new().percent_encode_noop();
    for (name, data) in files {
        form = form.part(
            (*name).to_owned(),
            Part::bytes(data.to_vec()).file_name((*name).to_owned()),
        );
    }
    form
}

impl Server {
    async fn upload(&self, files: &[(&str, &[u8])]) -> reqwest::Response {
        self.client
            .post(&self.base)
            .headers(auth())
            .multipart(form(files))
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/{path}", self.base))
            .headers(auth())
            .send()
            .await
            .unwrap()
    }

    /// Sends a request byte for byte, so the path reaches the server un-normalised.
    async fn raw(&self, head: &str, body: &[u8]) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let mut request = head.replace('\n', "\r\n").into_bytes();
        request.extend_from_slice(body);
        stream.write_all(&request).await.unwrap();
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply).into_owned();
        let status = reply
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        (status, reply)
    }

    async fn raw_get(&self, path: &str) -> u16 {
        let head = format!(
            "GET {path} HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\nConnection: close\n\n"
        );
        self.raw(&head, b"").await.0
    }

    /// A multipart upload with a hand-written part header, for names reqwest would not send.
    async fn raw_upload(&self, disposition: &str, data: &[u8]) -> (u16, String) {
        let mut body = Vec::new();
        body.extend_from_slice(b"--XYZ\r\nContent-Disposition: form-data; ");
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\nContent-Type: application/octet-stream\r\n\r\n");
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n--XYZ--\r\n");
        let head = format!(
            "POST / HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n\
             Content-Type: multipart/form-data; boundary=XYZ\nContent-Length: {}\n\
             Connection: close\n\n",
            body.len()
        );
        self.raw(&head, &body).await
    }
}

/// Every regular file under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                walk(base, &path, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn ping_needs_no_token_but_checks_one_that_is_sent() {
    let s = start().await;
    let r = s.client.get(&s.base).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "OK");

    let r = s.client.get(&s.base).headers(auth()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = s
        .client
        .get(&s.base)
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn upload_and_download_sdk_style() {
    let s = start().await;
    let art = "/proj/exp1 clone.0123abcd/artifacts/myart/myart.json";
    let img = "proj/exp1 clone.0123abcd/metrics/loss/train/loss_train_00000001.jpeg";
    let uni = "проект/задача.1/artifacts/данные.txt";
    let r = s
        .upload(&[
            (art, br#"{"a": 1}"#),
            (img, b"\xff\xd8jpeg"),
            (uni, "текст".as_bytes()),
        ])
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    let stored: Vec<String> = r.json().await.unwrap();
    assert_eq!(stored, vec![&art[1..], img, uni]);

    // On disk, under the root, leading '/' stripped, no temporary files left behind.
    assert_eq!(tree(&s.root), {
        let mut v = vec![art[1..].to_owned(), img.to_owned(), uni.to_owned()];
        v.sort();
        v
    });
    assert_eq!(
        std::fs::read(s.root.join(&art[1..])).unwrap(),
        br#"{"a": 1}"#
    );

    // The SDK stores and fetches the percent-encoded URL.
    let r = s
        .get("proj/exp1%20clone.0123abcd/artifacts/myart/myart.json")
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "8");
    assert!(r.headers().get(header::CONTENT_DISPOSITION).is_none());
    assert_eq!(r.bytes().await.unwrap().as_ref(), br#"{"a": 1}"#);

    // reqwest percent-encodes the non-ASCII path itself.
    let r = s.get(uni).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "текст");

    let r = s.get(img).await;
    assert_eq!(r.headers()[header::CONTENT_TYPE], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\xff\xd8jpeg");

    // Uploading again replaces the file.
    let r = s.upload(&[(art, b"v2")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.get(&art[1..]).await.text().await.unwrap(), "v2");
    assert_eq!(tree(&s.root).len(), 3);

    // Missing files and folders are 404.
    assert_eq!(
        s.get("proj/nothing.txt").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(s.get("proj").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        s.get(&format!("{}/deeper", &art[1..])).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn download_attachment_head_and_ranges() {
    let s = start().await;
    let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    assert_eq!(s.upload(&[("d/blob.bin", &data)]).await.status(), 200);
    assert_eq!(s.upload(&[("d/я файл.json", b"{}")]).await.status(), 200);

    let r = s.get("d/blob.bin?download").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"blob.bin\""
    );
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/octet-stream"
    );
    assert_eq!(r.headers()[header::ACCEPT_RANGES], "bytes");
    assert!(r.headers().contains_key(header::LAST_MODIFIED));
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[..]);

    let r = s
        .get("d/%D1%8F%20%D1%84%D0%B0%D0%B9%D0%BB.json?x=1&download=")
        .await;
    assert_eq!(
        r.headers()[header::CONTENT_DISPOSITION],
        "attachment; filename=\"_ ____.json\"; filename*=UTF-8''%D1%8F%20%D1%84%D0%B0%D0%B9%D0%BB.json"
    );

    let range = |spec: &'static str| {
        s.client
            .get(format!("{}/d/blob.bin", s.base))
            .headers(auth())
            .header(header::RANGE, spec)
            .send()
    };
    let r = range("bytes=10-19").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 10-19/1000");
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "10");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[10..20]);

    let r = range("bytes=990-").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 990-999/1000");
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[990..]);

    let r = range("bytes=-5").await.unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &data[995..]);

    let r = range("bytes=500-100000").await.unwrap();
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 500-999/1000");
    assert_eq!(r.bytes().await.unwrap().len(), 500);

    let r = range("bytes=1000-").await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */1000");

    // Several ranges at once are served as the whole file.
    let r = range("bytes=0-1,5-6").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 1000);

    // If-Range with a stale validator: the whole (current) file.
    let r = s
        .client
        .get(format!("{}/d/blob.bin", s.base))
        .headers(auth())
        .header(header::RANGE, "bytes=0-9")
        .header(header::IF_RANGE, "Thu, 01 Jan 1970 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let r = s
        .client
        .head(format!("{}/d/blob.bin", s.base))
        .headers(auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[header::CONTENT_LENGTH], "1000");
    assert!(r.bytes().await.unwrap().is_empty());
}

/// A deterministic pseudo-random stream, so the test needs no fixture and no second copy.
fn chunk(i: u64, size: usize) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn large_file_streams_both_ways() {
    let s = start().await;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: u64 = 50;
    let mut expected = Md5::new();
    for i in 0..CHUNKS {
        expected.update(chunk(i, CHUNK));
    }
    let expected = expected.finalize();

    let stream =
        futures_util::stream::iter(0..CHUNKS).map(|i| Ok::<_, std::io::Error>(chunk(i, CHUNK)));
    let name = "big/model weights.bin";
    let part = Part::stream_with_length(reqwest::Body::wrap_stream(stream), CHUNKS * CHUNK as u64)
        .file_name(name);
    let form = Form::new().percent_encode_noop().part(name, part);
    let r = s
        .client
        .post(&s.base)
        .headers(auth())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Vec<String>>().await.unwrap(), vec![name]);
    assert_eq!(
        std::fs::metadata(s.root.join(name)).unwrap().len(),
        CHUNKS * CHUNK as u64
    );

    let r = s.get("big/model%20weights.bin").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()[header::CONTENT_LENGTH].to_str().unwrap(),
        (CHUNKS * CHUNK as u64).to_string()
    );
    let mut got = Md5::new();
    let mut size = 0usize;
    let mut body = r.bytes_stream();
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        size += piece.len();
        got.update(&piece);
    }
    assert_eq!(size, CHUNK * CHUNKS as usize);
    assert_eq!(got.finalize(), expected);

    // And a range from the middle of it.
    let r = s
        .client
        .get(format!("{}/big/model%20weights.bin", s.base))
        .headers(auth())
        .header(
            header::RANGE,
            format!("bytes={}-{}", 7 * CHUNK + 3, 7 * CHUNK + 99),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &chunk(7, CHUNK)[3..100]);
}

#[tokio::test]
async fn token_required_except_for_ping() {
    let s = start().await;
    let upload = |headers: HeaderMap| {
        s.client
            .post(&s.base)
            .headers(headers)
            .multipart(form(&[("a.txt", b"x")]))
            .send()
    };
    assert_eq!(upload(HeaderMap::new()).await.unwrap().status(), 401);
    let mut bad = HeaderMap::new();
    bad.insert(header::AUTHORIZATION, "Bearer wrong".parse().unwrap());
    assert_eq!(upload(bad).await.unwrap().status(), 401);
    let mut basic = HeaderMap::new();
    basic.insert(
        header::AUTHORIZATION,
        "Basic Z29vZC10b2tlbg==".parse().unwrap(),
    );
    assert_eq!(upload(basic).await.unwrap().status(), 401);
    assert!(tree(&s.root).is_empty());

    // The web UI's cookie works instead of the header.
    let mut cookie = HeaderMap::new();
    cookie.insert(
        header::COOKIE,
        format!("other=1; clearml_token_basic={TOKEN}")
            .parse()
            .unwrap(),
    );
    assert_eq!(upload(cookie.clone()).await.unwrap().status(), 200);

    let url = format!("{}/a.txt", s.base);
    assert_eq!(s.client.get(&url).send().await.unwrap().status(), 401);
    assert_eq!(
        s.client
            .get(&url)
            .bearer_auth("x")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = s.client.get(&url).headers(cookie).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "x");

    assert_eq!(s.client.delete(&url).send().await.unwrap().status(), 401);
    let r = s
        .client
        .post(format!("{}/delete_many", s.base))
        .json(&serde_json::json!({"files": ["a.txt"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(s.root.join("a.txt").is_file());
}

#[tokio::test]
async fn traversal_is_refused_and_nothing_lands_outside() {
    let s = start().await;
    std::fs::write(s.outside.join("secret.txt"), b"secret").unwrap();
    assert_eq!(s.upload(&[("inside/ok.txt", b"ok")]).await.status(), 200);

    for name in [
        "../escape.txt",
        "../outside/escape.txt",
        "a/../../escape.txt",
        "/../escape.txt",
        "inside/../../outside/escape.txt",
        "..",
    ] {
        let r = s.upload(&[(name, b"evil")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name}");
    }
    // A NUL in the name: refused one way or another, never stored.
    let (status, _) = s
        .raw_upload("name=\"a\0b.txt\"; filename=\"a\0b.txt\"", b"evil")
        .await;
    assert!((400..500).contains(&status), "NUL name: {status}");

    // An absolute name is relative to the root, as on the real server.
    let abs = s.outside.join("abs.txt").display().to_string();
    let r = s.upload(&[(&abs, b"abs")]).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!s.outside.join("abs.txt").exists());
    assert!(s.root.join(abs.trim_start_matches('/')).is_file());

    for path in [
        "/../outside/secret.txt",
        "/%2e%2e/outside/secret.txt",
        "/%2E%2E%2Foutside%2Fsecret.txt",
        "/inside/%2e%2e/%2e%2e/outside/secret.txt",
        "/inside/..%2f..%2foutside%2fsecret.txt",
        "/x%00y",
        "/%ff%fe",
    ] {
        assert_eq!(s.raw_get(path).await, 404, "GET {path}");
    }
    let (status, _) = s
        .raw(
            &format!(
                "DELETE /%2e%2e/outside/secret.txt HTTP/1.1\nHost: x\n\
                 Authorization: Bearer {TOKEN}\nConnection: close\n\n"
            ),
            b"",
        )
        .await;
    assert_eq!(status, 404);

    let r = s
        .client
        .post(format!("{}/delete_many", s.base))
        .headers(auth())
        .json(&serde_json::json!({"files": [
            "../outside/secret.txt", "%2E%2E/outside/secret.txt", "inside/../../outside"
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], serde_json::json!({}));
    assert_eq!(body["errors"]["Not found"].as_array().unwrap().len(), 3);

    assert_eq!(tree(&s.outside), vec!["secret.txt"]);
    assert_eq!(
        std::fs::read(s.outside.join("secret.txt")).unwrap(),
        b"secret"
    );
    // Nothing beside the root and the outside folder either.
    let parent = s.root.parent().unwrap();
    let mut beside: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    beside.sort();
    assert_eq!(beside, vec!["outside", "root"]);
}

#[cfg(unix)]
#[tokio::test]
async fn symlinks_out_of_the_root_are_refused() {
    let s = start().await;
    std::fs::create_dir_all(&s.root).unwrap();
    std::fs::write(s.outside.join("secret.txt"), b"secret").unwrap();
    std::os::unix::fs::symlink(&s.outside, s.root.join("link")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("secret.txt"), s.root.join("passwd")).unwrap();
    std::os::unix::fs::symlink(s.outside.join("nowhere"), s.root.join("dangling")).unwrap();

    for name in ["link/evil.txt", "link/sub/evil.txt", "dangling/evil.txt"] {
        let r = s.upload(&[(name, b"evil")]).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{name}");
    }
    assert_eq!(s.get("link/secret.txt").await.status(), 404);
    assert_eq!(s.get("passwd").await.status(), 404);
    let r = s
        .client
        .delete(format!("{}/link/secret.txt", s.base))
        .headers(auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = s
        .client
        .post(format!("{}/delete_many", s.base))
        .headers(auth())
        .json(&serde_json::json!({"files": ["link/secret.txt", "link", "passwd"]}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"]["Not found"].as_array().unwrap().len(), 3);

    assert_eq!(tree(&s.outside), vec!["secret.txt"]);
    assert!(!s.outside.join("nowhere").exists());
    assert_eq!(
        std::fs::read(s.outside.join("secret.txt")).unwrap(),
        b"secret"
    );

    // A link that stays inside the root is followed; deleting it removes the link only.
    assert_eq!(s.upload(&[("real/f.txt", b"real")]).await.status(), 200);
    std::os::unix::fs::symlink(s.root.join("real"), s.root.join("alias")).unwrap();
    assert_eq!(s.get("alias/f.txt").await.text().await.unwrap(), "real");
    let r = s
        .client
        .post(format!("{}/delete_many", s.base))
        .headers(auth())
        .json(&serde_json::json!({"files": ["alias"]}))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["deleted"], serde_json::json!({"alias": "alias"}));
    assert!(!s.root.join("alias").exists());
    assert!(s.root.join("real/f.txt").is_file());
}

#[tokio::test]
async fn delete_and_delete_many() {
    let s = start().await;
    let r = s
        .upload(&[
            ("p/t.1/artifacts/a/a.json", b"1"),
            ("p/t.1/artifacts/b/b.json", b"2"),
            ("p/t.1/models/m.bin", b"3"),
            ("p/t 2/x.txt", b"4"),
            ("q/y.txt", b"5"),
        ])
        .await;
    assert_eq!(r.status(), 200);

    let del = |path: &'static str| {
        s.client
            .delete(format!("{}/{path}", s.base))
            .headers(auth())
            .send()
    };
    let r = del("p/t.1/artifacts/a/a.json").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<String>().await.unwrap(),
        "p/t.1/artifacts/a/a.json"
    );
    assert!(!s.root.join("p/t.1/artifacts/a/a.json").exists());
    assert_eq!(del("p/t.1/artifacts/a/a.json").await.unwrap().status(), 404);
    // Single delete is for files only.
    assert_eq!(del("p/t.1/models").await.unwrap().status(), 404);
    assert!(s.root.join("p/t.1/models/m.bin").exists());

    let many = |body: serde_json::Value| {
        s.client
            .post(format!("{}/delete_many", s.base))
            .headers(auth())
            .json(&body)
            .send()
    };
    let r = many(serde_json::json!({"files": [
        "p/t.1/models",          // a folder goes whole
        "p/t+2/x.txt",           // unquote_plus: '+' is a space
        "%2Fq%2Fy.txt",          // percent-encoded, leading '/'
        "p/missing.txt",
        "/",
        "",
        7
    ]}))
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "deleted": {
                "p/t.1/models": "p/t.1/models",
                "p/t+2/x.txt": "p/t 2/x.txt",
                "%2Fq%2Fy.txt": "/q/y.txt"
            },
            "errors": {
                "Not found": ["p/missing.txt"],
                "Empty path not allowed": ["/", ""],
                "Invalid path": ["7"]
            }
        })
    );
    assert_eq!(tree(&s.root), vec!["p/t.1/artifacts/b/b.json"]);

    assert_eq!(many(serde_json::json!({})).await.unwrap().status(), 400);
    assert_eq!(
        many(serde_json::json!({"files": []}))
            .await
            .unwrap()
            .status(),
        400
    );
    let r = s
        .client
        .post(format!("{}/delete_many", s.base))
        .headers(auth())
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn bad_requests() {
    let s = start().await;
    // Not multipart at all, or without a boundary.
    let r = s
        .client
        .post(&s.base)
        .headers(auth())
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = s
        .client
        .post(&s.base)
        .headers(auth())
        .header(header::CONTENT_TYPE, "multipart/form-data")
        .body("plain")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // A body cut off in the middle of a part: 400, and no file or temporary file remains.
    let body = b"--XYZ\r\nContent-Disposition: form-data; name=\"cut.txt\"; filename=\"cut.txt\"\r\n\r\npartial data";
    let head = format!(
        "POST / HTTP/1.1\nHost: x\nAuthorization: Bearer {TOKEN}\n\
         Content-Type: multipart/form-data; boundary=XYZ\nContent-Length: {}\n\
         Connection: close\n\n",
        body.len()
    );
    let (status, _) = s.raw(&head, body).await;
    assert_eq!(status, 400);
    assert!(tree(&s.root).is_empty(), "{:?}", tree(&s.root));

    // Field names that name a folder rather than a file.
    for name in ["dir/", "/", "./"] {
        assert_eq!(s.upload(&[(name, b"x")]).await.status(), 400, "{name:?}");
    }

    // Something in the way: a folder where the file goes, a file where a folder goes.
    assert_eq!(s.upload(&[("d/f.txt", b"x")]).await.status(), 200);
    assert_eq!(s.upload(&[("d", b"x")]).await.status(), 409);
    assert_eq!(s.upload(&[("d/f.txt/g.txt", b"x")]).await.status(), 409);
    assert!(s.root.join("d/f.txt").is_file());

    // Plain form fields (no filename) are not files, as with Flask's request.files.
    let form = Form::new().text("note", "hello");
    let r = s
        .client
        .post(&s.base)
        .headers(auth())
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Vec<String>>().await.unwrap(), Vec::<String>::new());

    // Compressed bodies are refused, like the real server.
    let r = s
        .client
        .post(&s.base)
        .headers(auth())
        .header(header::CONTENT_ENCODING, "gzip")
        .multipart(super_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);

    // POST anywhere but the base or delete_many is not an upload.
    let r = s
        .client
        .post(format!("{}/some/dir", s.base))
        .headers(auth())
        .multipart(super_form())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(!s.root.join("some").exists());

    assert_eq!(tree(&s.root), vec!["d/f.txt"]);
}

fn super_form() -> Form {
    form(&[("z.txt", b"z")])
}

/// As the API server mounts it: `nest_service("/files", …)` on the API port.
#[tokio::test]
async fn works_under_a_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    let app = axum::Router::new()
        .route("/auth.login", axum::routing::post(|| async { "api" }))
        .nest_service("/files", router(root.clone(), check()));
    let addr = serve(app).await;
    let base = format!("http://{addr}/files");
    let client = Client::new();

    let r = client.get(&base).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "OK");

    let r = client
        .post(&base)
        .headers(auth())
        .multipart(form(&[("/p/t name.1/artifacts/a/a.txt", b"hello")]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(root.join("p/t name.1/artifacts/a/a.txt").is_file());

    let r = client
        .get(format!("{base}/p/t%20name.1/artifacts/a/a.txt"))
        .headers(auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "hello");

    let r = client
        .post(format!("{base}/delete_many"))
        .headers(auth())
        .json(&serde_json::json!({"files": ["p"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!root.join("p").exists());
}
