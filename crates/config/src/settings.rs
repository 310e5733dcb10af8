//! Typed views of the sections the agent acts on. Reading them checks every key at once, so a
//! wrong type is reported when the agent starts, with the key and where it was written.

use std::path::PathBuf;

use clearml_hocon::Value;

use crate::error::ConfigError;
use crate::load::Config;

/// Which tool installs a task's requirements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackageManagerKind {
    Uv,
    Pip,
    Conda,
    Poetry,
}

impl PackageManagerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PackageManagerKind::Uv => "uv",
            PackageManagerKind::Pip => "pip",
            PackageManagerKind::Conda => "conda",
            PackageManagerKind::Poetry => "poetry",
        }
    }
}

/// `agent.package_manager.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct PackageManager {
    pub kind: PackageManagerKind,
    /// pip constraints; a plain string in the file is one entry.
    pub pip_version: Vec<String>,
    pub system_site_packages: bool,
    pub force_upgrade: bool,
    pub extra_index_url: Vec<String>,
    pub conda_channels: Vec<String>,
    pub torch_nightly: bool,
    /// Appended to every `pip install`.
    pub extra_pip_install_flags: Vec<String>,
    /// A pinned poetry version; unset uses the `poetry` on `PATH`.
    pub poetry_version: Option<String>,
    pub poetry_install_extra_args: Vec<String>,
    pub uv_sync_extra_args: Vec<String>,
    /// `uv sync --locked` when a `uv.lock` exists (default true).
    pub uv_sync_locked_if_lock_file: bool,
    /// Requirement names installed first, one by one. Unset means none: with uv's build
    /// isolation the Python agent's `cython,numpy,...` default only costs extra resolutions.
    pub priority_packages: Vec<String>,
    pub priority_optional_packages: Vec<String>,
    /// Requirement names installed after everything else.
    pub post_packages: Vec<String>,
    pub post_optional_packages: Vec<String>,
}

/// A cache folder that can be switched off.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheDir {
    pub enabled: bool,
    pub path: PathBuf,
}

/// `agent.default_docker.*`.
#[derive(Clone, Debug, PartialEq)]
pub struct DefaultDocker {
    pub image: String,
    pub arguments: Vec<String>,
}

/// The `agent` keys of the seed's `agent { ... }` block.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentSettings {
    pub worker_id: Option<String>,
    pub worker_name: Option<String>,
    pub git_user: Option<String>,
    pub git_pass: Option<String>,
    pub force_git_ssh_protocol: bool,
    pub python_binary: Option<PathBuf>,
    pub package_manager: PackageManager,
    pub venvs_dir: PathBuf,
    pub vcs_cache: CacheDir,
    pub venv_update_enabled: bool,
    pub pip_download_cache: CacheDir,
    pub translate_ssh: bool,
    pub reload_config: bool,
    pub docker_pip_cache: PathBuf,
    pub docker_apt_cache: PathBuf,
    pub extra_docker_arguments: Vec<String>,
    pub extra_docker_shell_script: Vec<String>,
    pub docker_force_pull: bool,
    pub default_docker: DefaultDocker,
    pub docker_init_bash_script: Vec<String>,
    pub cuda_version: Option<String>,
    pub cudnn_version: Option<String>,
}

/// `sdk.storage.cache.*`: where the SDK caches downloads and how large the cache may grow.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageCache {
    pub default_base_dir: PathBuf,
    /// `-1` (or absent) means no limit.
    pub max_used_bytes: Option<i64>,
    pub min_free_bytes: Option<i64>,
    /// Percent, `5%` is `5.0`.
    pub cleanup_margin_percent: Option<f64>,
}

/// `api.*`: the server and credentials.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiSettings {
    pub api_server: Option<String>,
    pub web_server: Option<String>,
    pub files_server: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub verify_certificate: bool,
    /// `api.http.default_method`, lower-case (`get`, `post`, `put`).
    pub default_method: Option<String>,
}

