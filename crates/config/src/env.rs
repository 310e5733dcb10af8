//! Environment variables that override configuration keys.

use std::collections::BTreeMap;

/// A snapshot of the environment. Loading reads only this, so tests can pass their own.
#[derive(Clone, Debug, Default)]
pub struct Env(BTreeMap<String, String>);

impl Env {
    /// The process environment (variables that are not valid UTF-8 are skipped).
    pub fn from_process() -> Self {
        Env(std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect())
    }

    /// An environment holding exactly these variables.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Env(pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect())
    }

    /// The value of a variable; an empty value counts as unset, as in the Python agent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The first of `names` that is set, with its name.
    pub fn first<'a>(&'a self, names: &[&'a str]) -> Option<(&'a str, &'a str)> {
        names.iter().find_map(|n| self.get(n).map(|v| (*n, v)))
    }

    pub fn set(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.insert(name.into(), value.into());
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// `~` and `~/rest` with this environment's `HOME`; anything else (including `~user`, or
    /// any path when `HOME` is unset) as written. The one `~` expansion of the workspace
    /// (HOCON path values also expand `$VAR`, see `clearml_hocon::Value::get_path_with`).
    pub fn expand_user(&self, p: &str) -> String {
        match (p.strip_prefix('~'), self.get("HOME")) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                format!("{}{rest}", home.trim_end_matches('/'))
            }
            _ => p.to_string(),
        }
    }
}

/// This machine's host name, the default worker name; empty when it cannot be read.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How a variable's text becomes a value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvKind {
    Str,
    Bool,
    /// Split like a shell command line (`shlex.split`).
    List,
}

/// A config key and the variables that override it, first set one wins.
#[derive(Clone, Copy, Debug)]
pub struct EnvOverride {
    pub key: &'static str,
    pub vars: &'static [&'static str],
    pub kind: EnvKind,
}

const fn ov(key: &'static str, vars: &'static [&'static str], kind: EnvKind) -> EnvOverride {
    EnvOverride { key, vars, kind }
}

/// The Python agent's `ENVIRONMENT_CONFIG` table plus the variables it reads in place of keys
/// (agent-inventory §2.2, §2.3), applied after the files.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    ov(
        "api.api_server",
        &["CLEARML_API_HOST", "TRAINS_API_HOST"],
        EnvKind::Str,
    ),
    ov(
        "api.web_server",
        &["CLEARML_WEB_HOST", "TRAINS_WEB_HOST"],
        EnvKind::Str,
    ),
    ov(
        "api.files_server",
        &["CLEARML_FILES_HOST", "TRAINS_FILES_HOST"],
        EnvKind::Str,
    ),
    ov(
        "api.credentials.access_key",
        &["CLEARML_API_ACCESS_KEY", "TRAINS_API_ACCESS_KEY"],
        EnvKind::Str,
    ),
    ov(
        "api.credentials.secret_key",
        &["CLEARML_API_SECRET_KEY", "TRAINS_API_SECRET_KEY"],
        EnvKind::Str,
    ),
    ov(
        "api.verify_certificate",
        &[
            "CLEARML_API_HOST_VERIFY_CERT",
            "TRAINS_API_HOST_VERIFY_CERT",
        ],
        EnvKind::Bool,
    ),
    ov(
        "api.http.default_method",
        &["CLEARML_API_DEFAULT_REQ_METHOD"],
        EnvKind::Str,
    ),
    ov(
        "agent.worker_name",
        &["CLEARML_WORKER_NAME", "TRAINS_WORKER_NAME"],
        EnvKind::Str,
    ),
    ov(
        "agent.worker_id",
        &["CLEARML_WORKER_ID", "TRAINS_WORKER_ID"],
        EnvKind::Str,
    ),
    ov(
        "agent.cuda_version",
        &[
            "CLEARML_CUDA_VERSION",
            "TRAINS_CUDA_VERSION",
            "CUDA_VERSION",
        ],
        EnvKind::Str,
    ),
    ov(
        "agent.cudnn_version",
        &[
            "CLEARML_CUDNN_VERSION",
            "TRAINS_CUDNN_VERSION",
            "CUDNN_VERSION",
        ],
        EnvKind::Str,
    ),
    ov(
        "agent.cpu_only",
        &["CLEARML_CPU_ONLY", "TRAINS_CPU_ONLY", "CPU_ONLY"],
        EnvKind::Bool,
    ),
    ov(
        "agent.crash_on_exception",
        &["CLEARML_AGENT_CRASH_ON_EXCEPTION"],
        EnvKind::Bool,
    ),
    ov("agent.git_user", &["CLEARML_AGENT_GIT_USER"], EnvKind::Str),
    ov("agent.git_pass", &["CLEARML_AGENT_GIT_PASS"], EnvKind::Str),
    ov("agent.git_host", &["CLEARML_AGENT_GIT_HOST"], EnvKind::Str),
    ov(
        "agent.venvs_cache.path",
        &["CLEARML_AGENT_VENV_CACHE_PATH"],
        EnvKind::Str,
    ),
    ov(
        "agent.package_manager.extra_pip_install_flags",
        &["CLEARML_EXTRA_PIP_INSTALL_FLAGS"],
        EnvKind::List,
    ),
    ov(
        "agent.apply_environment",
        &["CLEARML_AGENT_ENABLE_ENV_CONFIG_SECTION"],
        EnvKind::Bool,
    ),
    ov(
        "agent.apply_files",
        &["CLEARML_AGENT_ENABLE_FILES_CONFIG_SECTION"],
        EnvKind::Bool,
    ),
    ov("sdk.aws.s3.key", &["AWS_ACCESS_KEY_ID"], EnvKind::Str),
    ov(
        "sdk.aws.s3.secret",
        &["AWS_SECRET_ACCESS_KEY"],
        EnvKind::Str,
    ),
    ov("sdk.aws.s3.region", &["AWS_DEFAULT_REGION"], EnvKind::Str),
    ov(
        "sdk.google.storage.credentials_json",
        &["GOOGLE_APPLICATION_CREDENTIALS"],
        EnvKind::Str,
    ),
];

/// The prefix of the generic overrides: `CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL=true`.
pub(crate) const GENERIC_PREFIX: &str = "CLEARML_AGENT__";
