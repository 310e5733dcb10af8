//! Hiding secrets when the configuration is printed (`clearml-agent config`), with the Python
//! agent's rules and its `agent.sanitize_config_printout` settings.

use clearml_hocon::{Kind, Origin, Value};
use regex::Regex;

use crate::load::Config;

const STARS: &str = "****";

/// Env names whose values are hidden in docker arguments, besides `hide_docker_command_env_vars.extra_keys`.
const SECRET_ENV_NAMES: &[&str] = &[
    "CLEARML_AGENT_GIT_PASS",
    "TRAINS_AGENT_GIT_PASS",
    "CLEARML_API_SECRET_KEY",
    "TRAINS_API_SECRET_KEY",
    "AWS_SECRET_ACCESS_KEY",
    "AZURE_STORAGE_KEY",
    "CLEARML_AUTH_TOKEN",
];

struct Rules {
    keep: Vec<Regex>,
    hide: Vec<Regex>,
    hide_recursive: Vec<Regex>,
    docker: Vec<Regex>,
    urls: Vec<Regex>,
    docker_secret_names: Vec<String>,
}

fn patterns(config: &Config, key: &str, default: &[&str]) -> Vec<Regex> {
    let list = config
        .tree()
        .get_str_list(&format!("agent.sanitize_config_printout.{key}"))
        .ok()
        .flatten()
        .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
    // A pattern that is not a valid regex is matched literally rather than dropped: dropping it
    // could print a secret.
    list.iter()
        .filter_map(|p| {
            Regex::new(p)
                .or_else(|_| Regex::new(&regex::escape(p)))
                .ok()
        })
        .collect()
}

impl Config {
    /// The tree with secrets replaced by `****`, passwords in index URLs hidden and secret
    /// `-e NAME=value` docker arguments hidden, as the Python agent prints it.
    pub fn masked(&self) -> Value {
        let mut extra = self
            .tree()
            .get_str_list("agent.hide_docker_command_env_vars.extra_keys")
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some(more) = self.env().get("CLEARML_AGENT_DOCKER_ARGS_HIDE_ENV") {
            extra.extend(more.split_whitespace().map(str::to_string));
        }
        let docker_enabled = self
            .tree()
            .get_bool("agent.hide_docker_command_env_vars.enabled")
            .ok()
            .flatten()
            .unwrap_or(true);
        let mut docker_secret_names: Vec<String> =
            SECRET_ENV_NAMES.iter().map(|s| s.to_string()).collect();
        docker_secret_names.extend(extra);
        let rules = Rules {
            keep: patterns(self, "dont_hide_secrets", &["^enable_git_ask_pass$"]),
            hide: patterns(
                self,
                "hide_secrets",
                &[
                    "^sanitize_config_printout$",
                    "secret",
                    "pass",
                    "token",
                    "account_key",
                    "contents",
                ],
            ),
            hide_recursive: patterns(self, "hide_secrets_recursive", &["^environment$"]),
            docker: if docker_enabled {
                patterns(self, "docker_commands", &["^extra_docker_arguments$"])
            } else {
                Vec::new()
            },
            urls: patterns(self, "urls", &["^extra_index_url$"]),
            docker_secret_names,
        };
        let mut tree = self.tree().clone();
        mask_object(&mut tree, &rules);
        tree
    }
}

fn stars(origin: &Origin) -> Value {
    Value::string(STARS, origin.clone())
}

fn mask_object(v: &mut Value, rules: &Rules) {
    let Some(obj) = v.as_object_mut() else {
        return;
    };
    for (k, child) in obj.iter_mut() {
        if !rules.keep.iter().any(|r| r.is_match(k)) {
            if rules.hide.iter().any(|r| r.is_match(k)) {
                *child = stars(&child.origin);
                continue;
            }
            if rules.hide_recursive.iter().any(|r| r.is_match(k)) {
                match child.as_object_mut() {
                    Some(inner) => {
                        for (_, leaf) in inner.iter_mut() {
                            *leaf = stars(&leaf.origin);
                        }
                    }
                    None => *child = stars(&child.origin),
                }
                continue;
            }
        }
        if rules.urls.iter().any(|r| r.is_match(k)) {
            map_strings(child, &|s| mask_url_passwords(s));
        }
        match &mut child.kind {
            Kind::Object(_) => mask_object(child, rules),
            Kind::List(items) => {
                if rules.docker.iter().any(|r| r.is_match(k)) {
                    let args: Vec<String> = items.iter().filter_map(Value::scalar_text).collect();
                    if args.len() == items.len() {
                        let masked = mask_docker_args(&args, &rules.docker_secret_names);
                        for (item, m) in items.iter_mut().zip(masked) {
                            item.kind = Kind::String(m);
                        }
                    }
                }
                for item in items.iter_mut() {
                    mask_object(item, rules);
                }
            }
            _ => {}
        }
    }
}

