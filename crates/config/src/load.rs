//! Finding, reading and layering the configuration.

use std::path::{Path, PathBuf};

use clearml_hocon::{Kind, Options, Origin, Value, parse_bool_str};

use crate::env::{ENV_OVERRIDES, Env, EnvKind, GENERIC_PREFIX};
use crate::error::ConfigError;

/// The built-in defaults, each the body of the section named by its file stem.
const DEFAULTS: &[(&str, &str)] = &[
    ("agent", include_str!("../defaults/agent.conf")),
    ("api", include_str!("../defaults/api.conf")),
    ("sdk", include_str!("../defaults/sdk.conf")),
];

/// What to load.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// `--config-file`: read only this file (it must exist).
    pub config_file: Option<PathBuf>,
    /// The environment to read; `Env::from_process()` for the real thing.
    pub env: Env,
}

/// The effective configuration.
#[derive(Clone, Debug)]
pub struct Config {
    tree: Value,
    files: Vec<PathBuf>,
    env: Env,
}

impl Config {
    /// Loads the layers described in the crate documentation.
    pub fn load(opts: &LoadOptions) -> Result<Config, ConfigError> {
        let env = &opts.env;
        let parser = Options::with_env(|name| env.get(name).map(str::to_string));
        let mut tree = Value::empty_object(Origin::described("built-in defaults"));

        for (section, text) in DEFAULTS {
            let source = format!("built-in defaults ({section}.conf)");
            let v = parser.parse_str(text, &source, None)?;
            tree.merge(section_value(section, v));
        }

        if let Some(dir) = env.first(&["CLEARML_CONFIG_PATH", "TRAINS_CONFIG_PATH"]) {
            for file in conf_files_in(Path::new(dir.1)) {
                let Some(stem) = file.file_stem().and_then(|s| s.to_str()) else {
                    continue;
                };
                let v = parser.parse_file(&file)?;
                tree.merge(section_value(stem, v));
            }
        }

        let mut files = Vec::new();
        for file in user_files(opts)? {
            let v = parser.parse_file(&file)?;
            if v.as_object().is_none() {
                return Err(ConfigError::Invalid {
                    key: file.display().to_string(),
                    message: "the file must hold settings (an object), not a list".into(),
                });
            }
            tree.merge(v);
            files.push(file);
        }

        apply_generic_overrides(&mut tree, env)?;
        apply_named_overrides(&mut tree, env)?;
        derive_defaults(&mut tree);

        Ok(Config {
            tree,
            files,
            env: env.clone(),
        })
    }

    /// The whole merged tree.
    pub fn tree(&self) -> &Value {
        &self.tree
    }

    /// The user files that were read, in order (empty when only defaults apply).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The environment the configuration was loaded with.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The value at a dotted key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.tree.get(key)
    }

    /// The tree as JSON (what is handed to child processes as their config file).
    pub fn to_json(&self) -> serde_json::Value {
        self.tree.to_json()
    }
}

/// A defaults file's content placed under its section key.
fn section_value(section: &str, v: Value) -> Value {
    let mut root = Value::empty_object(v.origin.clone());
    root.set_keys(&[section], v);
    root
}

fn conf_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "conf") && p.is_file())
        .collect();
    files.sort();
    files
}

/// The user's files in merge order (later wins).
fn user_files(opts: &LoadOptions) -> Result<Vec<PathBuf>, ConfigError> {
    let env = &opts.env;
    let explicit = opts.config_file.clone().or_else(|| {
        env.first(&["CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE"])
            .map(|(_, v)| PathBuf::from(env.expand_user(v)))
    });
    if let Some(file) = explicit {
        if !file.is_file() {
            return Err(ConfigError::MissingFile(file));
        }
        return Ok(vec![file]);
    }
    let Some(home) = env.get("HOME") else {
        return Ok(Vec::new());
    };
    Ok(["trains.conf", "clearml.conf"]
        .iter()
        .map(|name| Path::new(home).join(name))
        .filter(|p| p.is_file())
        .collect())
}

