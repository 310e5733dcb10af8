use std::path::PathBuf;

/// Why the configuration could not be loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error(transparent)]
    Parse(#[from] clearml_hocon::Error),
    #[error(transparent)]
    Type(#[from] clearml_hocon::GetError),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}