fn map_strings(v: &mut Value, f: &dyn Fn(&str) -> String) {
    match &mut v.kind {
        Kind::String(s) => *s = f(s),
        Kind::List(items) => items.iter_mut().for_each(|i| map_strings(i, f)),
        Kind::Object(o) => o.values_mut().for_each(|i| map_strings(i, f)),
        _ => {}
    }
}

/// Hides the password of every `scheme://user:password@host` URL in `s` (whitespace-separated
/// words), keeping the user: `https://user:********@host/simple`.
pub fn mask_url_passwords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while !rest.is_empty() {
        let ws_end = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..ws_end]);
        rest = &rest[ws_end..];
        let word_end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        out.push_str(&mask_one_url(&rest[..word_end]));
        rest = &rest[word_end..];
    }
    out
}

fn mask_one_url(word: &str) -> String {
    let Some(scheme_end) = word.find("://") else {
        return word.to_string();
    };
    let after = &word[scheme_end + 3..];
    let authority_end = after.find(['/', '?', '#']).unwrap_or(after.len());
    let authority = &after[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return word.to_string();
    };
    let userinfo = &authority[..at];
    let Some(colon) = userinfo.find(':') else {
        return word.to_string();
    };
    format!(
        "{}://{}:********{}",
        &word[..scheme_end],
        &userinfo[..colon],
        &word[scheme_end + 3 + at..]
    )
}

/// Docker arguments with the values of secret `-e NAME=value` / `--env NAME=value` variables
/// replaced by `********`, and URL passwords hidden everywhere.
pub fn mask_docker_args(args: &[String], secret_names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = args.iter().map(|a| mask_url_passwords(a)).collect();
    let mut i = 0;
    while i < args.len() {
        let (is_flag, inline) = match args[i].as_str() {
            "-e" | "--env" => (true, None),
            a => match a.strip_prefix("--env=").or_else(|| a.strip_prefix("-e")) {
                Some(rest) if !rest.is_empty() => (true, Some(rest.to_string())),
                _ => (false, None),
            },
        };
        if is_flag {
            let (target, text) = match inline {
                Some(t) => (i, t),
                None => match args.get(i + 1) {
                    Some(t) => (i + 1, t.clone()),
                    None => break,
                },
            };
            if let Some((name, _)) = text
                .split_once('=')
                .filter(|(name, _)| secret_names.iter().any(|s| s == name))
            {
                let prefix = &args[target][..args[target].len() - text.len()];
                out[target] = format!("{prefix}{name}=********");
            }
            i = target + 1;
            continue;
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_hidden_but_users_kept() {
        assert_eq!(
            mask_url_passwords("https://bob:s3cret@pypi.example.org/simple"),
            "https://bob:********@pypi.example.org/simple"
        );
        assert_eq!(
            mask_url_passwords("https://pypi.org/simple"),
            "https://pypi.org/simple"
        );
        assert_eq!(
            mask_url_passwords("https://tok@host/x a://u:p@h"),
            "https://tok@host/x a://u:********@h"
        );
    }

    #[test]
    fn docker_env_secrets_are_hidden() {
        let args: Vec<String> = [
            "-e",
            "CLEARML_API_SECRET_KEY=abc",
            "--env=AWS_SECRET_ACCESS_KEY=xyz",
            "-e",
            "HARMLESS=1",
            "--ipc=host",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let names: Vec<String> = SECRET_ENV_NAMES.iter().map(|s| s.to_string()).collect();
        assert_eq!(
            mask_docker_args(&args, &names),
            [
                "-e",
                "CLEARML_API_SECRET_KEY=********",
                "--env=AWS_SECRET_ACCESS_KEY=********",
                "-e",
                "HARMLESS=1",
                "--ipc=host"
            ]
        );
    }
}
