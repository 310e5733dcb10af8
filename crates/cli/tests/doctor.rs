//! `clearml-agent doctor` against the real embedded server (in this process), a stopped server,
//! wrong credentials, a broken or missing configuration and a PATH without git or docker.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{bin, in_process_server};
use serde_json::Value;

const KEY: &str = "DOCTORKEY";
const SECRET: &str = "DOCTORSECRET";

fn conf_text(api: &str, files: &str, secret: &str, extra: &str) -> String {
    format!(
        "api {{\n api_server: {api}\n web_server: {api}\n files_server: {files}\n \
         credentials {{access_key: {KEY}, secret_key: {secret}}}\n}}\n{extra}\n"
    )
}

/// Runs `doctor --json` with `home` as HOME and `path` as PATH, the config file given when
/// there is one.
fn doctor(home: &Path, conf: Option<&Path>, path: &str, extra_args: &[&str]) -> (Output, Value) {
    let mut cmd = Command::new(bin());
    cmd.env_clear().env("HOME", home).env("PATH", path);
    if let Some(conf) = conf {
        cmd.arg("--config-file").arg(conf);
    }
    let out = cmd
        .args(["doctor", "--json", "--timeout", "5"])
        .args(extra_args)
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

fn status<'a>(report: &'a Value, name: &str) -> &'a str {
    check(report, name)["status"].as_str().unwrap()
}

fn path() -> String {
    std::env::var("PATH").unwrap()
}

/// A folder holding only a `python3` (no git, no docker) for PATH.
fn python_only_path(dir: &Path) -> String {
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    // The interpreter itself, not a pyenv shim (a shell script that needs more of PATH).
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 on PATH");
    let python = String::from_utf8(python.stdout).unwrap();
    std::os::unix::fs::symlink(python.trim(), bin_dir.join("python3")).unwrap();
    bin_dir.display().to_string()
}

