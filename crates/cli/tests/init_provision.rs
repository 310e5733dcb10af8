//! `clearml-agent init` without a terminal: answers from flags and variables (provisioning
//! scripts), the credential check against our embedded server and its failures, and the
//! existing-file cases (printed snippet, `--append-agent-section`).

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use assert_cmd::Command;
use clearml_config::{Config, Env, LoadOptions};
use serde_json::Value as Json;

const KEY: &str = "PROVISIONKEY42";
const SECRET: &str = "Provision-secret-never-printed-Xy7";

mod common;
use common::TestServer;

fn server() -> TestServer {
    common::in_process_server(KEY, SECRET)
}

/// `init` with a clean environment, an empty home and no standard input.
fn init(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("clearml-agent").expect("binary");
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("init");
    cmd
}

struct Out {
    code: i32,
    text: String,
}

fn run(cmd: &mut Command) -> Out {
    let out = cmd.output().expect("runs");
    Out {
        code: out.status.code().unwrap_or(-1),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn hosts(cmd: &mut Command, s: &TestServer) {
    cmd.args(["--web-host", "http://127.0.0.1:1", "--api-host", &s.api])
        .args(["--files-host", &s.files]);
}

fn load(path: &Path, home: &Path) -> Config {
    Config::load(&LoadOptions {
        config_file: Some(path.to_path_buf()),
        env: Env::from_pairs([("HOME", home.display().to_string())]),
    })
    .expect("loads")
}

#[test]
fn flags_give_every_answer_and_the_keys_are_verified() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let mut cmd = init(home.path());
    hosts(&mut cmd, &s);
    cmd.args(["--access-key", KEY, "--secret-key", SECRET])
        .args(["--git-user", "bot", "--git-pass", "bot-token-123"])
        .args(["--extra-index-url", "https://a.example.org/simple"])
        .args(["--extra-index-url", "https://b.example.org/simple"]);
    let out = run(&mut cmd);
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("Credentials verified!"), "{}", out.text);
    assert!(out.text.contains("New configuration stored in"));
    assert!(!out.text.contains(SECRET) && !out.text.contains("bot-token-123"));
    let path = home.path().join("clearml.conf");
    let mode = std::fs::metadata(&path).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let config = load(&path, home.path());
    let api = config.api().expect("api");
    assert_eq!(api.api_server.as_deref(), Some(s.api.as_str()));
    assert_eq!(api.files_server.as_deref(), Some(s.files.as_str()));
    assert_eq!(api.secret_key.as_deref(), Some(SECRET));
    let agent = config.agent().expect("agent");
    assert_eq!(agent.git_user.as_deref(), Some("bot"));
    assert_eq!(agent.git_pass.as_deref(), Some("bot-token-123"));
    assert_eq!(
        agent.package_manager.extra_index_url,
        [
            "https://a.example.org/simple",
            "https://b.example.org/simple"
        ]
    );
}

#[test]
fn variables_give_the_answers_and_clearml_config_file_names_the_file() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let target = home.path().join("etc/clearml/agent.conf");
    let out = run(init(home.path())
        .arg("--non-interactive")
        .env("CLEARML_CONFIG_FILE", &target)
        .env("CLEARML_WEB_HOST", "http://127.0.0.1:1")
        .env("CLEARML_API_HOST", &s.api)
        .env("CLEARML_FILES_HOST", &s.files)
        .env("CLEARML_API_ACCESS_KEY", KEY)
        .env("CLEARML_API_SECRET_KEY", SECRET)
        .env("CLEARML_AGENT_GIT_USER", "envbot")
        .env("CLEARML_AGENT_GIT_PASS", "env-token")
        .env(
            "CLEARML_AGENT_EXTRA_INDEX_URL",
            "https://a.example.org/simple https://b.example.org/simple",
        ));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("(from CLEARML_API_HOST)"), "{}", out.text);
    assert!(!out.text.contains(SECRET) && !out.text.contains("env-token"));
    assert!(!home.path().join("clearml.conf").exists());
    let config = load(&target, home.path());
    assert_eq!(config.api().expect("api").access_key.as_deref(), Some(KEY));
    let agent = config.agent().expect("agent");
    assert_eq!(agent.git_user.as_deref(), Some("envbot"));
    assert_eq!(agent.package_manager.extra_index_url.len(), 2);
}

#[test]
fn a_wrong_secret_fails_clearly_and_writes_nothing() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let mut cmd = init(home.path());
    hosts(&mut cmd, &s);
    let out = run(cmd.args(["--access-key", KEY, "--secret-key", "Wrong-secret-Q1"]));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("could not verify credentials")
            && out.text.contains("refused the access key and secret")
            && out.text.contains("HTTP 401"),
        "{}",
        out.text
    );
    assert!(
        out.text
            .contains("Exiting setup without creating configuration file")
    );
    assert!(!out.text.contains("Wrong-secret-Q1"));
    assert!(!home.path().join("clearml.conf").exists());
}

