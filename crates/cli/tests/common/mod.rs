//! Helpers shared by the end-to-end tests that run the agent binary: ports, the workspace's
//! shared uv (bootstrapped once into the ignored .cache folder), commands that must succeed.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub mod task_server;

use clearml_server::{Credential, Server, ServerConfig};

pub fn bin() -> PathBuf {
    assert_cmd::cargo::cargo_bin("clearml-agent")
}

/// Spawns `cmd` (a `clearml-agent server ... --port P --files-port F` command; pass 0 for
/// ports the system picks) and returns it with the API and files ports it bound, read from the
/// address line it prints. Its remaining output is drained in a thread so it never blocks.
pub fn spawn_server(cmd: &mut Command) -> (Child, u16, u16) {
    let mut child = cmd.stdout(Stdio::piped()).spawn().expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ports = loop {
        assert!(Instant::now() < deadline, "server printed no address");
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            panic!("server exited before printing its address");
        };
        // `ClearML-compatible server listening: API http://H:P, files http://H:F, data in ...`
        if let Some(rest) = line.split("listening: API ").nth(1) {
            let port = |s: &str| -> u16 {
                s.split(',')
                    .next()
                    .and_then(|a| a.rsplit(':').next())
                    .and_then(|p| p.trim().parse().ok())
                    .expect("port")
            };
            let files = rest.split("files ").nth(1).expect("files address");
            break (port(rest), port(files));
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, ports.0, ports.1)
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
