//! The docker-mode part of `clearml-agent config`: every docker key with the value the agent
//! will use (defaults, environment overrides and the file together), secrets hidden.

use clearml_config::DockerSettings;

/// `key = value` lines, one per docker setting.
pub fn effective_lines(s: &DockerSettings) -> Vec<String> {
    let list = |v: &[String]| {
        if v.is_empty() {
            "[]".to_string()
        } else {
            shell_words::join(clearml_docker::hide_secrets(v, &s.hide_env))
        }
    };
    let env_image = s.env_image.clone().unwrap_or_else(|| "(not set)".into());
    vec![
        format!("agent.default_docker.image = {}", s.default_image),
        format!(
            "agent.default_docker.arguments = {}",
            list(&s.default_arguments)
        ),
        format!(
            "agent.default_docker.update_back_task = {}",
            s.update_back_task
        ),
        format!("CLEARML_DOCKER_IMAGE = {env_image}"),
        format!(
            "agent.disable_task_docker_override = {}",
            s.disable_task_docker_override
        ),
        format!(
            "agent.extra_docker_arguments = {}",
            list(&s.extra_docker_arguments)
        ),
        format!(
            "agent.extra_docker_shell_script = {:?}",
            s.extra_docker_shell_script
        ),
        format!(
            "agent.docker_init_bash_script = {:?}",
            s.docker_init_bash_script
        ),
        format!(
            "agent.docker_preprocess_bash_script = {:?}",
            s.docker_preprocess_bash_script
        ),
        format!(
            "agent.docker_args_extra_precedes_task = {}",
            s.extra_precedes_task
        ),
        format!(
            "agent.protected_docker_extra_args = {:?}",
            s.protected_docker_extra_args
        ),
        format!("agent.docker_args_filters = {:?}", s.docker_args_filters),
        format!(
            "agent.forbidden_docker_args = {:?}",
            s.forbidden_docker_args
        ),
        format!("agent.docker_allow_host_environ = {}", s.allow_host_environ),
        format!("agent.docker_force_pull = {}", s.force_pull),
        format!("agent.docker_pip_cache = {}", s.pip_cache.display()),
        format!("agent.docker_apt_cache = {}", s.apt_cache.display()),
        format!(
            "agent.hide_docker_command_env_vars.enabled = {}",
            s.hide_env.enabled
        ),
        format!(
            "agent.hide_docker_command_env_vars.extra_keys = {:?}",
            s.hide_env.extra_keys
        ),
        format!(
            "agent.hide_docker_command_env_vars.parse_embedded_urls = {}",
            s.hide_env.parse_embedded_urls
        ),
        format!("CLEARML_DOCKER_SKIP_GPUS_FLAG = {}", s.skip_gpus_flag),
        format!("CLEARML_AGENT_DISABLE_SSH_MOUNT = {}", s.disable_ssh_mount),
        format!("CLEARML_AGENT_EXTRA_DOCKER_LABELS = {:?}", s.extra_labels),
    ]
}