#[test]
fn an_unreachable_server_and_a_tls_mismatch_are_told_apart() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let out = run(init(home.path())
        .args(["--web-host", "http://127.0.0.1:1", "--files-host", &s.files])
        .args(["--api-host", &format!("http://{dead}")])
        .args(["--access-key", KEY, "--secret-key", SECRET]));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(
        out.text.contains("cannot reach the API server") && out.text.contains("nothing listens"),
        "{}",
        out.text
    );
    // https to a plain http port.
    let https = s.api.replacen("http://", "https://", 1);
    let out = run(init(home.path())
        .args(["--web-host", "http://127.0.0.1:1", "--files-host", &s.files])
        .args(["--api-host", &https])
        .args(["--access-key", KEY, "--secret-key", SECRET]));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("TLS"), "{}", out.text);
    assert!(!out.text.contains(SECRET));
    assert!(!home.path().join("clearml.conf").exists());
}

#[test]
fn without_answers_it_says_what_is_missing() {
    let home = tempfile::tempdir().expect("home");
    let out = run(init(home.path()).arg("--non-interactive"));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("--access-key"), "{}", out.text);
    // Standard input that ends at once is no answer either.
    let out = run(&mut init(home.path()));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("--access-key"), "{}", out.text);
    let out = run(init(home.path())
        .arg("--non-interactive")
        .args(["--access-key", "K", "--secret-key", "S", "--no-verify"])
        .args(["--api-host", "http://127.0.0.1:30008"]));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("pass --web-host"), "{}", out.text);
    assert!(!home.path().join("clearml.conf").exists());
}

