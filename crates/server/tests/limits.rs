//! What a hostile or careless client cannot do to the server: make it allocate for a body it
//! has no right to send, hold connections open for ever, read its database from another
//! account. The server runs in this test process, so `/proc/self/status` is its memory.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use clearml_server::{Credential, Server, ServerConfig};

async fn start(dir: &std::path::Path, tweak: impl FnOnce(&mut ServerConfig)) -> Server {
    let mut config = ServerConfig::new(dir.to_path_buf());
    config.port = 0;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: "KEY".into(),
        secret_key: "SECRET".into(),
    });
    tweak(&mut config);
    Server::start(config).await.expect("starts")
}

/// `VmHWM` (peak resident memory) of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kb * 1024
}

/// Starts the peak over from the current resident size (Linux 4.0+).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
}

/// Sends `size` bytes of `{"a":[0,0,...]}` (a JSON text that parses to ~30 times its size)
/// without holding it in memory, with or without a Content-Length; returns the HTTP status,
/// or 0 when the server closed the connection before its answer could be read.
fn send_big(addr: SocketAddr, path: &str, size: usize, declare_length: bool) -> u16 {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let head = if declare_length {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {size}\r\n\r\n"
        )
    } else {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Transfer-Encoding: chunked\r\n\r\n"
        )
    };
    if s.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = "0,".repeat(32 * 1024);
    let mut body_sent = 0;
    let mut ok = true;
    let send = |s: &mut TcpStream, data: &[u8]| -> bool {
        if declare_length {
            s.write_all(data).is_ok()
        } else {
            s.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                .is_ok()
                && s.write_all(data).is_ok()
                && s.write_all(b"\r\n").is_ok()
        }
    };
    ok &= send(&mut s, b"{\"a\":[");
    body_sent += 6;
    while ok && body_sent + chunk.len() + 3 < size {
        ok = send(&mut s, chunk.as_bytes());
        body_sent += chunk.len();
    }
    if ok {
        let rest = size - body_sent - 3;
        let pad = if rest % 2 == 1 { " " } else { "" };
        let tail = format!("{}{pad}0]}}", "0,".repeat(rest / 2));
        ok = send(&mut s, tail.as_bytes());
        if ok && !declare_length {
            ok = s.write_all(b"0\r\n\r\n").is_ok();
        }
    }
    let _ = ok;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unauthenticated_60_mb_body_costs_no_memory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), |_| {}).await;
    let api = server.api_addr();
    let files = server.files_addr();
    const SIZE: usize = 60 * 1000 * 1000;
    tokio::time::sleep(Duration::from_millis(200)).await;
    reset_peak_rss();
    let before = peak_rss();
    let cases: Vec<(SocketAddr, &str, bool, &[u16])> = vec![
        (api, "/tasks.get_all", true, &[401]),
        (api, "/v2.23/events.add_batch", false, &[401]),
        (api, "/debug.ping", true, &[413]),
        (api, "/debug.ping", false, &[413]),
        (api, "/auth.login", true, &[401]),
        (files, "/", true, &[401]),
        (files, "/delete_many", true, &[401, 413]),
    ];
    for (addr, path, declared, expected) in cases.clone() {
        let status = tokio::task::spawn_blocking(move || send_big(addr, path, SIZE, declared))
            .await
            .expect("client");
        assert!(
            status == 0 || expected.contains(&status),
            "{path} (declared length: {declared}): HTTP {status}"
        );
    }
    // Three at once, as an attacker would.
    let at_once: Vec<_> = (0..3)
        .map(|i| {
            tokio::task::spawn_blocking(move || send_big(api, "/tasks.get_all", SIZE, i % 2 == 0))
        })
        .collect();
    for h in at_once {
        let status = h.await.expect("client");
        assert!(status == 0 || status == 401, "HTTP {status}");
    }
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {} MB", grown / 1_000_000);
    assert!(
        grown < 100 * 1000 * 1000,
        "peak RSS grew by {grown} bytes for bodies without a token"
    );
    // The server still answers.
    let r = reqwest::get(format!("http://{api}/debug.ping"))
        .await
        .expect("ping");
    assert_eq!(r.status().as_u16(), 200);
}

/// Whether the server closed `s` (EOF or reset) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).ok();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_are_closed_and_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), |c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(2);
        c.max_connections = 8;
    })
    .await;
    let api = server.api_addr();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        // Four never finish their headers, four send nothing at all.
        let mut held: Vec<TcpStream> = (0..8)
            .map(|i| {
                let mut s = TcpStream::connect(api).expect("connect");
                if i % 2 == 0 {
                    s.write_all(b"GET /debug.ping HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                        .expect("partial headers");
                }
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(200));
        // The ninth is over the cap: closed at once, not left hanging.
        let mut ninth = TcpStream::connect(api).expect("connect");
        assert!(
            closed_within(&mut ninth, Duration::from_millis(900)),
            "a connection over the cap must be closed at once"
        );
        for (i, s) in held.iter_mut().enumerate() {
            assert!(
                closed_within(s, Duration::from_secs(6)),
                "connection {i} was left open"
            );
        }
        assert!(started.elapsed() < Duration::from_secs(8));
        // Slots are free again: a real request is answered.
        let mut s = TcpStream::connect(api).expect("connect");
        s.write_all(b"GET /debug.ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("request");
        let mut answer = String::new();
        s.read_to_string(&mut answer).ok();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    })
    .await
    .expect("client");
}

#[tokio::test]
async fn a_long_poll_outlives_the_idle_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(dir.path(), |c| {
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let base = format!("http://{}", server.api_addr());
    let http = reqwest::Client::new();
    let login: serde_json::Value = http
        .get(format!("{base}/auth.login"))
        .basic_auth("KEY", Some("SECRET"))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let token = login["data"]["token"].as_str().expect("token").to_string();
    let queues: serde_json::Value = http
        .post(format!("{base}/queues.get_default"))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .expect("default queue")
        .json()
        .await
        .expect("json");
    let queue = queues["data"]["id"].as_str().expect("queue id").to_string();
    let started = Instant::now();
    let r = http
        .post(format!("{base}/queues.get_next_task"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"queue": queue, "wait_ms": 2500}))
        .send()
        .await
        .expect("long poll answered");
    assert_eq!(r.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[tokio::test]
async fn the_data_folder_is_private() {
    let parent = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let data = parent.path().join("server");
    let server = start(&data, |_| {}).await;
    assert!(
        !server
            .warnings()
            .iter()
            .any(|w| w.contains("data folder") || w.contains("0600")),
        "{:?}",
        server.warnings()
    );
    assert_eq!(mode(&data), 0o700);
    let db = data.join("server.sqlite3");
    assert_eq!(mode(&db), 0o600);
    let wal = data.join("server.sqlite3-wal");
    assert!(wal.exists(), "WAL mode writes a -wal file");
    assert_eq!(mode(&wal), 0o600);
    drop(server);

    // A folder left open by an earlier version: the files are narrowed, the folder is reported.
    let old = parent.path().join("old");
    std::fs::create_dir(&old).expect("mkdir");
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let old_db = old.join("server.sqlite3");
    std::fs::write(&old_db, b"").expect("db");
    std::fs::set_permissions(&old_db, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let server = start(&old, |_| {}).await;
    assert_eq!(mode(&old_db), 0o600);
    let warnings = server.warnings().join("\n");
    assert!(warnings.contains("open to other users"), "{warnings}");
    assert!(warnings.contains("0600 now"), "{warnings}");
}
