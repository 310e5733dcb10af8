//! Helpers shared by the end-to-end tests that run the agent binary: ports, the workspace's
//! shared uv (bootstrapped once into the ignored .cache folder), commands that must succeed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clearml_server::{Credential, Server, ServerConfig};

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("clearml-agent")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        if let Ok(p) = std::env::var("CLEARML_TEST_UV") {
            return PathBuf::from(p);
        }
        let tools = workspace().join(".cache/test-tools");
        clearml_pyenv::find_uv(&tools, Path::new("python3"), &clearml_pyenv::NullReporter)
            .expect("uv")
    })
    .clone()
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    run(Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir))
}

/// The embedded server in this process on free loopback ports, with the given keys, running
/// while this lives.
pub struct TestServer {
    _rt: tokio::runtime::Runtime,
    _server: Server,
    _dir: tempfile::TempDir,
    pub api: String,
    pub files: String,
}

pub fn in_process_server(key: &str, secret: &str) -> TestServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = ServerConfig::new(dir.path().join("data"));
    config.port = 0;
    config.files_port = 0;
    config.credential = Some(Credential {
        access_key: key.into(),
        secret_key: secret.into(),
    });
    let server = rt.block_on(Server::start(config)).expect("server starts");
    TestServer {
        api: format!("http://{}", server.api_addr()),
        files: format!("http://{}", server.files_addr()),
        _rt: rt,
        _server: server,
        _dir: dir,
    }
}