#[test]
fn a_working_setup_passes_every_check() {
    let server = in_process_server(KEY, SECRET);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    std::fs::write(&conf, conf_text(&server.api, &server.files, SECRET, "")).unwrap();
    let (out, report) = doctor(home.path(), Some(&conf), &path(), &[]);
    assert!(out.status.success(), "{report:#}");
    assert_eq!(report["ok"], true);
    for name in ["config", "api", "files_server", "git", "python"] {
        assert_eq!(status(&report, name), "ok", "{report:#}");
    }
    // Every check is there, each with a level from the three.
    for name in ["uv", "docker", "disk", "gpu"] {
        assert!(
            ["ok", "warning", "error"].contains(&status(&report, name)),
            "{report:#}"
        );
    }
    let api = check(&report, "api")["message"].as_str().unwrap();
    assert!(
        api.contains(&server.api) && api.contains("accepted"),
        "{api}"
    );
    assert!(
        check(&report, "config")["message"]
            .as_str()
            .unwrap()
            .contains(conf.to_str().unwrap())
    );

    // The text form: one line per check, then the totals.
    let text = Command::new(bin())
        .env_clear()
        .env("HOME", home.path())
        .env("PATH", path())
        .arg("--config-file")
        .arg(&conf)
        .args(["doctor", "--timeout", "5"])
        .output()
        .unwrap();
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    let levels: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with(' '))
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(levels.len() >= 10, "{text}");
    for level in &levels[..levels.len() - 1] {
        assert!(["ok", "warning", "error"].contains(level), "{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("ok       api")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("warning(s)"), "{text}");
}

#[test]
fn rejected_credentials_are_an_error_with_what_to_do() {
    let server = in_process_server(KEY, SECRET);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    std::fs::write(&conf, conf_text(&server.api, &server.files, "WRONG", "")).unwrap();
    let (out, report) = doctor(home.path(), Some(&conf), &path(), &[]);
    assert_eq!(out.status.code(), Some(1), "{report:#}");
    assert_eq!(report["ok"], false);
    let api = check(&report, "api");
    assert_eq!(api["status"], "error", "{report:#}");
    assert!(
        api["message"]
            .as_str()
            .unwrap()
            .contains("rejected the credentials")
    );
    assert!(api["fix"].as_str().unwrap().contains("api.credentials"));
    // The files server is up all the same.
    assert_eq!(status(&report, "files_server"), "ok");
}

#[test]
fn a_stopped_server_is_an_error_and_doctor_does_not_hang() {
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    let (api, files) = (
        format!("http://127.0.0.1:{}", closed_port()),
        format!("http://127.0.0.1:{}", closed_port()),
    );
    std::fs::write(&conf, conf_text(&api, &files, SECRET, "")).unwrap();
    let started = Instant::now();
    let (out, report) = doctor(home.path(), Some(&conf), &path(), &[]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    let c = check(&report, "api");
    assert_eq!(c["status"], "error");
    assert!(
        c["message"].as_str().unwrap().contains("cannot reach"),
        "{c}"
    );
    assert!(
        c["fix"].as_str().unwrap().contains("clearml-agent server"),
        "{c}"
    );
    assert_eq!(status(&report, "files_server"), "error");
    assert_eq!(status(&report, "config"), "ok");
}

#[test]
fn no_configuration_says_run_init() {
    let home = tempfile::tempdir().unwrap();
    let (out, report) = doctor(home.path(), None, &path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let c = check(&report, "config");
    assert_eq!(c["status"], "warning", "{report:#}");
    assert!(c["fix"].as_str().unwrap().contains("clearml-agent init"));
    let api = check(&report, "api");
    assert_eq!(api["status"], "error");
    assert!(
        api["message"]
            .as_str()
            .unwrap()
            .contains("no API server configured")
    );
}

#[test]
fn a_wrong_value_is_a_config_error_naming_the_key() {
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    std::fs::write(
        &conf,
        conf_text(
            "http://127.0.0.1:1",
            "http://127.0.0.1:1",
            SECRET,
            "agent.package_manager.force_upgrade: maybe",
        ),
    )
    .unwrap();
    let (out, report) = doctor(home.path(), Some(&conf), &path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let c = check(&report, "config");
    assert_eq!(c["status"], "error");
    assert!(
        c["message"].as_str().unwrap().contains("force_upgrade"),
        "{c}"
    );
}

#[test]
fn missing_git_and_docker_are_named() {
    let server = in_process_server(KEY, SECRET);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    std::fs::write(&conf, conf_text(&server.api, &server.files, SECRET, "")).unwrap();
    let only_python = python_only_path(home.path());
    let (out, report) = doctor(home.path(), Some(&conf), &only_python, &["--docker"]);
    assert_eq!(out.status.code(), Some(1));
    let git = check(&report, "git");
    assert_eq!(git["status"], "error");
    assert!(git["fix"].as_str().unwrap().contains("install git"));
    let docker = check(&report, "docker");
    assert_eq!(docker["status"], "error", "{report:#}");
    assert!(docker["message"].as_str().unwrap().contains("not on PATH"));
    assert_eq!(status(&report, "python"), "ok", "{report:#}");
    assert_eq!(status(&report, "api"), "ok");

    // Without --docker, an absent docker is no error.
    let (_, report) = doctor(home.path(), Some(&conf), &only_python, &[]);
    assert_eq!(status(&report, "docker"), "ok");
}

#[test]
fn a_disk_policy_that_cannot_be_met_is_a_warning() {
    let server = in_process_server(KEY, SECRET);
    let home = tempfile::tempdir().unwrap();
    let conf = home.path().join("clearml.conf");
    // More free space than any disk here has.
    std::fs::write(
        &conf,
        conf_text(
            &server.api,
            &server.files,
            SECRET,
            "sdk.storage.cache.size.min_free_bytes: 1000000000000000000",
        ),
    )
    .unwrap();
    let (_, report) = doctor(home.path(), Some(&conf), &path(), &[]);
    let disk = check(&report, "disk");
    assert_eq!(disk["status"], "warning", "{report:#}");
    assert!(disk["message"].as_str().unwrap().contains("min_free_bytes"));
    assert!(disk["fix"].as_str().unwrap().contains("cache prune"));
}

/// A loopback port nothing listens on: bound, read, and released (a server that is down).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
