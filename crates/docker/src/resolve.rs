//! Which image a task runs in, and with which `docker run` arguments.

use clearml_config::DockerSettings;
use regex::Regex;
use serde_json::Value;

use crate::args;
use crate::error::DockerError;

/// A task's `container` field: `{image, arguments, setup_shell_script}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskContainer {
    pub image: Option<String>,
    /// Already split; in the task the field may be one shell-like string.
    pub arguments: Vec<String>,
    pub setup_shell_script: Option<String>,
}

impl TaskContainer {
    /// Reads the task's `container` object. Absent or `null` fields are empty; `arguments` may
    /// be a string (split like a shell line) or a list of strings. An image string holding
    /// spaces is split into the image and extra arguments, as the Python agent does.
    pub fn from_json(container: &Value) -> Result<Self, DockerError> {
        if container.is_null() {
            return Ok(Self::default());
        }
        let obj = container.as_object().ok_or_else(|| {
            DockerError::BadContainer(format!("expected an object, got {container}"))
        })?;
        let text = |key: &str| -> Result<Option<String>, DockerError> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(DockerError::BadContainer(format!(
                    "{key} should be a string, got {other}"
                ))),
            }
        };
        let mut arguments = match obj.get("arguments") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => split(s)?,
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| match i {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    other => Err(DockerError::BadContainer(format!(
                        "arguments should hold strings, got {other}"
                    ))),
                })
                .collect::<Result<_, _>>()?,
            Some(other) => {
                return Err(DockerError::BadContainer(format!(
                    "arguments should be a string or a list, got {other}"
                )));
            }
        };
        let mut image = text("image")?;
        if let Some(img) = image.clone() {
            let mut parts = split(&img)?;
            if parts.len() > 1 {
                let first = parts.remove(0);
                parts.extend(arguments);
                arguments = parts;
                image = Some(first);
            } else {
                image = parts.pop();
            }
        }
        Ok(TaskContainer {
            image,
            arguments,
            setup_shell_script: text("setup_shell_script")?,
        })
    }
}

fn split(s: &str) -> Result<Vec<String>, DockerError> {
    shell_words::split(s).map_err(|e| DockerError::BadArguments {
        text: s.to_string(),
        message: e.to_string(),
    })
}

/// Where the image came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// `--docker IMAGE [ARGS]` on the command line.
    Cli,
    /// `CLEARML_DOCKER_IMAGE`.
    Env,
    /// The task's `container.image`.
    Task,
    /// `agent.default_docker.image`.
    AgentDefault,
}

/// The image and base arguments chosen for one task (before the agent's extra arguments are
/// merged in, see [`merge_arguments`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ImageChoice {
    pub image: String,
    /// The task's arguments when the task's image is used, else the agent's default arguments.
    pub arguments: Vec<String>,
    pub source: ImageSource,
    /// The task's setup script; honoured whichever image is used.
    pub setup_shell_script: Option<String>,
    /// The caller should write `image`, `arguments` and `setup_shell_script` back to the task's
    /// `container` (the agent's image was used and `default_docker.update_back_task` is on).
    pub write_back: bool,
}

impl ImageChoice {
    /// Whether the arguments came from the task (and so pass `docker_args_filters`).
    pub fn arguments_from_task(&self) -> bool {
        self.source == ImageSource::Task
    }
}

/// The agent's own image: `--docker IMAGE [ARGS...]` (the CLI values, possibly empty), else
/// `CLEARML_DOCKER_IMAGE`, else `agent.default_docker`. An image string with spaces is split into
/// the image and its arguments; an image with no arguments gets `agent.default_docker.arguments`.
pub fn agent_image(
    cli: &[String],
    settings: &DockerSettings,
) -> Result<(String, Vec<String>, ImageSource), DockerError> {
    let (mut words, source) = match cli.first().filter(|s| !s.trim().is_empty()) {
        Some(first) => {
            let mut w = split(first)?;
            w.extend(cli[1..].iter().cloned());
            (w, ImageSource::Cli)
        }
        None => match &settings.env_image {
            Some(e) => (split(e)?, ImageSource::Env),
            None => {
                let mut w = vec![settings.default_image.clone()];
                w.extend(settings.default_arguments.iter().cloned());
                (w, ImageSource::AgentDefault)
            }
        },
    };
    if words.is_empty() {
        words.push(settings.default_image.clone());
    }
    let image = words.remove(0);
    // An image given without arguments takes `default_docker.arguments`, as in clearml-agent.
    if words.is_empty() {
        words = settings.default_arguments.clone();
    }
    Ok((image, words, source))
}

