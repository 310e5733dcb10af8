//! Typed views of the remaining `agent.*` keys the daemon reads: git (`Config::vcs`), the
//! venv cache (`Config::venvs_cache`) and the task monitor's timings (`Config::monitor`).
//! As with [`Config::agent`], a value of the wrong type is an error naming the key and where
//! it was written (`file:line:col`), never a silent default.

use std::path::PathBuf;

use clearml_hocon::{Kind, Value};

use crate::error::ConfigError;
use crate::load::Config;

/// One extra git credential (`agent.git.extra_credentials`).
#[derive(Clone, PartialEq, Eq)]
pub struct GitCredentialConfig {
    pub user: String,
    pub pass: String,
    /// The host it is for; `None` for every host.
    pub host: Option<String>,
}

impl std::fmt::Debug for GitCredentialConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitCredentialConfig")
            .field("user", &self.user)
            .field("pass", &"****")
            .field("host", &self.host)
            .finish()
    }
}

/// The git keys of `agent`, beyond `git_user`/`git_pass` (in [`crate::AgentSettings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcsConfig {
    /// `agent.git_host`: the host `git_user`/`git_pass` are for.
    pub git_host: Option<String>,
    /// `agent.git.extra_credentials`.
    pub extra_credentials: Vec<GitCredentialConfig>,
    /// `agent.git_fetch_args`.
    pub fetch_args: Vec<String>,
    /// `agent.git_host_match_prefix` (default false).
    pub git_host_match_prefix: bool,
    /// `CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME`, else `agent.translate_ssl_replacement_scheme`,
    /// else `https`.
    pub ssh_replacement_scheme: String,
    /// `agent.force_git_ssh_port` (1-65535; 0 or unset: none).
    pub force_git_ssh_port: Option<u16>,
    /// `agent.force_git_ssh_user`.
    pub force_git_ssh_user: Option<String>,
}

/// `agent.venvs_cache.*`, when the cache is on.
#[derive(Clone, Debug, PartialEq)]
pub struct VenvsCache {
    pub path: PathBuf,
    /// Entries kept at most (default 10); 0 stores nothing.
    pub max_entries: usize,
    /// Free bytes the cache's file system must keep (`free_space_threshold_gb`, default 2
    /// GiB); 0 (or a negative threshold) disables the check, as in clearml-agent.
    pub free_space_threshold: u64,
}

/// The task monitor's timings from the file (environment variables override them in the
/// daemon). `None` means unset.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MonitorConfig {
    /// `agent.abort_poll_interval_sec`.
    pub abort_poll_interval_sec: Option<f64>,
    /// `agent.task_ping_interval_sec`.
    pub task_ping_interval_sec: Option<f64>,
    /// `agent.abort_kill_grace_sec`.
    pub abort_kill_grace_sec: Option<f64>,
}

fn invalid(config: &Config, key: &str, message: String) -> ConfigError {
    let at = config
        .get(key)
        .map(|v| format!(", at {}", v.origin))
        .unwrap_or_default();
    ConfigError::Invalid {
        key: key.to_string(),
        message: format!("{message}{at}"),
    }
}

