use std::path::PathBuf;

/// Why a docker-mode step failed. Messages carry docker's own words where it gave any.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("the task's container field is malformed: {0}")]
    BadContainer(String),
    #[error("cannot split docker arguments {text:?}: {message}")]
    BadArguments { text: String, message: String },
    #[error("docker argument filter {0:?} is not a valid regular expression")]
    BadFilter(String),
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} is not usable: {message}")]
    Unavailable { program: String, message: String },
    #[error("image {image} is not available locally and could not be pulled: {message}")]
    MissingImage { image: String, message: String },
    #[error("`{command}` failed (exit status {status}): {message}")]
    Command {
        command: String,
        status: String,
        message: String,
    },
    #[error("a container to run needs a name (RunSpec::name)")]
    Unnamed,
    #[error("cannot prepare {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
