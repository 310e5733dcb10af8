//! The knobs of the worker loop, read once from the configuration and the environment.

use std::path::PathBuf;
use std::time::Duration;

use clearml_config::{Config, ConfigError};

use crate::monitor::MonitorSettings;

/// Loop and runner settings.
#[derive(Clone, Debug)]
pub struct DaemonSettings {
    /// Sleep between passes when the server cannot long-poll: `max(--polling-interval, 5)`
    /// seconds, or `CLEARML_AGENT_QUEUE_POLL_FREQ_SEC` with no minimum.
    pub poll_interval: Duration,
    /// `workers.status_report` period (`CLEARML_AGENT_STATUS_REPORT_FREQ_SEC`, 30 s).
    pub status_report: Duration,
    pub monitor: MonitorSettings,
    /// The program the daemon starts for each task (this binary).
    pub agent_exe: PathBuf,
}

impl DaemonSettings {
    /// A wrongly typed `agent.*` timing is an error (with where it was written).
    pub fn from_config(
        config: &Config,
        polling_interval: Option<f64>,
    ) -> Result<DaemonSettings, ConfigError> {
        let env = config.env();
        let timings = config.monitor()?;
        let secs = |v: Option<f64>, default: f64| {
            Duration::from_secs_f64(v.filter(|s| s.is_finite() && *s >= 0.0).unwrap_or(default))
        };
        let env_f64 = |name: &str| env.get(name).and_then(|s| s.trim().parse::<f64>().ok());
        let poll_interval = match env_f64("CLEARML_AGENT_QUEUE_POLL_FREQ_SEC") {
            Some(s) => secs(Some(s), 5.0),
            None => secs(Some(polling_interval.unwrap_or(5.0).max(5.0)), 5.0),
        };
        let home = env.get("HOME").unwrap_or("/tmp");
        Ok(DaemonSettings {
            poll_interval,
            status_report: secs(env_f64("CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"), 30.0),
            monitor: MonitorSettings {
                abort_poll: secs(
                    env_f64("CLEARML_AGENT_ABORT_POLL_SEC").or(timings.abort_poll_interval_sec),
                    0.5,
                ),
                ping_interval: secs(timings.task_ping_interval_sec, 60.0),
                kill_grace: secs(
                    env_f64("CLEARML_AGENT_KILL_GRACE_SEC").or(timings.abort_kill_grace_sec),
                    3.0,
                ),
                spool_dir: PathBuf::from(home).join(".clearml").join("log-spool"),
                echo: false,
                log_file: None,
                final_delivery: Duration::from_secs(600),
                status_push: env.get("CLEARML_AGENT_NO_LONG_POLL") != Some("1"),
            },
            agent_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("clearml-agent")),
        })
    }
}