#[test]
fn other_hosts_are_guessed_and_plain_http_is_warned_about() {
    let home = tempfile::tempdir().expect("home");
    let out = run(init(home.path())
        .arg("--non-interactive")
        .args(["--access-key", "K", "--secret-key", "S", "--no-verify"])
        .args(["--api-host", "http://clearml.example.org:8008"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(
        out.text.contains("Warning:") && out.text.contains("use http, not https"),
        "{}",
        out.text
    );
    let config = load(&home.path().join("clearml.conf"), home.path());
    let api = config.api().expect("api");
    assert_eq!(
        api.web_server.as_deref(),
        Some("http://clearml.example.org:8080")
    );
    assert_eq!(
        api.files_server.as_deref(),
        Some("http://clearml.example.org:8081")
    );

    let home = tempfile::tempdir().expect("home");
    let out = run(init(home.path())
        .arg("--non-interactive")
        .args(["--access-key", "K", "--secret-key", "S", "--no-verify"])
        .args(["--web-host", "app.example.org"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(!out.text.contains("Warning:"), "{}", out.text);
    let api = load(&home.path().join("clearml.conf"), home.path())
        .api()
        .expect("api");
    assert_eq!(api.api_server.as_deref(), Some("https://api.example.org"));
    assert_eq!(
        api.files_server.as_deref(),
        Some("https://files.example.org")
    );
}

const EXISTING: &str = "# my own settings\r\napi {\n    api_server: http://localhost:8008\n    \
    credentials {\"access_key\": \"A\", \"secret_key\": \"B\"}\n}\n\
    agent.package_manager.type: pip   # we use pip here\n\
    agent { venvs_dir: /data/venvs, docker_force_pull: true }";

#[test]
fn an_existing_file_is_left_alone_and_the_settings_to_add_are_printed() {
    let home = tempfile::tempdir().expect("home");
    let path = home.path().join("clearml.conf");
    std::fs::write(&path, EXISTING).expect("write");
    let out = run(init(home.path())
        .args(["--access-key", KEY, "--secret-key", SECRET])
        .args(["--git-user", "bot", "--git-pass", "bot-token-123"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert_eq!(std::fs::read(&path).expect("read"), EXISTING.as_bytes());
    assert!(!home.path().join("clearml.conf.bak").exists());
    let t = &out.text;
    assert!(t.contains(&format!(
        "Configuration file already exists: {}",
        path.display()
    )));
    assert!(t.contains("--append-agent-section"));
    assert!(t.contains("agent.git_user: \"bot\""), "{t}");
    assert!(
        t.contains("agent.package_manager.extra_index_url: []"),
        "{t}"
    );
    assert!(t.contains("\nagent {\n"), "{t}");
    // What the file sets is not offered again; the password is not shown.
    assert!(!t.contains("venvs_dir ="), "{t}");
    assert!(!t.contains("type: uv"), "{t}");
    assert!(!t.contains("bot-token-123") && !t.contains(SECRET));

    // An existing ~/trains.conf counts the same way.
    let home = tempfile::tempdir().expect("home");
    let trains = home.path().join("trains.conf");
    std::fs::write(&trains, EXISTING).expect("write");
    let out = run(&mut init(home.path()));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains(&trains.display().to_string()));
    assert_eq!(std::fs::read(&trains).expect("read"), EXISTING.as_bytes());
    assert!(!home.path().join("clearml.conf").exists());
}

/// Every value the file set before has the same value after.
fn assert_kept(before: &Json, after: &Json, path: &str) {
    match (before, after) {
        (Json::Object(b), Json::Object(a)) => {
            for (k, v) in b {
                let child = a.get(k).unwrap_or_else(|| panic!("{path}.{k} is gone"));
                assert_kept(v, child, &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(before, after, "{path} changed"),
    }
}

#[test]
fn append_agent_section_adds_only_what_is_missing_once() {
    let home = tempfile::tempdir().expect("home");
    let path = home.path().join("clearml.conf");
    std::fs::write(&path, EXISTING).expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let before = clearml_hocon::parse_file(&path).expect("parses").to_json();
    let out = run(init(home.path())
        .args(["--append-agent-section", "--non-interactive"])
        .args(["--git-user", "bot", "--git-pass", "bot-token-123"])
        .args(["--extra-index-url", "https://pypi.example.org/simple"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(!out.text.contains("bot-token-123"));
    let bytes = std::fs::read(&path).expect("read");
    assert!(
        bytes.starts_with(EXISTING.as_bytes()),
        "the original bytes come first"
    );
    assert!(bytes.len() > EXISTING.len() + 1000);
    let backup = home.path().join("clearml.conf.bak");
    assert_eq!(std::fs::read(&backup).expect("backup"), EXISTING.as_bytes());
    let mode = std::fs::metadata(&backup)
        .expect("backup")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&path).expect("file").permissions().mode() & 0o777,
        0o600
    );

    // The user's values win; the added ones are there.
    let after = clearml_hocon::parse_file(&path).expect("parses").to_json();
    assert_kept(&before, &after, "");
    assert_eq!(after["agent"]["vcs_cache"]["enabled"], Json::Bool(true));
    let config = load(&path, home.path());
    let agent = config.agent().expect("agent");
    assert_eq!(agent.git_user.as_deref(), Some("bot"));
    assert_eq!(agent.git_pass.as_deref(), Some("bot-token-123"));
    assert_eq!(
        agent.package_manager.extra_index_url,
        ["https://pypi.example.org/simple"]
    );
    assert_eq!(
        config
            .get("agent.package_manager.type")
            .and_then(|v| v.scalar_text())
            .as_deref(),
        Some("pip")
    );
    assert_eq!(config.api().expect("api").secret_key.as_deref(), Some("B"));

    // A second run finds nothing missing and changes nothing.
    let out = run(init(home.path())
        .args(["--append-agent-section", "--non-interactive"])
        .args(["--git-user", "other"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("nothing to add"), "{}", out.text);
    assert_eq!(std::fs::read(&path).expect("read"), bytes);
    assert!(!home.path().join("clearml.conf.bak.1").exists());
}

#[test]
fn append_agent_section_without_a_file_runs_the_wizard() {
    let home = tempfile::tempdir().expect("home");
    let out = run(init(home.path())
        .args(["--append-agent-section", "--non-interactive", "--no-verify"])
        .args(["--access-key", "K", "--secret-key", "S"])
        .args(["--api-host", "https://api.example.org"]));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(out.text.contains("it is created now"), "{}", out.text);
    let api = load(&home.path().join("clearml.conf"), home.path())
        .api()
        .expect("api");
    assert_eq!(api.web_server.as_deref(), Some("https://app.example.org"));
}

#[test]
fn an_unreadable_existing_file_is_reported_and_kept() {
    let home = tempfile::tempdir().expect("home");
    let path = home.path().join("clearml.conf");
    std::fs::write(&path, "api { api_server: ").expect("write");
    let out = run(init(home.path()).args(["--append-agent-section", "--non-interactive"]));
    assert_eq!(out.code, 1, "{}", out.text);
    assert!(out.text.contains("nothing was changed"), "{}", out.text);
    assert_eq!(std::fs::read(&path).expect("read"), b"api { api_server: ");
    assert!(!home.path().join("clearml.conf.bak").exists());
}

#[test]
fn answers_can_be_piped_in_line_by_line() {
    let s = server();
    let home = tempfile::tempdir().expect("home");
    let paste = format!(
        "api {{\r\n  web_server: http://127.0.0.1:1\r\n  api_server: {}\r\n  files_server: {}\r\n  \
         credentials {{\r\n    \"access_key\" = \"{KEY}\"\r\n    \"secret_key\" = \"{SECRET}\"\r\n  }}\r\n}}\r\n",
        s.api, s.files
    );
    // The block, Enter on the three addresses, a git user and password, one index.
    let answers = format!("{paste}\n\n\nbot\r\nbot-token-123\nhttps://pypi.example.org/simple\n\n");
    let out = run(init(home.path()).write_stdin(answers));
    assert_eq!(out.code, 0, "{}", out.text);
    assert!(!out.text.contains(SECRET) && !out.text.contains("bot-token-123"));
    let config = load(&home.path().join("clearml.conf"), home.path());
    assert_eq!(
        config.api().expect("api").files_server.as_deref(),
        Some(s.files.as_str())
    );
    let agent = config.agent().expect("agent");
    assert_eq!(agent.git_user.as_deref(), Some("bot"));
    assert_eq!(agent.git_pass.as_deref(), Some("bot-token-123"));
    assert_eq!(agent.package_manager.extra_index_url.len(), 1);
}