/// `CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL=true` sets `agent.docker_force_pull`; the value is
/// read as HOCON, so lists and numbers work (`CLEARML_AGENT__AGENT__GIT_FETCH_ARGS=["--all"]`).
fn apply_generic_overrides(tree: &mut Value, env: &Env) -> Result<(), ConfigError> {
    for (var, value) in env.iter() {
        let Some(rest) = var.strip_prefix(GENERIC_PREFIX) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let keys: Vec<String> = rest
            .to_lowercase()
            .split("__")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if keys.is_empty() {
            return Err(ConfigError::Env {
                var: var.to_string(),
                message: "names no configuration key".into(),
            });
        }
        let source = format!("environment variable {var}");
        let parser = Options::with_env(|name| env.get(name).map(str::to_string));
        let parsed = parser
            .parse_str(&format!("v: {value}"), &source, None)
            .map_err(|e| ConfigError::Env {
                var: var.to_string(),
                message: format!("cannot read the value as HOCON: {}", e.message),
            })?;
        let Some(v) = parsed.get_keys(&["v"]).cloned() else {
            continue;
        };
        let v = with_origin(v, &Origin::described(source));
        let mut overlay = Value::empty_object(v.origin.clone());
        overlay.set_keys(&keys, v);
        tree.merge(overlay);
    }
    Ok(())
}

fn with_origin(mut v: Value, origin: &Origin) -> Value {
    v.origin = origin.clone();
    v.kind = match v.kind {
        Kind::List(items) => {
            Kind::List(items.into_iter().map(|i| with_origin(i, origin)).collect())
        }
        Kind::Object(o) => Kind::Object(
            o.into_iter()
                .map(|(k, i)| (k, with_origin(i, origin)))
                .collect(),
        ),
        other => other,
    };
    v
}

fn apply_named_overrides(tree: &mut Value, env: &Env) -> Result<(), ConfigError> {
    for o in ENV_OVERRIDES {
        let Some((var, text)) = env.first(o.vars) else {
            continue;
        };
        let origin = Origin::described(format!("environment variable {var}"));
        let kind = match o.kind {
            EnvKind::Str => Kind::String(text.to_string()),
            EnvKind::Bool => Kind::Bool(parse_bool_str(text).ok_or_else(|| ConfigError::Env {
                var: var.to_string(),
                message: format!(
                    "expected a boolean (true/false, yes/no, on/off, 1/0), found {text:?}"
                ),
            })?),
            EnvKind::List => Kind::List(
                shell_words::split(text)
                    .map_err(|e| ConfigError::Env {
                        var: var.to_string(),
                        message: format!("cannot split {text:?} into words: {e}"),
                    })?
                    .into_iter()
                    .map(|w| Value::string(w, origin.clone()))
                    .collect(),
            ),
        };
        let keys: Vec<&str> = o.key.split('.').collect();
        tree.set_keys(&keys, Value::new(kind, origin));
    }
    // Azure credentials are appended as one more container entry, as the Python agent does.
    if let (Some(account), Some(key)) = (
        env.get("AZURE_STORAGE_ACCOUNT"),
        env.get("AZURE_STORAGE_KEY"),
    ) {
        let origin = Origin::described("environment variables AZURE_STORAGE_ACCOUNT/KEY");
        let entry = Value::from_json(
            &serde_json::json!({"account_name": account, "account_key": key}),
            &origin,
        );
        let path = ["sdk", "azure", "storage", "containers"];
        let mut items = tree
            .get_keys(&path)
            .and_then(Value::as_list)
            .map(<[Value]>::to_vec)
            .unwrap_or_default();
        items.push(entry);
        tree.set_keys(&path, Value::new(Kind::List(items), origin));
    }
    Ok(())
}

/// Values the Python agent fills in after loading.
fn derive_defaults(tree: &mut Value) {
    let api_server = tree.get("api.api_server").cloned();
    if let Some(server) = api_server.filter(|v| !v.is_null() && tree.get("api.host").is_none()) {
        tree.set_keys(&["api", "host"], server);
    }
    let empty = |v: Option<&Value>| v.is_none_or(|v| v.scalar_text().is_none_or(|s| s.is_empty()));
    if empty(tree.get("agent.worker_name")) {
        let host = crate::env::host_name();
        if !host.is_empty() {
            tree.set_keys(
                &["agent", "worker_name"],
                Value::string(host, Origin::described("the host name")),
            );
        }
    }
}
