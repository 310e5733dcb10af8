//! Typed `agent.*` docker-mode keys (and the environment variables the Python agent reads for
//! them), gathered in one struct so the docker crate needs nothing else from the configuration.

use std::path::PathBuf;

use clearml_hocon::{Kind, Value};

use crate::error::ConfigError;
use crate::load::Config;

/// `agent.hide_docker_command_env_vars.*`: hiding secrets in printed docker command lines.
#[derive(Clone, Debug, PartialEq)]
pub struct HideDockerEnv {
    pub enabled: bool,
    /// Extra variable names whose values are hidden, from `extra_keys` and
    /// `CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV` (space-separated).
    pub extra_keys: Vec<String>,
    /// Hide passwords in `scheme://user:password@host` URLs anywhere in the command.
    pub parse_embedded_urls: bool,
}

/// Everything docker mode reads from the configuration and the environment.
#[derive(Clone, Debug, PartialEq)]
pub struct DockerSettings {
    /// `agent.default_docker.image`.
    pub default_image: String,
    /// `agent.default_docker.arguments` (a list, or one string split like a shell line).
    pub default_arguments: Vec<String>,
    /// `agent.default_docker.update_back_task` (default true): write the agent's image back to
    /// a task that named none.
    pub update_back_task: bool,
    /// `CLEARML_DOCKER_IMAGE` (or `TRAINS_DOCKER_IMAGE`), possibly `image arg arg`.
    pub env_image: Option<String>,
    /// `agent.disable_task_docker_override`: ignore the task's image and arguments.
    pub disable_task_docker_override: bool,
    /// `agent.extra_docker_arguments`, or `CLEARML_AGENT_EXTRA_DOCKER_ARGS` when set.
    pub extra_docker_arguments: Vec<String>,
    /// `agent.extra_docker_shell_script`.
    pub extra_docker_shell_script: Vec<String>,
    /// `agent.docker_init_bash_script`.
    pub docker_init_bash_script: Vec<String>,
    /// `agent.docker_preprocess_bash_script`: runs before the init script.
    pub docker_preprocess_bash_script: Vec<String>,
    /// `agent.docker_args_extra_precedes_task` (default true).
    pub extra_precedes_task: bool,
    /// `agent.protected_docker_extra_args` (default `privileged, security-opt, network, ipc`).
    pub protected_docker_extra_args: Vec<String>,
    /// `agent.docker_args_filters` or `CLEARML_AGENT_DOCKER_ARGS_FILTERS` (shell-split):
    /// regexes; when non-empty only matching task switches are kept.
    pub docker_args_filters: Vec<String>,
    /// `agent.forbidden_docker_args` (default `entrypoint`).
    pub forbidden_docker_args: Vec<String>,
    /// `agent.docker_allow_host_environ`: expand `$VAR` in the task's `-e` values too.
    pub allow_host_environ: bool,
    /// `agent.docker_force_pull`.
    pub force_pull: bool,
    /// `agent.docker_pip_cache` (default `~/.clearml/pip-cache`).
    pub pip_cache: PathBuf,
    /// `agent.docker_apt_cache` (default `~/.clearml/apt-cache`).
    pub apt_cache: PathBuf,
    pub hide_env: HideDockerEnv,
    /// `CLEARML_DOCKER_SKIP_GPUS_FLAG`: never pass `--gpus`.
    pub skip_gpus_flag: bool,
    /// `CLEARML_AGENT_DISABLE_SSH_MOUNT`: mount neither `~/.ssh` nor the ssh agent socket.
    pub disable_ssh_mount: bool,
    /// `CLEARML_AGENT_EXTRA_DOCKER_LABELS` (space-separated `key=value`).
    pub extra_labels: Vec<String>,
}

const DEFAULT_IMAGE: &str = "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04";

fn truthy(s: &str) -> bool {
    clearml_hocon::parse_bool_str(s).unwrap_or(false)
}

// Free functions rather than methods, so they cannot clash with helpers of other modules.
fn flag(c: &Config, key: &str, default: bool) -> Result<bool, ConfigError> {
    Ok(c.tree().get_bool(key)?.unwrap_or(default))
}

/// A list of strings; a plain string is one entry. Empty entries are dropped.
fn list(c: &Config, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let list = match c.tree().get(key) {
        None => return Ok(None),
        Some(v) if v.is_null() => return Ok(None),
        Some(Value {
            kind: Kind::String(s),
            ..
        }) => vec![s.clone()],
        Some(_) => c.tree().get_str_list(key)?.unwrap_or_default(),
    };
    Ok(Some(list.into_iter().filter(|s| !s.is_empty()).collect()))
}

