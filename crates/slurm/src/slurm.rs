//! The Slurm commands the glue runs: `sbatch`, `squeue`, `scancel`. They read `SLURM_CONF`
//! and the rest of Slurm's environment from ours.

use std::path::Path;

use tokio::process::Command;

use crate::SlurmError;

/// One job as `squeue` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobInfo {
    pub id: String,
    /// `PENDING`, `RUNNING`, `COMPLETED`, `CANCELLED`, `FAILED`, `NODE_FAIL`, ...
    pub state: String,
    /// Why it waits or why it ended (`Resources`, `Priority`, `NonZeroExitCode`, `None`).
    pub reason: String,
    pub comment: String,
    pub nodes: String,
}

impl JobInfo {
    /// Still waiting for, or holding, resources.
    pub fn is_active(&self) -> bool {
        matches!(
            self.state.as_str(),
            "PENDING"
                | "CONFIGURING"
                | "RUNNING"
                | "COMPLETING"
                | "SUSPENDED"
                | "REQUEUED"
                | "REQUEUE_HOLD"
                | "REQUEUE_FED"
                | "RESIZING"
                | "SIGNALING"
                | "STAGE_OUT"
                | "STOPPED"
        )
    }

    pub fn is_pending(&self) -> bool {
        self.state == "PENDING"
    }
}

async fn output(cmd: &mut Command, what: &str) -> Result<String, SlurmError> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| SlurmError::Slurm(format!("cannot run {what}: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(SlurmError::Slurm(format!(
            "{what} failed ({}): {err}",
            out.status
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `sbatch --parsable --comment=C script`, run in `cwd`; returns the job id.
pub async fn sbatch(script: &Path, comment: &str, cwd: &Path) -> Result<String, SlurmError> {
    let text = output(
        Command::new("sbatch")
            .arg("--parsable")
            .arg(format!("--comment={comment}"))
            .arg(script)
            .current_dir(cwd),
        "sbatch",
    )
    .await?;
    // `id` or `id;cluster`.
    let id = text
        .trim()
        .split(';')
        .next()
        .unwrap_or_default()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
        return Err(SlurmError::Slurm(format!(
            "sbatch printed no job id: {}",
            text.trim()
        )));
    }
    Ok(id)
}

/// This user's jobs Slurm still remembers (pending, running and recently ended) whose comment
/// starts with `prefix`.
pub async fn squeue(prefix: &str) -> Result<Vec<JobInfo>, SlurmError> {
    let text = output(
        Command::new("squeue")
            .args(["--noheader", "--me", "--states=all"])
            .arg("--format=%i|%T|%r|%N|%k"),
        "squeue",
    )
    .await?;
    Ok(parse_squeue(&text, prefix))
}

fn parse_squeue(text: &str, prefix: &str) -> Vec<JobInfo> {
    text.lines()
        .filter_map(|l| {
            let mut parts = l.trim().splitn(5, '|');
            let id = parts.next()?.trim().to_string();
            let state = parts.next()?.trim().to_string();
            let reason = parts.next()?.trim().to_string();
            let nodes = parts.next()?.trim().to_string();
            let comment = parts.next()?.trim().to_string();
            comment.starts_with(prefix).then_some(JobInfo {
                id,
                state,
                reason,
                comment,
                nodes,
            })
        })
        .collect()
}

/// `scancel JOB`; a job that already ended is not an error.
pub async fn scancel(job: &str) -> Result<(), SlurmError> {
    match output(Command::new("scancel").arg(job), "scancel").await {
        Ok(_) => Ok(()),
        Err(SlurmError::Slurm(m))
            if m.contains("already completed") || m.contains("Invalid job id") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Whether Slurm's client commands are installed.
pub fn available() -> bool {
    std::process::Command::new("sbatch")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squeue_lines_are_read_and_filtered() {
        let text = "12|PENDING|Resources||clearml-agent:w:t1\n13|RUNNING|None|vm|other\n14|CANCELLED|None|vm|clearml-agent:w:a|b\n";
        let jobs = parse_squeue(text, "clearml-agent:w:");
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0].id, "12");
        assert!(jobs[0].is_pending() && jobs[0].is_active());
        assert_eq!(jobs[0].reason, "Resources");
        assert_eq!(jobs[1].comment, "clearml-agent:w:a|b");
        assert!(!jobs[1].is_active());
    }
}
