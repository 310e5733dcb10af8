use std::io;
use std::path::{Path, PathBuf};

/// Why a Python environment could not be built. Command texts are masked (see
/// [`mask_secrets`](crate::mask_secrets)).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvError {
    /// No interpreter on `PATH` (or the configured one) runs.
    #[error("no usable Python interpreter found{requested}; tried: {tried}")]
    PythonNotFound { requested: String, tried: String },

    /// A child process ran and failed.
    #[error("{what} failed: `{command}` exited with {status}{}", format_tail(.tail))]
    CommandFailed {
        what: String,
        command: String,
        /// `None` when it was killed by a signal.
        code: Option<i32>,
        /// e.g. "exit status: 1" or "signal: 9 (SIGKILL)".
        status: String,
        /// The last lines of its output (stdout and stderr merged).
        tail: Vec<String>,
    },

    /// A child process could not be started.
    #[error("{what}: could not run `{command}`: {source}")]
    Spawn {
        what: String,
        command: String,
        #[source]
        source: io::Error,
    },

    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The requirements cannot be installed as given (e.g. `-r file` with no base folder).
    #[error("requirements: {0}")]
    Requirements(String),

    /// The virtual environment is not usable after creating it.
    #[error("virtual environment: {0}")]
    Venv(String),

    /// uv could not be found or installed.
    #[error("uv: {0}")]
    Uv(String),

    /// poetry could not be found or installed.
    #[error("poetry: {0}")]
    Poetry(String),
}

impl EnvError {
    pub(crate) fn io(action: &str, path: &Path, source: io::Error) -> Self {
        EnvError::Io {
            action: action.to_string(),
            path: path.to_path_buf(),
            source,
        }
    }
}

fn format_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n{}", tail.join("\n"))
    }
}
