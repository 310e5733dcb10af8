//! Issue 12: every flag that clearml-agent 3.0.3 lists in `daemon --help`, `execute --help`
//! and `build --help` is accepted by this binary. The Python agent is the one installed in the
//! compat test venv (`.cache/compat-venv`); without it the test says so and checks nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod common;

use std::process::Command;

use common::{bin, workspace};

/// `(flag, example value)` for each option in a Python `--help` usage block.
fn python_flags(help: &str) -> Vec<(String, Option<String>)> {
    // The usage block lists each option as `[--flag]`, `[--flag VALUE]`, `[--flag [X ...]]`,
    // `[--flag {A,B}]` or `[--flag VALUE [VALUE ...]]`.
    let usage: String = help
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = Vec::new();
    let mut rest = usage.as_str();
    while let Some(i) = rest.find("[-") {
        rest = &rest[i + 1..];
        // The bracket's contents, nested brackets included.
        let mut depth = 1;
        let mut end = rest.len();
        for (j, c) in rest.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = j;
                        break;
                    }
                }
                _ => {}
            }
        }
        let inner = &rest[..end];
        rest = &rest[end..];
        let mut words = inner.split(' ');
        let flag = words.next().unwrap_or_default().to_string();
        if flag == "-h" {
            continue;
        }
        let value = words.next().map(|v| {
            if let Some(choices) = v.strip_prefix('{') {
                choices
                    .split([',', '}'])
                    .next()
                    .unwrap_or_default()
                    .to_string()
            } else if v.starts_with('[') {
                String::new() // optional value: give none
            } else if flag == "--entry-point" {
                "reuse_task".into()
            } else {
                "1".into()
            }
        });
        out.push((flag, value.filter(|v| !v.is_empty())));
    }
    out
}

#[test]
fn every_python_agent_flag_is_accepted() {
    let python = workspace().join(".cache/compat-venv/bin/clearml-agent");
    if !python.exists() {
        eprintln!(
            "SKIPPED: {} is absent (tests/compat/run.sh makes it)",
            python.display()
        );
        return;
    }
    for sub in ["daemon", "execute", "build"] {
        let out = Command::new(&python)
            .args([sub, "--help"])
            .env("COLUMNS", "80")
            .output()
            .expect("python agent");
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        let flags = python_flags(&help);
        assert!(flags.len() > 5, "too few flags found for {sub}:\n{help}");
        for (flag, value) in flags {
            // `--help` after the flag: parsed, then help printed instead of running.
            let mut cmd = Command::new(bin());
            cmd.arg(sub).arg(&flag);
            if let Some(v) = &value {
                cmd.arg(v);
            }
            let ours = cmd.arg("--help").output().expect("our agent");
            assert!(
                ours.status.success(),
                "`{sub} {flag} {}` is refused:\n{}",
                value.unwrap_or_default(),
                String::from_utf8_lossy(&ours.stderr)
            );
        }
    }
}

#[test]
fn short_help_is_shorter_than_long_help() {
    for sub in ["daemon", "execute", "build"] {
        let short = Command::new(bin()).args([sub, "-h"]).output().expect("-h");
        let long = Command::new(bin())
            .args([sub, "--help"])
            .output()
            .expect("--help");
        assert!(short.status.success() && long.status.success());
        assert!(
            short.stdout.len() < long.stdout.len(),
            "{sub}: -h is not shorter than --help"
        );
    }
    let long = Command::new(bin())
        .args(["daemon", "--help"])
        .output()
        .expect("--help");
    let text = String::from_utf8_lossy(&long.stdout);
    assert!(text.contains("changes nothing"), "{text}");
}