/// Docker arguments: a list, or one string split like a shell line.
fn arguments(c: &Config, key: &str) -> Result<Vec<String>, ConfigError> {
    match c.tree().get(key) {
        Some(Value {
            kind: Kind::String(s),
            origin,
        }) => shell_words::split(s).map_err(|e| ConfigError::Invalid {
            key: key.to_string(),
            message: format!("cannot split {s:?} into arguments ({e}), at {origin}"),
        }),
        _ => Ok(list(c, key)?.unwrap_or_default()),
    }
}

fn env_arguments(c: &Config, var: &str) -> Result<Option<Vec<String>>, ConfigError> {
    match c.env().get(var) {
        None => Ok(None),
        Some(v) => shell_words::split(v)
            .map(Some)
            .map_err(|e| ConfigError::Env {
                var: var.to_string(),
                message: format!("cannot split {v:?} into arguments ({e})"),
            }),
    }
}

fn path_or(c: &Config, key: &str, default: &str) -> Result<PathBuf, ConfigError> {
    match c.path(key)? {
        Some(p) if !p.as_os_str().is_empty() => Ok(p),
        _ => {
            let home = c.env().get("HOME").unwrap_or("~").trim_end_matches('/');
            Ok(PathBuf::from(default.replacen('~', home, 1)))
        }
    }
}