impl Config {
    fn t(&self) -> &Value {
        self.tree()
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(self.t().get_str(key)?.filter(|s| !s.is_empty()))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        Ok(self.t().get_bool(key)?.unwrap_or(default))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .t()
            .get_str_list(key)?
            .unwrap_or_default()
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect())
    }

    /// A path with `~` and `$VAR` expanded against the configuration's environment.
    pub fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        let env = self.env();
        Ok(self
            .t()
            .get_path_with(key, &|name| env.get(name).map(str::to_string))?)
    }

    fn path_or(&self, key: &str, default: &str) -> Result<PathBuf, ConfigError> {
        match self.path(key)? {
            Some(p) => Ok(p),
            None => Ok(PathBuf::from(self.env().expand_user(default))),
        }
    }

    /// Docker arguments: a list, or one string split like a shell line.
    fn docker_args(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.t().get(key) {
            Some(Value {
                kind: clearml_hocon::Kind::String(s),
                origin,
            }) => shell_words::split(s).map_err(|e| ConfigError::Invalid {
                key: key.to_string(),
                message: format!("cannot split {s:?} into arguments ({e}), at {origin}"),
            }),
            _ => self.strings(key),
        }
    }

    /// The typed `agent` settings.
    pub fn agent(&self) -> Result<AgentSettings, ConfigError> {
        let pm_type = self
            .string("agent.package_manager.type")?
            .unwrap_or_else(|| "uv".into());
        let kind = match pm_type.to_ascii_lowercase().as_str() {
            "uv" => PackageManagerKind::Uv,
            "pip" => PackageManagerKind::Pip,
            "conda" => PackageManagerKind::Conda,
            "poetry" => PackageManagerKind::Poetry,
            other => {
                let origin = self
                    .get("agent.package_manager.type")
                    .map(|v| v.origin.to_string())
                    .unwrap_or_default();
                return Err(ConfigError::Invalid {
                    key: "agent.package_manager.type".into(),
                    message: format!(
                        "unknown package manager {other:?} (expected uv, pip, conda or poetry), at {origin}"
                    ),
                });
            }
        };
        Ok(AgentSettings {
            worker_id: self.string("agent.worker_id")?,
            worker_name: self.string("agent.worker_name")?,
            git_user: self.string("agent.git_user")?,
            git_pass: self.string("agent.git_pass")?,
            force_git_ssh_protocol: self.flag("agent.force_git_ssh_protocol", false)?,
            python_binary: self.path("agent.python_binary")?,
            package_manager: PackageManager {
                kind,
                pip_version: self.strings("agent.package_manager.pip_version")?,
                system_site_packages: self
                    .flag("agent.package_manager.system_site_packages", false)?,
                force_upgrade: self.flag("agent.package_manager.force_upgrade", false)?,
                extra_index_url: self.strings("agent.package_manager.extra_index_url")?,
                conda_channels: self.strings("agent.package_manager.conda_channels")?,
                torch_nightly: self.flag("agent.package_manager.torch_nightly", false)?,
                extra_pip_install_flags: self
                    .strings("agent.package_manager.extra_pip_install_flags")?,
                poetry_version: self.string("agent.package_manager.poetry_version")?,
                poetry_install_extra_args: self
                    .strings("agent.package_manager.poetry_install_extra_args")?,
                uv_sync_extra_args: self.strings("agent.package_manager.uv_sync_extra_args")?,
                uv_sync_locked_if_lock_file: self
                    .flag("agent.package_manager.uv_sync_locked_if_lock_file", true)?,
                priority_packages: self.strings("agent.package_manager.priority_packages")?,
                priority_optional_packages: self
                    .strings("agent.package_manager.priority_optional_packages")?,
                post_packages: self.strings("agent.package_manager.post_packages")?,
                post_optional_packages: self
                    .strings("agent.package_manager.post_optional_packages")?,
            },
            venvs_dir: self.path_or("agent.venvs_dir", "~/.clearml/venvs-builds")?,
            vcs_cache: CacheDir {
                enabled: self.flag("agent.vcs_cache.enabled", true)?,
                path: self.path_or("agent.vcs_cache.path", "~/.clearml/vcs-cache")?,
            },
            venv_update_enabled: self.flag("agent.venv_update.enabled", false)?,
            pip_download_cache: CacheDir {
                enabled: self.flag("agent.pip_download_cache.enabled", true)?,
                path: self.path_or(
                    "agent.pip_download_cache.path",
                    "~/.clearml/pip-download-cache",
                )?,
            },
            translate_ssh: self.flag("agent.translate_ssh", true)?,
            reload_config: self.flag("agent.reload_config", false)?,
            docker_pip_cache: self.path_or("agent.docker_pip_cache", "~/.clearml/pip-cache")?,
            docker_apt_cache: self.path_or("agent.docker_apt_cache", "~/.clearml/apt-cache")?,
            extra_docker_arguments: self.docker_args("agent.extra_docker_arguments")?,
            extra_docker_shell_script: self.strings("agent.extra_docker_shell_script")?,
            docker_force_pull: self.flag("agent.docker_force_pull", false)?,
            default_docker: DefaultDocker {
                image: self
                    .string("agent.default_docker.image")?
                    .unwrap_or_else(|| "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04".into()),
                arguments: self.docker_args("agent.default_docker.arguments")?,
            },
            docker_init_bash_script: self.strings("agent.docker_init_bash_script")?,
            cuda_version: self.string("agent.cuda_version")?,
            cudnn_version: self.string("agent.cudnn_version")?,
        })
    }

    /// The typed `sdk.storage.cache` settings.
    pub fn storage_cache(&self) -> Result<StorageCache, ConfigError> {
        Ok(StorageCache {
            default_base_dir: self
                .path_or("sdk.storage.cache.default_base_dir", "~/.clearml/cache")?,
            max_used_bytes: self
                .t()
                .get_bytes("sdk.storage.cache.size.max_used_bytes")?,
            min_free_bytes: self
                .t()
                .get_bytes("sdk.storage.cache.size.min_free_bytes")?,
            cleanup_margin_percent: self
                .t()
                .get_percent("sdk.storage.cache.size.cleanup_margin_percent")?,
        })
    }

    /// The typed `api` settings. `api.host` stands in for a missing `api.api_server`.
    pub fn api(&self) -> Result<ApiSettings, ConfigError> {
        Ok(ApiSettings {
            api_server: match self.string("api.api_server")? {
                Some(s) => Some(s),
                None => self.string("api.host")?,
            },
            web_server: self.string("api.web_server")?,
            files_server: self.string("api.files_server")?,
            access_key: self.string("api.credentials.access_key")?,
            secret_key: self.string("api.credentials.secret_key")?,
            verify_certificate: self.flag("api.verify_certificate", true)?,
            default_method: self
                .string("api.http.default_method")?
                .map(|m| m.to_ascii_lowercase()),
        })
    }
}
