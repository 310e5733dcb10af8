//! The managed folders and the policy, from the agent's config.

use std::path::PathBuf;

use clearml_config::{Config, ConfigError};

use crate::Policy;

/// The folders the agent manages: `sdk.storage.cache.default_base_dir`,
/// `agent.vcs_cache.path`, `agent.pip_download_cache.path`, `~/.clearml/uv-cache` and
/// `agent.venvs_cache.path` when set. Not `agent.venvs_dir`: it holds the running task's
/// environment, which takes no lock a cache scan could see.
pub fn dirs_from_config(config: &Config) -> Result<Vec<PathBuf>, ConfigError> {
    let agent = config.agent()?;
    let home = config
        .env()
        .get("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("~"));
    let mut dirs = vec![
        config.storage_cache()?.default_base_dir,
        agent.vcs_cache.path,
        agent.pip_download_cache.path,
        home.join(".clearml").join("uv-cache"),
    ];
    if let Some(p) = config.path("agent.venvs_cache.path")? {
        dirs.push(p);
    }
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        if !d.as_os_str().is_empty() && !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// The policy and the managed folders.
pub fn from_config(config: &Config) -> Result<(Policy, Vec<PathBuf>), ConfigError> {
    Ok((
        Policy::from_storage_cache(&config.storage_cache()?),
        dirs_from_config(config)?,
    ))
}