/// Chooses the task's image as clearml-agent 3.0.3 does: the task's `container.image` with the
/// task's arguments, unless the task names none or `agent.disable_task_docker_override` is set;
/// then the agent's image ([`agent_image`]) with its arguments, to be written back to the task.
pub fn resolve_image(
    cli: &[String],
    task: &TaskContainer,
    settings: &DockerSettings,
) -> Result<ImageChoice, DockerError> {
    let use_task = !settings.disable_task_docker_override && task.image.is_some();
    if let (true, Some(image)) = (use_task, &task.image) {
        return Ok(ImageChoice {
            image: image.clone(),
            arguments: task.arguments.clone(),
            source: ImageSource::Task,
            setup_shell_script: task.setup_shell_script.clone(),
            write_back: false,
        });
    }
    let (image, arguments, source) = agent_image(cli, settings)?;
    Ok(ImageChoice {
        image,
        arguments,
        source,
        setup_shell_script: task.setup_shell_script.clone(),
        write_back: settings.update_back_task,
    })
}

/// The merged `docker run` arguments and the lines to put in the task's log about them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MergedArgs {
    pub args: Vec<String>,
    /// E.g. that a forbidden switch was removed. Meant for the task's console.
    pub messages: Vec<String>,
}

/// The user-level `docker run` arguments for a task: the chosen arguments (filtered by
/// `docker_args_filters` when they came from the task, `$VAR` in `-e` values expanded when
/// `docker_allow_host_environ`), the agent's `extra_docker_arguments` (every `$VAR` expanded with
/// `lookup`, the host environment), `forbidden_docker_args` stripped from both. The side that
/// comes first (the extra arguments when `docker_args_extra_precedes_task`, the default) keeps
/// the protected switches (`protected_docker_extra_args`); the other side loses those it shares.
pub fn merge_arguments(
    choice: &ImageChoice,
    settings: &DockerSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<MergedArgs, DockerError> {
    let filters = settings
        .docker_args_filters
        .iter()
        .map(|f| Regex::new(f).map_err(|_| DockerError::BadFilter(f.clone())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut messages = Vec::new();
    let mut base = choice.arguments.clone();
    if choice.arguments_from_task() {
        let kept = args::allow_only(&base, &filters);
        if kept.len() != base.len() {
            messages.push(format!(
                "docker arguments not allowed by agent.docker_args_filters were dropped: {}",
                dropped(&base, &kept).join(", ")
            ));
        }
        base = kept;
        if settings.allow_host_environ {
            base = args::expand_env_values(&base, lookup);
        }
    }
    let extra: Vec<String> = settings
        .extra_docker_arguments
        .iter()
        .map(|a| args::expand_vars(a, lookup))
        .collect();
    let (base, removed_task) = args::strip(&base, &settings.forbidden_docker_args);
    let (extra, removed_extra) = args::strip(&extra, &settings.forbidden_docker_args);
    let mut removed = removed_task;
    for r in removed_extra {
        if !removed.contains(&r) {
            removed.push(r);
        }
    }
    if !removed.is_empty() {
        let list: Vec<String> = removed.iter().map(|r| format!("--{r}")).collect();
        messages.push(format!(
            "WARNING: forbidden docker arguments removed (agent.forbidden_docker_args): {}",
            list.join(", ")
        ));
    }
    let args = args::merge(
        &base,
        &extra,
        &settings.protected_docker_extra_args,
        settings.extra_precedes_task,
    );
    Ok(MergedArgs { args, messages })
}

/// The switches of `before` that are not in `after` (values are left out: they may be secrets).
fn dropped(before: &[String], after: &[String]) -> Vec<String> {
    let kept = args::switches(after);
    let mut out: Vec<String> = Vec::new();
    for s in args::switches(before) {
        let s = format!("--{s}");
        if !kept.iter().any(|k| format!("--{k}") == s) && !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clearml_config::HideDockerEnv;
    use serde_json::json;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn settings() -> DockerSettings {
        DockerSettings {
            default_image: "agent/default:1".into(),
            default_arguments: v(&["--ipc=host"]),
            update_back_task: true,
            env_image: None,
            disable_task_docker_override: false,
            extra_docker_arguments: vec![],
            extra_docker_shell_script: vec![],
            docker_init_bash_script: vec![],
            docker_preprocess_bash_script: vec![],
            extra_precedes_task: true,
            protected_docker_extra_args: v(&["privileged", "security-opt", "network", "ipc"]),
            docker_args_filters: vec![],
            forbidden_docker_args: v(&["entrypoint"]),
            allow_host_environ: false,
            force_pull: false,
            pip_cache: "/p".into(),
            apt_cache: "/a".into(),
            hide_env: HideDockerEnv {
                enabled: true,
                extra_keys: vec![],
                parse_embedded_urls: true,
            },
            skip_gpus_flag: false,
            disable_ssh_mount: false,
            extra_labels: vec![],
        }
    }

    #[test]
    fn container_field_forms() {
        let c = TaskContainer::from_json(&json!({
            "image": "python:3.11 --rm", "arguments": "-e A=1", "setup_shell_script": "echo hi"
        }))
        .expect("parse");
        assert_eq!(c.image.as_deref(), Some("python:3.11"));
        assert_eq!(c.arguments, v(&["--rm", "-e", "A=1"]));
        assert_eq!(c.setup_shell_script.as_deref(), Some("echo hi"));
        let c = TaskContainer::from_json(&json!({"image": "", "arguments": ["-e", "B=2"]}))
            .expect("parse");
        assert_eq!(c.image, None);
        assert_eq!(c.arguments, v(&["-e", "B=2"]));
        assert_eq!(
            TaskContainer::from_json(&json!(null)).expect("null"),
            TaskContainer::default()
        );
        assert!(TaskContainer::from_json(&json!({"image": 3})).is_err());
        assert!(TaskContainer::from_json(&json!({"arguments": "'unclosed"})).is_err());
    }

    #[test]
    fn task_image_wins_unless_overridden() {
        let s = settings();
        let task = TaskContainer {
            image: Some("task/img".into()),
            arguments: v(&["-e", "T=1"]),
            setup_shell_script: Some("echo s".into()),
        };
        let c = resolve_image(&v(&["cli/img", "--privileged"]), &task, &s).expect("resolve");
        assert_eq!(
            (c.image.as_str(), c.source, c.write_back),
            ("task/img", ImageSource::Task, false)
        );
        assert_eq!(c.arguments, v(&["-e", "T=1"]));

        let mut s2 = s.clone();
        s2.disable_task_docker_override = true;
        let c = resolve_image(&v(&["cli/img --privileged"]), &task, &s2).expect("resolve");
        assert_eq!(
            (c.image.as_str(), c.source, c.write_back),
            ("cli/img", ImageSource::Cli, true)
        );
        assert_eq!(c.arguments, v(&["--privileged"]));
        assert_eq!(c.setup_shell_script.as_deref(), Some("echo s"));
    }

    #[test]
    fn agent_image_order_is_cli_env_default() {
        let mut s = settings();
        let none = TaskContainer::default();
        let c = resolve_image(&[], &none, &s).expect("default");
        assert_eq!(
            (c.image.as_str(), c.source),
            ("agent/default:1", ImageSource::AgentDefault)
        );
        assert_eq!(c.arguments, v(&["--ipc=host"]));
        assert!(c.write_back);
        s.env_image = Some("env/img -e X=1".into());
        let c = resolve_image(&[], &none, &s).expect("env");
        assert_eq!((c.image.as_str(), c.source), ("env/img", ImageSource::Env));
        assert_eq!(c.arguments, v(&["-e", "X=1"]));
        let c = resolve_image(&v(&["cli/img"]), &none, &s).expect("cli");
        assert_eq!((c.image.as_str(), c.source), ("cli/img", ImageSource::Cli));
        assert_eq!(c.arguments, v(&["--ipc=host"]));
        s.update_back_task = false;
        assert!(!resolve_image(&[], &none, &s).expect("default").write_back);
    }

    #[test]
    fn merging_filters_strips_and_expands() {
        let mut s = settings();
        s.docker_args_filters = v(&["^-e$", "^--network"]);
        s.extra_docker_arguments = v(&[
            "-v",
            "$CERT:$CERT:ro",
            "-e",
            "SSL_CERT_FILE=$CERT",
            "--network=bridge",
        ]);
        let choice = ImageChoice {
            image: "i".into(),
            arguments: v(&[
                "-e",
                "A=$HOME",
                "--privileged",
                "--network",
                "none",
                "--entrypoint=/x",
                "-v",
                "/:/host",
            ]),
            source: ImageSource::Task,
            setup_shell_script: None,
            write_back: false,
        };
        let look = |n: &str| match n {
            "CERT" => Some("/etc/ca.pem".to_string()),
            "HOME" => Some("/root".to_string()),
            _ => None,
        };
        let m = merge_arguments(&choice, &s, &look).expect("merge");
        assert_eq!(
            m.args,
            v(&[
                "-v",
                "/etc/ca.pem:/etc/ca.pem:ro",
                "-e",
                "SSL_CERT_FILE=/etc/ca.pem",
                "--network=bridge",
                "-e",
                "A=$HOME"
            ])
        );
        assert!(
            m.messages
                .iter()
                .any(|l| l.contains("--privileged") && l.contains("docker_args_filters")),
            "{:?}",
            m.messages
        );
        s.docker_args_filters.clear();
        s.allow_host_environ = true;
        let m = merge_arguments(&choice, &s, &look).expect("merge");
        assert!(
            m.args.windows(2).any(|w| w == ["-e", "A=/root"]),
            "{:?}",
            m.args
        );
        assert!(!m.args.iter().any(|a| a.contains("entrypoint")));
        assert!(m.messages.iter().any(|l| l.contains("--entrypoint")));
        assert!(m.args.iter().any(|a| a == "--privileged"));
    }
}
