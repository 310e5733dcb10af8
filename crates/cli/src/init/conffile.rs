//! The configuration file: which one, what a new one holds, and adding agent settings to an
//! existing one without changing a byte of what is there.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clearml_config::{Config, Env, LoadOptions};
use clearml_hocon::{Options, Value, parse_path};

use super::section::{Presence, missing_section, presence};

const AGENT_DEFAULTS: &str = include_str!("../../../config/defaults/agent.conf");
const SDK_DEFAULTS: &str = include_str!("../../../config/defaults/sdk.conf");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Missing,
    /// An empty file: nothing to lose, so the wizard writes it (as the Python agent does).
    Empty,
    Existing,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub path: PathBuf,
    pub state: State,
}

/// The file to write: `--config-file`, else `CLEARML_CONFIG_FILE` (or `TRAINS_CONFIG_FILE`),
/// else `~/clearml.conf`, unless only `~/trains.conf` holds a configuration (the agent reads
/// both, so an existing one of either is the file to extend).
pub fn locate(opts: &LoadOptions) -> anyhow::Result<Target> {
    let env = &opts.env;
    let explicit = opts.config_file.clone().or_else(|| {
        env.first(&["CLEARML_CONFIG_FILE", "TRAINS_CONFIG_FILE"])
            .map(|(_, v)| expand_home(v, env))
    });
    if let Some(path) = explicit {
        let path = absolute(&path)?;
        return Ok(Target {
            state: state_of(&path)?,
            path,
        });
    }
    let home = env
        .get("HOME")
        .context("HOME is not set, so there is no ~/clearml.conf: set CLEARML_CONFIG_FILE to the file to write")?;
    let clearml = Path::new(home).join("clearml.conf");
    let trains = Path::new(home).join("trains.conf");
    for path in [&clearml, &trains] {
        if state_of(path)? == State::Existing {
            return Ok(Target {
                path: path.clone(),
                state: State::Existing,
            });
        }
    }
    Ok(Target {
        state: state_of(&clearml)?,
        path: clearml,
    })
}

fn state_of(path: &Path) -> anyhow::Result<State> {
    match fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::Missing),
        Err(e) => Err(e).with_context(|| format!("cannot look at {}", path.display())),
        Ok(m) if !m.is_file() => bail!("{} exists but is not a file", path.display()),
        Ok(m) if m.len() == 0 => Ok(State::Empty),
        Ok(_) => Ok(State::Existing),
    }
}

fn expand_home(p: &str, env: &Env) -> PathBuf {
    PathBuf::from(env.expand_user(p))
}

fn absolute(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).context("cannot read the current directory")
}

/// A HOCON string literal (JSON's quoting is valid HOCON).
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Everything the wizard learned.
#[derive(Clone, Debug)]
pub struct Answers {
    pub web: String,
    pub api: String,
    pub files: String,
    pub access_key: String,
    pub secret_key: String,
    pub agent: AgentAnswers,
}

/// The agent settings the wizard asks about; `None` where there is no answer.
#[derive(Clone, Debug, Default)]
pub struct AgentAnswers {
    pub git_user: Option<String>,
    pub git_pass: Option<String>,
    pub extra_index_urls: Option<Vec<String>>,
}

const GIT_COMMENT: &str = "\
# Git credentials for cloning task repositories over https (a personal access token can
# stand in for the password). Leave both empty to clone with your SSH keys.
";

const INDEX_COMMENT: &str = "\
# More Python package indexes, searched besides PyPI when a task's packages are installed,
# for example [\"https://pypi.example.org/simple\"]
";

const AGENT_INTRO: &str = "\
Every agent setting with its default value: change what you need. The variable
CLEARML_AGENT__AGENT__<KEY> (for example CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL=true)
overrides a key without editing this file.";

const SDK_INTRO: &str = "\
Settings of the ClearML SDK inside the tasks, with their default values.";

fn index_list(urls: &[String]) -> String {
    if urls.is_empty() {
        return "agent.package_manager.extra_index_url: []\n".into();
    }
    let mut s = "agent.package_manager.extra_index_url: [\n".to_string();
    for u in urls {
        s.push_str(&format!("    {},\n", quoted(u)));
    }
    s.push_str("]\n");
    s
}

