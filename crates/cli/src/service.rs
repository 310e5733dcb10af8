//! `clearml-agent daemon ... --print-systemd-unit`: a systemd service unit that runs exactly
//! that daemon command (this binary's absolute path, the same arguments, from the same folder),
//! so a worker survives reboots and crashes.
//!
//! How the unit stops the daemon: `KillMode=mixed` sends SIGTERM to the daemon alone; the daemon
//! then aborts its running task itself (SIGTERM to the task's tree, SIGKILL after
//! `agent.abort_kill_grace_sec`), marks it, ships the rest of its console and unregisters the
//! worker. Only when that has not finished within `TimeoutStopSec` does systemd SIGKILL
//! everything left in the service's cgroup, so the stop timeout is the abort grace plus
//! [`SHUTDOWN_MARGIN`] for the final reports. `Restart=on-failure` restarts a daemon that
//! crashed or was killed, not one that was stopped.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clearml_config::{Config, LoadOptions};

/// The flag this module answers; it is left out of the unit's command.
pub const FLAG: &str = "--print-systemd-unit";

/// Time for the daemon's own shutdown after its task is gone: the task's final status, the
/// console's last lines and `workers.unregister`.
pub const SHUTDOWN_MARGIN: Duration = Duration::from_secs(30);

/// What a unit is made of.
#[derive(Debug)]
pub struct UnitSpec<'a> {
    /// The agent binary, absolute.
    pub exe: &'a Path,
    /// The arguments after the binary, as given (without [`FLAG`]).
    pub args: &'a [String],
    /// The folder the command was given in (relative paths in `args` resolve from it).
    pub working_dir: &'a Path,
    /// The user to run as (the one who printed the unit).
    pub user: Option<&'a str>,
    /// `HOME`, where `~/clearml.conf` and `~/.clearml` are (systemd sets none for root).
    pub home: Option<&'a str>,
    /// `PATH`, so the service finds the same git, Python and uv as the shell did.
    pub path_env: Option<&'a str>,
    /// `agent.abort_kill_grace_sec`.
    pub kill_grace: Duration,
}

