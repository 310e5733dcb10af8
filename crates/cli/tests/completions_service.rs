//! `clearml-agent completions bash|zsh|fish` and `daemon ... --print-systemd-unit`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::bin;

fn agent(args: &[&str], cwd: &Path) -> Output {
    Command::new(bin())
        .env_clear()
        .env("HOME", cwd)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("USER", "mluser")
        .current_dir(cwd)
        .args(args)
        .output()
        .unwrap()
}

fn stdout_ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn each_shell_gets_its_script() {
    let dir = tempfile::tempdir().unwrap();
    let bash = stdout_ok(&agent(&["completions", "bash"], dir.path()));
    assert!(bash.contains("complete -F _clearml__agent"), "{bash}");
    let zsh = stdout_ok(&agent(&["completions", "zsh"], dir.path()));
    assert!(zsh.starts_with("#compdef clearml-agent"), "{zsh}");
    let fish = stdout_ok(&agent(&["completions", "fish"], dir.path()));
    assert!(fish.contains("complete -c clearml-agent"), "{fish}");
    for script in [&bash, &zsh, &fish] {
        for word in ["daemon", "doctor", "print-systemd-unit", "config-file"] {
            assert!(script.contains(word), "{word} missing");
        }
    }
    let bad = agent(&["completions", "powershell-7"], dir.path());
    assert_eq!(bad.status.code(), Some(2));
}

/// Bash loads the script and completes with it: `clearml-agent da<TAB>` offers `daemon`,
/// `clearml-agent daemon --print<TAB>` the unit flag.
#[test]
fn bash_completes_with_the_script() {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("clearml-agent.bash");
    std::fs::write(
        &script,
        stdout_ok(&agent(&["completions", "bash"], dir.path())),
    )
    .unwrap();
    let complete = |line: &[&str]| -> String {
        let words = line
            .iter()
            .map(|w| format!("'{w}'"))
            .collect::<Vec<_>>()
            .join(" ");
        let program = format!(
            "source '{}'\nCOMP_WORDS=({words})\nCOMP_CWORD={}\nCOMP_LINE=\"${{COMP_WORDS[*]}}\"\nCOMP_POINT=${{#COMP_LINE}}\n\
             _clearml__agent clearml-agent \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\n\
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            line.len() - 1
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(program)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let first = complete(&["clearml-agent", "da"]);
    assert_eq!(first.split_whitespace().collect::<Vec<_>>(), ["daemon"]);
    let flag = complete(&["clearml-agent", "daemon", "--print"]);
    assert_eq!(
        flag.split_whitespace().collect::<Vec<_>>(),
        ["--print-systemd-unit"]
    );
}

#[test]
fn the_unit_runs_exactly_that_daemon_command() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("agent.conf"),
        "agent.abort_kill_grace_sec: 100\n",
    )
    .unwrap();
    let out = agent(
        &[
            "--config-file",
            "agent.conf",
            "daemon",
            "--queue",
            "gpu queue",
            "default",
            "--print-systemd-unit",
            "--gpus",
            "0,1",
        ],
        dir.path(),
    );
    let unit = stdout_ok(&out);
    let value = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let exe = std::fs::canonicalize(bin()).unwrap();
    assert_eq!(
        value("ExecStart"),
        [format!(
            "{} --config-file agent.conf daemon --queue \"gpu queue\" default --gpus 0,1",
            exe.display()
        )]
    );
    // Relative paths resolve as they did on the command line.
    let cwd = std::fs::canonicalize(dir.path()).unwrap();
    assert_eq!(value("WorkingDirectory"), [cwd.display().to_string()]);
    assert_eq!(value("Restart"), ["on-failure"]);
    assert_eq!(value("KillMode"), ["mixed"]);
    // agent.abort_kill_grace_sec (100) + 30 s for the final reports.
    assert_eq!(value("TimeoutStopSec"), ["130"]);
    // The account running the command, and its HOME.
    let me = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    assert_eq!(value("User"), [me.trim()]);
    assert_eq!(
        value("Environment")[0],
        format!("HOME={}", dir.path().display())
    );
    assert_eq!(value("WantedBy"), ["multi-user.target"]);

    // The default grace is 3 s.
    std::fs::write(dir.path().join("agent.conf"), "").unwrap();
    let unit = stdout_ok(&agent(
        &[
            "--config-file",
            "agent.conf",
            "daemon",
            "--print-systemd-unit",
        ],
        dir.path(),
    ));
    assert!(unit.lines().any(|l| l == "TimeoutStopSec=33"), "{unit}");

    // A detached daemon would leave systemd nothing to supervise.
    let detached = agent(
        &["daemon", "--detached", "--print-systemd-unit"],
        dir.path(),
    );
    assert_eq!(detached.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&detached.stderr).contains("cannot be used with"));
}