/// What a new file holds: the api section, the answers about git and package indexes, then
/// the commented agent and sdk defaults.
pub fn render_new(a: &Answers) -> anyhow::Result<String> {
    let mut s = String::from("# ClearML agent configuration, written by `clearml-agent init`.\n");
    s.push_str("api {\n");
    s.push_str(
        "    # The API server (a self-hosted server serves it on port 8008); not the web app.\n",
    );
    s.push_str(&format!("    api_server: {}\n", quoted(&a.api)));
    s.push_str("    # The web app (self-hosted: port 8080)\n");
    s.push_str(&format!("    web_server: {}\n", quoted(&a.web)));
    s.push_str("    # Where artifacts and models are uploaded (self-hosted: port 8081)\n");
    s.push_str(&format!("    files_server: {}\n", quoted(&a.files)));
    s.push_str(
        "    # Keys are made in the web app: Settings > Workspace > Create new credentials.\n",
    );
    s.push_str(
        "    # CLEARML_API_ACCESS_KEY and CLEARML_API_SECRET_KEY, when set, are used instead.\n",
    );
    s.push_str(&format!(
        "    credentials {{\"access_key\": {}, \"secret_key\": {}}}\n",
        quoted(&a.access_key),
        quoted(&a.secret_key)
    ));
    s.push_str("}\n\n");
    let answers = agent_answers_text(&a.agent, true, &|_| false);
    s.push_str(&answers);
    let tree = parse_text(&s, "the new configuration")?;
    let present = |p: &[String]| presence(&tree, p);
    for (name, defaults, intro) in [
        ("agent", AGENT_DEFAULTS, AGENT_INTRO),
        ("sdk", SDK_DEFAULTS, SDK_INTRO),
    ] {
        let section = missing_section(name, defaults, intro, &present)
            .map_err(|e| anyhow::anyhow!("cannot read the built-in {name} defaults: {e}"))?;
        if let Some(section) = section {
            if !s.ends_with("\n\n") {
                s.push('\n');
            }
            s.push_str(&section);
        }
    }
    Ok(s)
}

/// The git and index settings, each only where `has` says the file lacks it. With `reveal`
/// false a git password is left out (for text shown on the screen).
fn agent_answers_text(a: &AgentAnswers, reveal: bool, has: &dyn Fn(&str) -> bool) -> String {
    let mut s = String::new();
    let user = a.git_user.as_deref().unwrap_or_default();
    let pass = a.git_pass.as_deref().unwrap_or_default();
    let mut git = String::new();
    if !has("agent.git_user") {
        git.push_str(&format!("agent.git_user: {}\n", quoted(user)));
    }
    if !has("agent.git_pass") {
        if reveal || pass.is_empty() {
            git.push_str(&format!("agent.git_pass: {}\n", quoted(pass)));
        } else {
            git.push_str("agent.git_pass: \"\"  # your git password or token goes here\n");
        }
    }
    if !git.is_empty() {
        s.push_str(GIT_COMMENT);
        s.push_str(&git);
        s.push('\n');
    }
    if !has("agent.package_manager.extra_index_url") {
        s.push_str(INDEX_COMMENT);
        s.push_str(&index_list(
            a.extra_index_urls.as_deref().unwrap_or_default(),
        ));
        s.push('\n');
    }
    s
}

fn parse_text(text: &str, source: &str) -> anyhow::Result<Value> {
    Options::with_env(|_| None)
        .parse_str(text, source, None)
        .map_err(|e| anyhow::anyhow!("{source} does not read back: {e}"))
}