impl Config {
    fn nonempty(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.tree().get_str(key)?.filter(|s| !s.is_empty()))
    }

    /// A number of seconds: not negative.
    fn seconds(&self, key: &str) -> Result<Option<f64>, ConfigError> {
        match self.tree().get_f64(key)? {
            Some(s) if s < 0.0 => Err(invalid(
                self,
                key,
                format!("expected a number of seconds, found {s}"),
            )),
            other => Ok(other),
        }
    }

    /// The typed git settings of `agent`.
    pub fn vcs(&self) -> Result<VcsConfig, ConfigError> {
        let key = "agent.git.extra_credentials";
        let mut extra_credentials = Vec::new();
        if let Some(v) = self.get(key).filter(|v| !v.is_null()) {
            let Some(items) = v.as_list() else {
                return Err(invalid(
                    self,
                    key,
                    format!(
                        "expected a list of {{user, pass, host}}, found {}",
                        v.type_name()
                    ),
                ));
            };
            for (i, item) in items.iter().enumerate() {
                let field = |name: &str| -> Result<Option<String>, ConfigError> {
                    match item.as_object().and_then(|o| o.get(name)) {
                        None => Ok(None),
                        Some(Value {
                            kind: Kind::Null, ..
                        }) => Ok(None),
                        Some(f) => f
                            .scalar_text()
                            .map(Some)
                            .ok_or_else(|| ConfigError::Invalid {
                                key: format!("{key}[{i}].{name}"),
                                message: format!(
                                    "expected a string, found {}, at {}",
                                    f.type_name(),
                                    f.origin
                                ),
                            }),
                    }
                };
                if item.as_object().is_none() {
                    return Err(ConfigError::Invalid {
                        key: format!("{key}[{i}]"),
                        message: format!(
                            "expected an object {{user, pass, host}}, found {}, at {}",
                            item.type_name(),
                            item.origin
                        ),
                    });
                }
                // An entry without both user and pass is skipped, as in clearml-agent.
                if let (Some(user), Some(pass)) = (field("user")?, field("pass")?) {
                    extra_credentials.push(GitCredentialConfig {
                        user,
                        pass,
                        host: field("host")?.filter(|h| !h.is_empty()),
                    });
                }
            }
        }
        let port_key = "agent.force_git_ssh_port";
        let force_git_ssh_port = match self.tree().get_i64(port_key)? {
            None | Some(0) => None,
            Some(p) => Some(u16::try_from(p).map_err(|_| {
                invalid(
                    self,
                    port_key,
                    format!("expected a port (1-65535), found {p}"),
                )
            })?),
        };
        Ok(VcsConfig {
            git_host: self.nonempty("agent.git_host")?,
            extra_credentials,
            fetch_args: self
                .tree()
                .get_str_list("agent.git_fetch_args")?
                .unwrap_or_default(),
            git_host_match_prefix: self
                .tree()
                .get_bool("agent.git_host_match_prefix")?
                .unwrap_or(false),
            // The variable beats the file, as in clearml-agent 3.0.3: the built-in defaults
            // always set the key, so a variable read second would never take effect.
            ssh_replacement_scheme: match self
                .env()
                .get("CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME")
                .map(str::trim)
                .filter(|s| !s.is_empty())
            {
                Some(s) => s.to_string(),
                None => self
                    .nonempty("agent.translate_ssl_replacement_scheme")?
                    .unwrap_or_else(|| "https".to_string()),
            },
            force_git_ssh_port,
            force_git_ssh_user: self.nonempty("agent.force_git_ssh_user")?,
        })
    }

    /// The typed `agent.venvs_cache`; `None` when it is off (no path, or `enabled: false`).
    pub fn venvs_cache(&self) -> Result<Option<VenvsCache>, ConfigError> {
        let enabled = self
            .tree()
            .get_bool("agent.venvs_cache.enabled")?
            .unwrap_or(true);
        let max_key = "agent.venvs_cache.max_entries";
        let max_entries = match self.tree().get_i64(max_key)? {
            None => 10,
            Some(n) => usize::try_from(n).map_err(|_| {
                invalid(
                    self,
                    max_key,
                    format!("expected a number of entries (0 or more), found {n}"),
                )
            })?,
        };
        let gb = self
            .tree()
            .get_f64("agent.venvs_cache.free_space_threshold_gb")?
            .unwrap_or(2.0);
        let path = self.path("agent.venvs_cache.path")?;
        Ok(match path {
            Some(path) if enabled && !path.as_os_str().is_empty() => Some(VenvsCache {
                path,
                max_entries,
                free_space_threshold: if gb > 0.0 {
                    (gb * 1024.0 * 1024.0 * 1024.0) as u64
                } else {
                    0
                },
            }),
            _ => None,
        })
    }

    /// The typed task-monitor timings of `agent`.
    pub fn monitor(&self) -> Result<MonitorConfig, ConfigError> {
        Ok(MonitorConfig {
            abort_poll_interval_sec: self.seconds("agent.abort_poll_interval_sec")?,
            task_ping_interval_sec: self.seconds("agent.task_ping_interval_sec")?,
            abort_kill_grace_sec: self.seconds("agent.abort_kill_grace_sec")?,
        })
    }
}