impl Config {
    /// The typed docker-mode settings. Regexes in `docker_args_filters` are checked here, so a
    /// bad one is reported when the agent starts.
    pub fn docker(&self) -> Result<DockerSettings, ConfigError> {
        let env = self.env();
        let filters = match env_arguments(self, "CLEARML_AGENT_DOCKER_ARGS_FILTERS")? {
            Some(f) => f,
            None => list(self, "agent.docker_args_filters")?.unwrap_or_default(),
        };
        for f in &filters {
            if let Err(e) = regex::Regex::new(f) {
                return Err(ConfigError::Invalid {
                    key: "agent.docker_args_filters".into(),
                    message: format!("{f:?} is not a valid regular expression: {e}"),
                });
            }
        }
        let mut extra_keys =
            list(self, "agent.hide_docker_command_env_vars.extra_keys")?.unwrap_or_default();
        if let Some(more) = env.get("CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV") {
            extra_keys.extend(more.split_whitespace().map(str::to_string));
        }
        let extra_docker_arguments = match env_arguments(self, "CLEARML_AGENT_EXTRA_DOCKER_ARGS")? {
            Some(a) => a,
            None => arguments(self, "agent.extra_docker_arguments")?,
        };
        Ok(DockerSettings {
            default_image: self
                .tree()
                .get_str("agent.default_docker.image")?
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_IMAGE.into()),
            default_arguments: arguments(self, "agent.default_docker.arguments")?,
            update_back_task: flag(self, "agent.default_docker.update_back_task", true)?,
            env_image: env
                .first(&["CLEARML_DOCKER_IMAGE", "TRAINS_DOCKER_IMAGE"])
                .map(|(_, v)| v.to_string())
                .filter(|v| !v.trim().is_empty()),
            disable_task_docker_override: flag(self, "agent.disable_task_docker_override", false)?,
            extra_docker_arguments,
            extra_docker_shell_script: list(self, "agent.extra_docker_shell_script")?
                .unwrap_or_default(),
            docker_init_bash_script: list(self, "agent.docker_init_bash_script")?
                .unwrap_or_default(),
            docker_preprocess_bash_script: list(self, "agent.docker_preprocess_bash_script")?
                .unwrap_or_default(),
            extra_precedes_task: flag(self, "agent.docker_args_extra_precedes_task", true)?,
            protected_docker_extra_args: list(self, "agent.protected_docker_extra_args")?
                .unwrap_or_else(|| {
                    ["privileged", "security-opt", "network", "ipc"]
                        .map(String::from)
                        .to_vec()
                }),
            docker_args_filters: filters,
            forbidden_docker_args: list(self, "agent.forbidden_docker_args")?
                .unwrap_or_else(|| vec!["entrypoint".into()]),
            allow_host_environ: flag(self, "agent.docker_allow_host_environ", false)?,
            force_pull: flag(self, "agent.docker_force_pull", false)?,
            pip_cache: path_or(self, "agent.docker_pip_cache", "~/.clearml/pip-cache")?,
            apt_cache: path_or(self, "agent.docker_apt_cache", "~/.clearml/apt-cache")?,
            hide_env: HideDockerEnv {
                enabled: flag(self, "agent.hide_docker_command_env_vars.enabled", true)?,
                extra_keys,
                parse_embedded_urls: flag(
                    self,
                    "agent.hide_docker_command_env_vars.parse_embedded_urls",
                    true,
                )?,
            },
            skip_gpus_flag: env.get("CLEARML_DOCKER_SKIP_GPUS_FLAG").is_some_and(truthy),
            disable_ssh_mount: env
                .get("CLEARML_AGENT_DISABLE_SSH_MOUNT")
                .is_some_and(truthy),
            extra_labels: env
                .get("CLEARML_AGENT_EXTRA_DOCKER_LABELS")
                .map(|s| s.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Env, LoadOptions};

    fn load(text: &str, env: &[(&str, &str)]) -> Config {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("clearml.conf");
        std::fs::write(&file, text).expect("write");
        let mut pairs: Vec<(String, String)> = vec![("HOME".into(), "/home/u".into())];
        pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::load(&LoadOptions {
            config_file: Some(file),
            env: Env::from_pairs(pairs),
        })
        .expect("load")
    }

    #[test]
    fn defaults_match_the_python_agent() {
        let d = load("", &[]).docker().expect("docker");
        assert_eq!(d.default_image, DEFAULT_IMAGE);
        assert!(d.extra_precedes_task);
        assert!(d.update_back_task);
        assert_eq!(
            d.protected_docker_extra_args,
            ["privileged", "security-opt", "network", "ipc"]
        );
        assert_eq!(d.forbidden_docker_args, ["entrypoint"]);
        assert!(d.docker_args_filters.is_empty());
        assert_eq!(d.pip_cache, PathBuf::from("/home/u/.clearml/pip-cache"));
        assert_eq!(d.apt_cache, PathBuf::from("/home/u/.clearml/apt-cache"));
        assert!(d.hide_env.enabled);
        assert!(!d.force_pull);
        assert_eq!(d.env_image, None);
    }

    #[test]
    fn keys_and_variables_are_read() {
        let c = load(
            r#"agent {
                default_docker { image: "python:3.11", arguments: "--ipc=host -e A=1" }
                extra_docker_arguments: ["-v", "/a:/b"]
                docker_args_filters: ["^-e$"]
                docker_force_pull: true
                docker_init_bash_script: "echo hi"
                disable_task_docker_override: true
                hide_docker_command_env_vars.extra_keys: ["MY_TOKEN"]
            }"#,
            &[
                ("CLEARML_DOCKER_IMAGE", "img:1 --rm"),
                ("CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV", "OTHER"),
                ("CLEARML_DOCKER_SKIP_GPUS_FLAG", "1"),
            ],
        );
        let d = c.docker().expect("docker");
        assert_eq!(d.default_image, "python:3.11");
        assert_eq!(d.default_arguments, ["--ipc=host", "-e", "A=1"]);
        assert_eq!(d.extra_docker_arguments, ["-v", "/a:/b"]);
        assert_eq!(d.docker_args_filters, ["^-e$"]);
        assert!(d.force_pull);
        assert!(d.disable_task_docker_override);
        assert_eq!(d.docker_init_bash_script, ["echo hi"]);
        assert_eq!(d.env_image.as_deref(), Some("img:1 --rm"));
        assert_eq!(d.hide_env.extra_keys, ["MY_TOKEN", "OTHER"]);
        assert!(d.skip_gpus_flag);
    }

    #[test]
    fn a_bad_filter_regex_is_an_error_naming_the_key() {
        let err = load(r#"agent.docker_args_filters: ["(unclosed"]"#, &[])
            .docker()
            .expect_err("bad regex");
        assert!(
            err.to_string().contains("agent.docker_args_filters"),
            "{err}"
        );
    }

    #[test]
    fn env_extra_args_replace_the_config_ones() {
        let c = load(
            r#"agent.extra_docker_arguments: ["--ipc=host"]"#,
            &[("CLEARML_AGENT_EXTRA_DOCKER_ARGS", "-e 'A=b c'")],
        );
        assert_eq!(
            c.docker().expect("docker").extra_docker_arguments,
            ["-e", "A=b c"]
        );
    }
}