/// Writes a new file with mode 0600: into a temporary file beside it, checked to load as a
/// configuration, then moved into place (never over a file that appeared meanwhile).
pub fn write_new(target: &Target, text: &str, env: &Env) -> anyhow::Result<()> {
    let dir = target
        .path
        .parent()
        .context("the configuration file has no folder")?;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // tempfile creates the file readable by its owner only.
    let mut tmp = tempfile::Builder::new()
        .prefix(".clearml.conf.")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(text.as_bytes())
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    let mut check_env = Env::default();
    if let Some(home) = env.get("HOME") {
        check_env.set("HOME", home);
    }
    let config = Config::load(&LoadOptions {
        config_file: Some(tmp.path().to_path_buf()),
        env: check_env,
    })
    .context("the new configuration does not load")?;
    config.api().context("the new configuration")?;
    config.agent().context("the new configuration")?;
    let file = match target.state {
        State::Empty => tmp.persist(&target.path).map_err(|e| e.error),
        _ => tmp.persist_noclobber(&target.path).map_err(|e| e.error),
    }
    .with_context(|| format!("cannot create {}", target.path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", target.path.display()))?;
    Ok(())
}

/// An existing file as read at the start, to be extended.
pub struct Existing {
    pub path: PathBuf,
    pub bytes: Vec<u8>,
    pub tree: Value,
}

impl Existing {
    pub fn read(path: &Path, env: &Env) -> anyhow::Result<Existing> {
        let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| anyhow::anyhow!("{} is not UTF-8 text: {e}", path.display()))?;
        let tree = Options::with_env(|n| env.get(n).map(str::to_string))
            .parse_str(text, &path.display().to_string(), path.parent())
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!(
                    "cannot read {} (fix it first; nothing was changed)",
                    path.display()
                )
            })?;
        Ok(Existing {
            path: path.to_path_buf(),
            bytes,
            tree,
        })
    }

    fn has(&self, key: &str) -> bool {
        parse_path(key).is_ok_and(|p| presence(&self.tree, &p) != Presence::Absent)
    }

    /// Whether the file lacks one of the settings the wizard asks about.
    pub fn lacks(&self, key: &str) -> bool {
        !self.has(key)
    }

    /// The text to add: the answers the file lacks, then the agent defaults it lacks. `None`
    /// when it has all of them. With `reveal` false, a git password is left out (the text is
    /// for the screen).
    pub fn additions(&self, a: &AgentAnswers, reveal: bool) -> anyhow::Result<Option<String>> {
        let answers = agent_answers_text(a, reveal, &|k| self.has(k));
        let mut tree = self.tree.clone();
        tree.merge(parse_text(&answers, "the added settings")?);
        let present = |p: &[String]| presence(&tree, p);
        let section = missing_section("agent", AGENT_DEFAULTS, AGENT_INTRO, &present)
            .map_err(|e| anyhow::anyhow!("cannot read the built-in agent defaults: {e}"))?;
        if answers.is_empty() && section.is_none() {
            return Ok(None);
        }
        let mut s =
            String::from("# ---- ClearML agent settings (added by `clearml-agent init`) ----\n");
        s.push_str(&answers);
        if let Some(section) = section {
            s.push_str(&section);
        }
        Ok(Some(s))
    }

    /// What the file will hold: its bytes unchanged, then the addition.
    pub fn with_addition(&self, addition: &str) -> Vec<u8> {
        let mut out = self.bytes.clone();
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.push(b'\n');
        }
        out.push(b'\n');
        out.extend_from_slice(addition.as_bytes());
        out
    }

    /// Checks the extended file loads, makes a backup (mode 0600: the file holds keys), then
    /// appends. Returns the backup's path. Appending in place keeps the file's owner, mode and
    /// links.
    pub fn append(&self, addition: &str, env: &Env) -> anyhow::Result<PathBuf> {
        let new = self.with_addition(addition);
        let text = String::from_utf8_lossy(&new);
        Options::with_env(|n| env.get(n).map(str::to_string))
            .parse_str(&text, &self.path.display().to_string(), self.path.parent())
            .map_err(|e| {
                anyhow::anyhow!("the extended file would not load ({e}); nothing was changed")
            })?;
        let now =
            fs::read(&self.path).with_context(|| format!("cannot read {}", self.path.display()))?;
        if now != self.bytes {
            bail!(
                "{} changed while the wizard ran; nothing was changed",
                self.path.display()
            );
        }
        let backup = self.backup()?;
        let mut f = OpenOptions::new()
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        f.write_all(&new[self.bytes.len()..])
            .and_then(|()| f.sync_all())
            .with_context(|| {
                format!(
                    "cannot write {} (the original is in {})",
                    self.path.display(),
                    backup.display()
                )
            })?;
        Ok(backup)
    }

    fn backup(&self) -> anyhow::Result<PathBuf> {
        let name = self
            .path
            .file_name()
            .context("the configuration file has no name")?
            .to_string_lossy()
            .into_owned();
        for n in 0..1000 {
            let candidate = if n == 0 {
                self.path.with_file_name(format!("{name}.bak"))
            } else {
                self.path.with_file_name(format!("{name}.bak.{n}"))
            };
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&candidate);
            match file {
                Ok(mut f) => {
                    f.write_all(&self.bytes)
                        .and_then(|()| f.sync_all())
                        .with_context(|| format!("cannot write {}", candidate.display()))?;
                    return Ok(candidate);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create {}", candidate.display()));
                }
            }
        }
        bail!("too many backups of {} already", self.path.display())
    }

    /// Whether users other than the owner may read the file.
    pub fn readable_by_others(&self) -> Option<u32> {
        let mode = fs::metadata(&self.path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then_some(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers() -> Answers {
        Answers {
            web: "https://app.example.org".into(),
            api: "https://api.example.org".into(),
            files: "https://files.example.org".into(),
            access_key: "AK".into(),
            secret_key: "S\"E\\C".into(),
            agent: AgentAnswers {
                git_user: Some("me".into()),
                git_pass: Some("pw".into()),
                extra_index_urls: Some(vec!["https://pypi.example.org/simple".into()]),
            },
        }
    }

    #[test]
    fn a_new_file_reads_back_with_the_answers_and_all_defaults() {
        let text = render_new(&answers()).expect("renders");
        let v = parse_text(&text, "t").expect("parses");
        let s = |k: &str| v.get_str(k).ok().flatten();
        assert_eq!(
            s("api.api_server").as_deref(),
            Some("https://api.example.org")
        );
        assert_eq!(s("api.credentials.secret_key").as_deref(), Some("S\"E\\C"));
        assert_eq!(s("agent.git_pass").as_deref(), Some("pw"));
        assert_eq!(
            v.get_str_list("agent.package_manager.extra_index_url")
                .ok()
                .flatten(),
            Some(vec!["https://pypi.example.org/simple".to_string()])
        );
        // The defaults that follow keep the answers (objects merge).
        assert_eq!(s("agent.package_manager.type").as_deref(), Some("uv"));
        assert!(v.get("sdk.storage.cache").is_some());
    }

    #[test]
    fn additions_skip_what_the_file_has_and_hide_the_password_on_screen() {
        let tree = parse_text("api { x: 1 }\nagent.git_user: someone\n", "t").expect("parses");
        let existing = Existing {
            path: PathBuf::from("/nowhere/clearml.conf"),
            bytes: b"api { x: 1 }\nagent.git_user: someone".to_vec(),
            tree,
        };
        let a = answers().agent;
        let shown = existing.additions(&a, false).expect("ok").expect("some");
        assert!(!shown.contains("agent.git_user"));
        assert!(shown.contains("agent.git_pass: \"\""));
        assert!(!shown.contains("pw"));
        let written = existing.additions(&a, true).expect("ok").expect("some");
        let new = existing.with_addition(&written);
        assert!(new.starts_with(&existing.bytes));
        let v = parse_text(&String::from_utf8_lossy(&new), "t").expect("parses");
        assert_eq!(
            v.get_str("agent.git_user").ok().flatten().as_deref(),
            Some("someone")
        );
        assert_eq!(
            v.get_str("agent.git_pass").ok().flatten().as_deref(),
            Some("pw")
        );
        let again = Existing {
            path: existing.path.clone(),
            bytes: new,
            tree: v,
        };
        assert!(again.additions(&a, true).expect("ok").is_none());
    }
}
