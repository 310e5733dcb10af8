//! Where the time of one `execute` goes: a per-step timing line that `--debug` shows.
//!
//! The steps are wall-clock spans measured back to back, so they add up to the whole: the
//! process start (from the supervisor's spawn to `main`, read from a variable the supervisor
//! sets), the configuration (from `main` to the start of the work), the login, the task fetch,
//! the code (git fetch and checkout from the mirror), the environment restore or build, and
//! the rest up to the `exec` of the task. The interpreter probe runs beside the checkout, so it
//! is shown on its own, outside the total. The line goes through
//! `tracing` (debug level), which the binary writes to stderr: in the task process stderr is
//! the task's console, so the line reaches the supervisor's console and the server's log.

use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set by the supervisor on the `execute --disable-monitoring` child: the spawn time in
/// microseconds since the Unix epoch.
pub const SPAWNED_AT_VAR: &str = "CLEARML_AGENT_SPAWNED_AT_US";

static MAIN_ENTERED: OnceLock<(Instant, SystemTime)> = OnceLock::new();

/// Called first thing in `main`: the start of the "config" step.
pub fn main_entered() {
    let _ = MAIN_ENTERED.set((Instant::now(), SystemTime::now()));
}

/// The value for [`SPAWNED_AT_VAR`], now.
pub fn spawn_stamp() -> String {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0)
        .to_string()
}

/// Steps measured back to back.
#[derive(Debug)]
pub struct StepTimer {
    started: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
    /// Steps that overlapped others: shown, not added to the total.
    beside: Vec<(&'static str, Duration)>,
}

impl StepTimer {
    /// Starts at `main` when [`main_entered`] was called (recording the process start and the
    /// configuration as the first steps), else now.
    pub fn start(spawned_at_us: Option<&str>) -> StepTimer {
        let now = Instant::now();
        let mut t = StepTimer {
            started: now,
            last: now,
            steps: Vec::new(),
            beside: Vec::new(),
        };
        if let Some((main_at, main_wall)) = MAIN_ENTERED.get() {
            let spawned = spawned_at_us
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|us| UNIX_EPOCH + Duration::from_micros(us));
            if let Some(d) = spawned.and_then(|s| main_wall.duration_since(s).ok()) {
                t.steps.push(("process start", d));
                t.started = main_at.checked_sub(d).unwrap_or(*main_at);
            } else {
                t.started = *main_at;
            }
            t.steps
                .push(("config", now.saturating_duration_since(*main_at)));
        }
        t
    }

    /// Ends the current step under `name`.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps
            .push((name, now.saturating_duration_since(self.last)));
        self.last = now;
    }

    /// Records a step measured elsewhere, taken out of the span of the next [`mark`].
    ///
    /// [`mark`]: StepTimer::mark
    pub fn split(&mut self, name: &'static str, d: Duration) {
        self.steps.push((name, d));
        self.last += d;
    }

    /// Records a step that ran at the same time as others (shown in brackets, outside the
    /// total).
    pub fn beside(&mut self, name: &'static str, d: Duration) {
        self.beside.push((name, d));
    }

    /// `execute timing: process start 4.1ms, config 2.0ms, ..., total 120.3ms`.
    pub fn line(&self) -> String {
        let mut s = String::from("execute timing:");
        for (i, (name, d)) in self.steps.iter().enumerate() {
            let sep = if i == 0 { " " } else { ", " };
            s.push_str(&format!("{sep}{name} {:.1}ms", d.as_secs_f64() * 1000.0));
        }
        let total: Duration = self.steps.iter().map(|(_, d)| *d).sum();
        s.push_str(&format!(", total {:.1}ms", total.as_secs_f64() * 1000.0));
        for (name, d) in &self.beside {
            s.push_str(&format!(
                " ({name} {:.1}ms, at the same time)",
                d.as_secs_f64() * 1000.0
            ));
        }
        s
    }

    /// The steps so far.
    pub fn steps(&self) -> &[(&'static str, Duration)] {
        &self.steps
    }

    /// Since the start (the spawn when known).
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_add_up_and_read_in_order() {
        let mut t = StepTimer::start(None);
        std::thread::sleep(Duration::from_millis(5));
        t.mark("login");
        t.split("probe", Duration::from_millis(1));
        t.mark("env restore");
        let line = t.line();
        let login = line.find("login ").expect("login step");
        let probe = line.find("probe ").expect("probe step");
        assert!(login < probe, "{line}");
        assert!(line.contains(", total "), "{line}");
        let login_ms = t
            .steps()
            .iter()
            .find(|(n, _)| *n == "login")
            .map(|(_, d)| d.as_millis())
            .unwrap_or(0);
        assert!(login_ms >= 5, "{line}");
    }

    #[test]
    fn a_bad_spawn_stamp_is_ignored() {
        let t = StepTimer::start(Some("not a number"));
        assert!(t.steps().iter().all(|(n, _)| *n != "process start"));
    }
}
