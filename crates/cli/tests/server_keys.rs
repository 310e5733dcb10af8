//! `clearml-agent server`: the secret key is printed only when it is generated, and
//! `server keys list|revoke` manage the keys of a data folder.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

fn bin() -> std::path::PathBuf {
    assert_cmd::cargo::cargo_bin("clearml-agent")
}

/// Starts the server on port 0, reads its banner up to the credentials, stops it.
fn banner(data: &Path) -> String {
    let mut child = Command::new(bin())
        .args(["server", "--port", "0", "--files-port", "0", "--data-dir"])
        .arg(data)
        .env_clear()
        .env("HOME", data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("server starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut text = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        text.push_str(&line);
        text.push('\n');
        if line.contains("secret_key") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    text
}

fn keys(data: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .args(["server", "keys"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_clear()
        .env("HOME", data)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn quoted_after(text: &str, key: &str) -> String {
    let line = text.lines().find(|l| l.contains(key)).expect(key);
    line.split('"').nth(3).expect("a quoted value").to_string()
}

#[test]
fn the_secret_is_shown_once_and_keys_can_be_revoked() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("server");
    let first = banner(&data);
    assert!(first.contains("Created credentials"), "{first}");
    let access = quoted_after(&first, "access_key");
    let secret = quoted_after(&first, "secret_key");
    assert_eq!(secret.len(), 50, "{first}");

    let second = banner(&data);
    assert_eq!(quoted_after(&second, "access_key"), access);
    assert!(
        !second.contains(&secret),
        "the secret is printed again on a later start:\n{second}"
    );

    let (ok, listed) = keys(&data, &["list"]);
    assert!(ok, "{listed}");
    assert_eq!(listed.trim(), access);
    assert!(!listed.contains(&secret));
    let (ok, out) = keys(&data, &["revoke", &access]);
    assert!(ok, "{out}");
    let (ok, listed) = keys(&data, &["list"]);
    assert!(ok && listed.trim().is_empty(), "{listed}");
    let (ok, out) = keys(&data, &["revoke", &access]);
    assert!(!ok, "revoking an unknown key must fail: {out}");
    assert!(out.contains("no access key"), "{out}");
}
