//! What the benchmark binaries share: starting `clearml-agent server` on system-picked ports,
//! running commands and git, and killing children on drop. Each binary in `src/bin` measures one
//! thing (`agent-bench` all of them side by side with clearml-agent 3.0.3); see
//! docs/benchmarks.md for the commands and the figures.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

/// A child process that is killed (and reaped) when this goes out of scope.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The repository root.
pub fn workspace() -> PathBuf {
    let w = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    w.canonicalize().unwrap_or(w)
}

/// Runs `cmd`; its stdout, or an error with both outputs when it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `git args` in `dir`, with a fixed identity and `main` as the first branch.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("git")
        .args(["-c", "user.name=bench", "-c", "user.email=bench@bench"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir))
}

/// Spawns the server command (ports 0: the system picks) and reads the API and files ports
/// from the address line it prints (`listening: API host:port, files host:port`); the rest of
/// its output is drained in a thread.
pub fn spawn_server(cmd: &mut Command) -> anyhow::Result<(Child, u16, u16)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the server")?;
    let stdout = child.stdout.take().context("server stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let port =
        |s: &str| -> Option<u16> { s.split(',').next()?.rsplit(':').next()?.trim().parse().ok() };
    for line in lines.by_ref() {
        let line = line?;
        if let Some(rest) = line.split("listening: API ").nth(1) {
            let files = rest.split("files ").nth(1).and_then(port);
            if let (Some(api), Some(files)) = (port(rest), files) {
                std::thread::spawn(move || for _ in lines {});
                return Ok((child, api, files));
            }
        }
    }
    let _ = child.kill();
    bail!("the server exited before printing its address")
}