/// Prints the unit for the daemon command this process was started with.
pub fn print(opts: &LoadOptions) -> anyhow::Result<ExitCode> {
    let config = Config::load(opts)?;
    let kill_grace = clearml_daemon::DaemonSettings::from_config(&config, None)?
        .monitor
        .kill_grace;
    let argv = crate::args::expand_arg_files(std::env::args_os().collect())?;
    let args = command_args(argv)?;
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let working_dir = std::env::current_dir().context("cannot read the current directory")?;
    let account = nix::unistd::User::from_uid(nix::unistd::Uid::current())
        .ok()
        .flatten();
    let user = account
        .as_ref()
        .map(|u| u.name.clone())
        .or_else(|| opts.env.get("USER").map(str::to_string));
    let home = opts
        .env
        .get("HOME")
        .map(str::to_string)
        .or_else(|| account.map(|u| u.dir.display().to_string()));
    let path_env = opts.env.get("PATH").map(str::to_string);
    let text = unit_text(&UnitSpec {
        exe: &exe,
        args: &args,
        working_dir: &working_dir,
        user: user.as_deref(),
        home: home.as_deref(),
        path_env: path_env.as_deref(),
        kill_grace,
    })?;
    crate::term::write_stdout(text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The arguments after the program name, without [`FLAG`]; they must be UTF-8 to go into a unit.
fn command_args(argv: Vec<OsString>) -> anyhow::Result<Vec<String>> {
    argv.into_iter()
        .skip(1)
        .filter(|a| a != FLAG)
        .map(|a| {
            a.into_string().map_err(|a| {
                anyhow::anyhow!("argument {a:?} is not UTF-8 and cannot be written into a unit")
            })
        })
        .collect()
}

/// The unit file's text.
pub fn unit_text(spec: &UnitSpec<'_>) -> anyhow::Result<String> {
    if !spec.exe.is_absolute() || !spec.working_dir.is_absolute() {
        bail!("the unit needs absolute paths");
    }
    let exe = utf8(spec.exe)?;
    let mut exec = quote(exe);
    for a in spec.args {
        exec.push(' ');
        exec.push_str(&quote(a));
    }
    let stop = spec.kill_grace + SHUTDOWN_MARGIN;
    let stop_secs = stop.as_secs() + u64::from(stop.subsec_nanos() > 0);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# systemd unit for this clearml-agent daemon; printed by `clearml-agent ... {FLAG}`.\n\
         # Install: save as /etc/systemd/system/clearml-agent.service, then\n\
         #   sudo systemctl daemon-reload && sudo systemctl enable --now clearml-agent\n\
         # Logs: journalctl -u clearml-agent -f\n\
         [Unit]\n\
         Description=ClearML agent: {}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple",
        escape_specifiers(&spec.args.join(" ").replace(['\n', '\r'], " "))
    );
    if let Some(user) = spec.user.filter(|u| !u.is_empty()) {
        let _ = writeln!(t, "User={}", escape_specifiers(user));
    }
    let _ = writeln!(t, "WorkingDirectory={}", quote(utf8(spec.working_dir)?));
    if let Some(home) = spec.home.filter(|h| !h.is_empty()) {
        let _ = writeln!(t, "Environment={}", quote(&format!("HOME={home}")));
    }
    if let Some(path) = spec.path_env.filter(|p| !p.is_empty()) {
        let _ = writeln!(t, "Environment={}", quote(&format!("PATH={path}")));
    }
    let _ = writeln!(
        t,
        "ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         # SIGTERM to the daemon only: it aborts its task (SIGKILL after the {grace} s abort\n\
         # grace), reports, and unregisters; whatever is left after TimeoutStopSec is killed.\n\
         KillMode=mixed\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec={stop_secs}\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target",
        grace = spec.kill_grace.as_secs_f64()
    );
    Ok(t)
}

fn utf8(p: &Path) -> anyhow::Result<&str> {
    p.to_str().with_context(|| {
        format!(
            "{} is not UTF-8 and cannot be written into a unit",
            p.display()
        )
    })
}

/// `%` starts a specifier in every unit setting; `%%` is a literal `%`.
fn escape_specifiers(s: &str) -> String {
    s.replace('%', "%%")
}

/// One word of a unit's command line or setting: as is when it is plain, else in double quotes
/// with C escapes; `%` and `$` (specifiers and variable expansion) are doubled.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./:=,@+".contains(c));
    if plain {
        return word.to_string();
    }
    let mut out = String::from("\"");
    for c in word.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(args: &'a [String], grace: f64) -> UnitSpec<'a> {
        UnitSpec {
            exe: Path::new("/opt/venv/bin/clearml-agent"),
            args,
            working_dir: Path::new("/home/ml"),
            user: Some("ml"),
            home: Some("/home/ml"),
            path_env: Some("/opt/venv/bin:/usr/bin"),
            kill_grace: Duration::from_secs_f64(grace),
        }
    }

    fn line<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
        text.lines()
            .filter_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .collect()
    }

    #[test]
    fn the_unit_runs_that_daemon_command_and_stops_it_gently() {
        let args: Vec<String> = [
            "--config-file",
            "/home/ml/clearml.conf",
            "daemon",
            "--queue",
            "gpu",
            "default",
        ]
        .map(String::from)
        .to_vec();
        let text = unit_text(&spec(&args, 3.0)).unwrap();
        assert_eq!(
            line(&text, "ExecStart"),
            [
                "/opt/venv/bin/clearml-agent --config-file /home/ml/clearml.conf daemon --queue gpu default"
            ]
        );
        assert_eq!(line(&text, "Restart"), ["on-failure"]);
        assert_eq!(line(&text, "KillMode"), ["mixed"]);
        assert_eq!(line(&text, "KillSignal"), ["SIGTERM"]);
        assert_eq!(line(&text, "TimeoutStopSec"), ["33"]);
        assert_eq!(line(&text, "User"), ["ml"]);
        assert_eq!(line(&text, "WorkingDirectory"), ["/home/ml"]);
        assert_eq!(
            line(&text, "Environment"),
            ["HOME=/home/ml", "PATH=/opt/venv/bin:/usr/bin"]
        );
        assert_eq!(line(&text, "WantedBy"), ["multi-user.target"]);
        for section in ["[Unit]", "[Service]", "[Install]"] {
            assert_eq!(
                text.lines().filter(|l| *l == section).count(),
                1,
                "{section}"
            );
        }
    }

    #[test]
    fn the_stop_timeout_covers_a_long_abort_grace() {
        let args = vec!["daemon".to_string()];
        let text = unit_text(&spec(&args, 120.5)).unwrap();
        // 120.5 s grace + 30 s for the final reports, rounded up.
        assert_eq!(line(&text, "TimeoutStopSec"), ["151"]);
    }

    #[test]
    fn odd_arguments_are_quoted_for_systemd() {
        let args: Vec<String> = ["daemon", "--queue", "my queue", "100%", "$HOME", "a\"b\\c"]
            .map(String::from)
            .to_vec();
        let text = unit_text(&spec(&args, 3.0)).unwrap();
        assert_eq!(
            line(&text, "ExecStart"),
            [r#"/opt/venv/bin/clearml-agent daemon --queue "my queue" "100%%" "$$HOME" "a\"b\\c""#]
        );
        assert!(text.contains("Description=ClearML agent: daemon --queue my queue 100%% $HOME"));
    }

    #[test]
    fn the_flag_itself_is_left_out() {
        let argv = [
            "clearml-agent",
            "daemon",
            "--print-systemd-unit",
            "--queue",
            "q",
        ]
        .map(OsString::from)
        .to_vec();
        assert_eq!(command_args(argv).unwrap(), ["daemon", "--queue", "q"]);
    }
}
