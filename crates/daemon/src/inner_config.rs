//! The configuration the agent inside a task's container reads (docker mode).
//!
//! It is a copy of the host's, cut down to what the task needs and with container paths: the
//! `api` section (hosts and the credentials the task's SDK uses), the `sdk` section, and the
//! `agent` settings that shape the environment build. Everything the host already did or that
//! names host paths is left out: git credentials (the code is checked out on the host, so they
//! never enter the container), the vcs cache, the docker keys, the host's Python binary. The
//! venv folders point into the one venvs mount (see `clearml_docker::paths`). The file is
//! written 0600 and mounted read-only.

use clearml_config::Config;
use serde_json::{Map, Value, json};

use clearml_docker::paths;

/// `agent.*` keys that never go into the container.
const DROPPED_AGENT_KEYS: &[&str] = &[
    "git_user",
    "git_pass",
    "git_host",
    "vcs_cache",
    "translate_ssh",
    "force_git_ssh_protocol",
    "force_git_ssh_port",
    "force_git_ssh_user",
    "venvs_dir",
    "python_binary",
    "default_docker",
    "docker_force_pull",
    "docker_pip_cache",
    "docker_apt_cache",
    "docker_init_bash_script",
    "docker_preprocess_bash_script",
    "extra_docker_arguments",
    "extra_docker_shell_script",
    "extra_docker_labels",
    "docker_args_filters",
    "forbidden_docker_args",
    "protected_docker_extra_args",
    "docker_args_extra_precedes_task",
    "docker_allow_host_environ",
    "disable_task_docker_override",
    "hide_docker_command_env_vars",
    "docker_use_activated_venv",
    "docker_container_name_format",
];

/// The inner agent's configuration as JSON (HOCON reads JSON).
pub fn inner_config(config: &Config) -> Result<Value, clearml_config::ConfigError> {
    let tree = config.to_json();
    let api = config.api()?;
    let mut api_section = tree
        .get("api")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    // The effective values (environment variables included), not only the file's.
    for (k, v) in [
        ("api_server", &api.api_server),
        ("web_server", &api.web_server),
        ("files_server", &api.files_server),
    ] {
        if let Some(v) = v {
            api_section.insert(k.into(), Value::String(v.clone()));
        }
    }
    let mut creds = Map::new();
    if let Some(k) = &api.access_key {
        creds.insert("access_key".into(), Value::String(k.clone()));
    }
    if let Some(s) = &api.secret_key {
        creds.insert("secret_key".into(), Value::String(s.clone()));
    }
    api_section.insert("credentials".into(), Value::Object(creds));

    let mut agent = tree
        .get("agent")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in DROPPED_AGENT_KEYS {
        agent.remove(*k);
    }
    let mut venvs_cache = agent
        .get("venvs_cache")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let cache_on = config.venvs_cache()?.is_some();
    if cache_on {
        venvs_cache.insert("path".into(), Value::String(paths::VENV_CACHE.into()));
    } else {
        venvs_cache.remove("path");
    }
    agent.insert("venvs_cache".into(), Value::Object(venvs_cache));
    agent.insert("venvs_dir".into(), Value::String(paths::VENV_BUILDS.into()));
    let mut pip_cache = agent
        .get("pip_download_cache")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    pip_cache.insert("path".into(), Value::String(paths::PIP_CACHE.into()));
    agent.insert("pip_download_cache".into(), Value::Object(pip_cache));

    let mut out = Map::new();
    out.insert("api".into(), Value::Object(api_section));
    out.insert("agent".into(), Value::Object(agent));
    if let Some(sdk) = tree.get("sdk") {
        out.insert("sdk".into(), sdk.clone());
    }
    Ok(Value::Object(out))
}

/// The inner configuration as file content.
pub fn inner_config_text(config: &Config) -> Result<String, clearml_config::ConfigError> {
    let v = inner_config(config)?;
    Ok(serde_json::to_string_pretty(&v).unwrap_or_else(|_| json!({}).to_string()))
}

/// The inner configuration without the agent's keys, for a task that runs as its owner
/// (`--use-owner-token`: the container gets the owner's token instead, as with 3.0.3's
/// `clean_api_credentials`).
pub(crate) fn inner_config_text_without_keys(
    config: &Config,
) -> Result<String, clearml_config::ConfigError> {
    let mut v = inner_config(config)?;
    if let Some(api) = v.get_mut("api").and_then(Value::as_object_mut) {
        api.remove("credentials");
    }
    Ok(serde_json::to_string_pretty(&v).unwrap_or_else(|_| json!({}).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clearml_config::LoadOptions;

    fn load(text: &str) -> (tempfile::TempDir, Config) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("clearml.conf");
        std::fs::write(&f, text).expect("write");
        let opts = LoadOptions {
            config_file: Some(f),
            ..LoadOptions::default()
        };
        let c = Config::load(&opts).expect("load");
        (dir, c)
    }

    #[test]
    fn keeps_api_and_drops_host_only_keys() {
        let (_d, c) = load(
            "api { api_server: \"http://127.0.0.1:8008\", credentials { access_key: K, secret_key: S } }\n\
             agent { git_user: u, git_pass: p, venvs_dir: /host/venvs, python_binary: /host/py,\n\
               extra_docker_arguments: [\"-e\", \"A=1\"], venvs_cache { path: /host/cache },\n\
               package_manager { type: uv } }\n\
             sdk { development { x: 1 } }\n",
        );
        let v = inner_config(&c).expect("inner");
        assert_eq!(v["api"]["api_server"], "http://127.0.0.1:8008");
        assert_eq!(v["api"]["credentials"]["secret_key"], "S");
        assert!(v["agent"].get("git_user").is_none());
        assert!(v["agent"].get("git_pass").is_none());
        assert!(v["agent"].get("python_binary").is_none());
        assert!(v["agent"].get("extra_docker_arguments").is_none());
        assert_eq!(v["agent"]["venvs_dir"], paths::VENV_BUILDS);
        assert_eq!(v["agent"]["venvs_cache"]["path"], paths::VENV_CACHE);
        assert_eq!(v["agent"]["package_manager"]["type"], "uv");
        assert_eq!(v["sdk"]["development"]["x"], 1);
        let text = inner_config_text(&c).expect("text");
        let keyless = inner_config_text_without_keys(&c).expect("text");
        assert!(!keyless.contains("secret_key") && keyless.contains("api_server"));
        assert!(!text.contains("/host/"), "{text}");
    }
}
