//! How progress and diagnostics look: the one [`clearml_progress::Reporter`] the library
//! crates talk to, drawn as a spinner per long step (clone, environment build, cache restore)
//! when stdout is a terminal and as plain lines otherwise (a log file, a pipe, the task's
//! console that the daemon ships), and the `tracing` subscriber that shows the libraries'
//! diagnostics on stderr.

use std::io::IsTerminal as _;
use std::sync::Mutex;
use std::time::Duration;

use clearml_progress::{Reporter, Step};
use indicatif::{ProgressBar, ProgressStyle};

/// Plain lines on stdout, one per `line`; steps are not drawn.
pub struct Lines;

impl Reporter for Lines {
    fn line(&self, text: &str) {
        println!("{text}");
    }
}

/// A spinner for the step under way, with the lines printed above it.
pub struct Spinner {
    bar: Mutex<Option<ProgressBar>>,
}

impl Reporter for Spinner {
    fn line(&self, text: &str) {
        match &*self.lock() {
            Some(bar) => bar.println(text),
            None => println!("{text}"),
        }
    }

    fn start(&self, step: Step, label: &str) {
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template("{spinner} {prefix}: {msg} ({elapsed})") {
            bar.set_style(style);
        }
        bar.set_prefix(step.as_str());
        bar.set_message(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        if let Some(old) = self.lock().replace(bar) {
            old.finish_and_clear();
        }
    }

    fn finish(&self, _step: Step) {
        if let Some(bar) = self.lock().take() {
            bar.finish_and_clear();
        }
    }
}

impl Spinner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<ProgressBar>> {
        self.bar.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The reporter for a person at this process's stdout: a spinner in a terminal, else lines.
pub fn for_stdout() -> std::sync::Arc<dyn Reporter> {
    if std::io::stdout().is_terminal() {
        std::sync::Arc::new(Spinner {
            bar: Mutex::new(None),
        })
    } else {
        std::sync::Arc::new(Lines)
    }
}

/// The levels `--log-level` accepts (Python logging's names, any case).
pub fn parse_level(s: &str) -> Result<tracing_subscriber::filter::LevelFilter, String> {
    use tracing_subscriber::filter::LevelFilter;
    match s.to_ascii_lowercase().as_str() {
        "trace" => Ok(LevelFilter::TRACE),
        "debug" => Ok(LevelFilter::DEBUG),
        "info" => Ok(LevelFilter::INFO),
        "warn" | "warning" => Ok(LevelFilter::WARN),
        "error" | "critical" | "fatal" => Ok(LevelFilter::ERROR),
        "off" => Ok(LevelFilter::OFF),
        other => Err(format!(
            "unknown log level {other:?} (expected debug, info, warning, error or critical)"
        )),
    }
}

/// The crates whose diagnostics `--debug` and `--log-level` raise; other crates (HTTP,
/// async runtime) stay at warnings.
const OUR_TARGETS: &[&str] = &[
    "clearml_agent",
    "clearml_api",
    "clearml_cachepolicy",
    "clearml_config",
    "clearml_daemon",
    "clearml_envcache",
    "clearml_hocon",
    "clearml_pyenv",
    "clearml_report",
    "clearml_server",
    "clearml_vcs",
];

/// Installs the subscriber: diagnostics go to stderr (the daemon's log file once detached,
/// since `detach` points stderr there). The level is `--log-level`, else `debug` with
/// `--debug`, else `RUST_LOG` when set, else warnings and errors.
pub fn init_tracing(level: Option<tracing_subscriber::filter::LevelFilter>, debug: bool) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;
    let ours = level.or(debug.then_some(LevelFilter::DEBUG));
    let filter = match ours {
        Some(l) => {
            let l = l.to_string().to_ascii_lowercase();
            let mut d = String::from("warn");
            for t in OUR_TARGETS {
                d.push_str(&format!(",{t}={l}"));
            }
            EnvFilter::new(d)
        }
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_in_any_case() {
        use tracing_subscriber::filter::LevelFilter;
        assert_eq!(parse_level("DEBUG"), Ok(LevelFilter::DEBUG));
        assert_eq!(parse_level("Warning"), Ok(LevelFilter::WARN));
        assert_eq!(parse_level("critical"), Ok(LevelFilter::ERROR));
        assert!(parse_level("loud").is_err());
    }
}
