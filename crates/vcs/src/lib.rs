//! Gets a task's git repository into a working folder, as the Python clearml-agent does, with a
//! sturdier cache and stricter handling of credentials.
//!
//! [`checkout`] runs the `git` program (synchronous; async callers use `spawn_blocking`):
//!
//! * **Cache.** Each repository has one bare mirror at `<cache_dir>/<name>.<key>`, where `key`
//!   is the md5 of the *normalised* URL: host in lower case, no user or password, no scheme, no
//!   default port, no `.git` or slashes at the ends. So `https://h/a/b.git`, `https://u:p@h/a/b`
//!   and `git@h:a/b` share one entry (the Python agent hashes the raw URL, §13.12); a
//!   non-default port stays in the key since it can be another server. The entry is locked with
//!   an exclusive file lock (`<entry>.lock`), so agents on one host, or in containers sharing the
//!   cache, take turns. A miss clones (`git clone --bare`); a hit fetches branches and tags into
//!   it (`git fetch --prune`, `refs/heads/*` and `refs/tags/*` only: `refs/*` would also bring
//!   every pull-request ref of a forge), unless the requested commit is already there (a commit
//!   never changes; the working copy's remote branches may then be a little behind). A fetch that fails leads to one fresh clone; the old mirror is replaced only if
//!   that clone works. Without the lock within `lock_timeout` the checkout goes on without cache.
//! * **Working copy.** `dest` is deleted, then cloned from the mirror (a local clone:
//!   hard-linked objects, no network) with `--no-checkout`, `origin` is set to the real URL
//!   (without credentials) and the revision is checked out with `git checkout --force`. When a
//!   branch is known the working copy is on that branch (`-B`), not on a detached HEAD. The lock
//!   is released before submodules, which are done one by one, recursively, each through its own
//!   mirror and with the credentials and URL rewrite for its own host. A submodule that fails is
//!   reported as a warning and skipped, as in the Python agent. With the cache disabled the
//!   clone goes straight from the remote into `dest`, and submodules come from their remotes.
//! * **Reuse** (`reuse.rs`): when `dest` already is a working copy of the same `origin` with
//!   the wanted full commit id checked out under the same branch name (the slot's last task
//!   ran the same code), and it has no submodules, it is only reset (`reset --hard`,
//!   `clean -ffdx`) instead of deleted and cloned again.
//! * **Revision.** commit > tag > `origin/<branch>` > the remote's default branch (its HEAD),
//!   then `master`, then `main`. A full commit id on no branch or tag is fetched by id.
//! * **Credentials** never appear in argv, in a reported line, in an error, in a stored remote
//!   URL or in the cache: git gets them from a `GIT_ASKPASS` script in a private temp folder
//!   that reads them from variables set on that one git process. Configured credential helpers
//!   are switched off for those commands so none stores the password. The user's git config is
//!   never changed (the Python agent sets `safe.directory` globally, §13.28; we pass
//!   `-c safe.directory=*` per command). Every git process gets `GIT_TERMINAL_PROMPT=0`,
//!   `GIT_SSH_COMMAND="ssh -oBatchMode=yes"` (unless the user set one) and a null stdin.
//!
//! Library code never prints: git's output and our progress lines go to a [`Reporter`],
//! censored.

mod cache;
mod diff;
mod git;
mod local;
mod reuse;
mod submodules;
mod url;

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diff::{apply_diff, is_git_diff};
pub use local::{LocalCheckout, capture_local, relative_path, repository_root};
pub use url::{rewrite_url, strip_credentials};

use submodules::update_submodules;

use git::{Creds, Git, GitError, args};
use url::{embedded_credentials, find_credential, parse};

pub use clearml_progress::{NullReporter, Reporter, Step};

/// One user/password pair, and the host it is for (`None`: every host).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct GitCredential {
    pub user: String,
    pub pass: String,
    pub host: Option<String>,
}

impl fmt::Debug for GitCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitCredential")
            .field("user", &self.user)
            .field("pass", &"****")
            .field("host", &self.host)
            .finish()
    }
}

/// What the agent configuration says about git. [`Default`] gives the agent's defaults.
#[derive(Clone)]
pub struct VcsSettings {
    /// `agent.vcs_cache.path`, already expanded (no `~`).
    pub cache_dir: PathBuf,
    /// `agent.vcs_cache.enabled`.
    pub cache_enabled: bool,
    /// `agent.git_user`/`git_pass` (host = `agent.git_host`) first, then
    /// `agent.git.extra_credentials`; the first that matches a URL is used.
    pub credentials: Vec<GitCredential>,
    /// `agent.git_host_match_prefix`: a credential host also matches as a prefix of the URL.
    pub git_host_match_prefix: bool,
    /// `agent.translate_ssh`: ssh URLs become `<ssh_replacement_scheme>://host/path` when
    /// credentials for that URL are configured.
    pub translate_ssh: bool,
    /// `agent.translate_ssl_replacement_scheme` (or `CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME`).
    pub ssh_replacement_scheme: String,
    /// `agent.force_git_ssh_protocol`: http(s) URLs become `ssh://git@host/path`.
    pub force_git_ssh_protocol: bool,
    pub force_git_ssh_port: Option<u16>,
    pub force_git_ssh_user: Option<String>,
    /// `agent.git_host`: when set, `force_git_ssh_protocol` only applies to this host.
    pub git_host: Option<String>,
    /// `agent.git_fetch_args`. For the mirror, `--all` and `--recurse-submodules` are dropped
    /// (a bare mirror has neither other remotes nor a work tree) and `--prune` is always added.
    pub fetch_args: Vec<String>,
    /// How long to wait for another process holding a cache entry.
    pub lock_timeout: Duration,
    /// The git program.
    pub git_program: PathBuf,
    /// Extra git configuration for every command, passed through the environment
    /// (`GIT_CONFIG_KEY_n`), never argv: e.g. `("http.sslVerify", "false")`.
    pub git_config: Vec<(String, String)>,
}

impl Default for VcsSettings {
    fn default() -> Self {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
        VcsSettings {
            cache_dir: home.join(".clearml").join("vcs-cache"),
            cache_enabled: true,
            credentials: Vec::new(),
            git_host_match_prefix: false,
            translate_ssh: true,
            ssh_replacement_scheme: "https".into(),
            force_git_ssh_protocol: false,
            force_git_ssh_port: None,
            force_git_ssh_user: None,
            git_host: None,
            fetch_args: vec![
                "--all".into(),
                "--tags".into(),
                "--recurse-submodules".into(),
            ],
            lock_timeout: Duration::from_secs(300),
            git_program: PathBuf::from("git"),
            git_config: Vec::new(),
        }
    }
}

impl fmt::Debug for VcsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // git_config values may be secret (an auth header): keys only.
        let config_keys: Vec<&str> = self.git_config.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("VcsSettings")
            .field("cache_dir", &self.cache_dir)
            .field("cache_enabled", &self.cache_enabled)
            .field("credentials", &self.credentials)
            .field("git_host_match_prefix", &self.git_host_match_prefix)
            .field("translate_ssh", &self.translate_ssh)
            .field("ssh_replacement_scheme", &self.ssh_replacement_scheme)
            .field("force_git_ssh_protocol", &self.force_git_ssh_protocol)
            .field("force_git_ssh_port", &self.force_git_ssh_port)
            .field("force_git_ssh_user", &self.force_git_ssh_user)
            .field("git_host", &self.git_host)
            .field("fetch_args", &self.fetch_args)
            .field("lock_timeout", &self.lock_timeout)
            .field("git_program", &self.git_program)
            .field("git_config", &config_keys)
            .finish()
    }
}

/// The repository part of a task. Empty strings count as absent.
#[derive(Clone, Default)]
pub struct RepoSpec {
    pub url: String,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub tag: Option<String>,
}

impl fmt::Debug for RepoSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RepoSpec")
            .field("url", &strip_credentials(&self.url))
            .field("branch", &self.branch)
            .field("commit", &self.commit)
            .field("tag", &self.tag)
            .finish()
    }
}

/// What was checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoInfo {
    /// The URL git used (after the ssh/https rewrite), without credentials.
    pub url: String,
    /// The branch asked for, or the default branch when none was; `None` for a commit or tag
    /// asked for without a branch.
    pub branch: Option<String>,
    /// The full id of the checked-out commit.
    pub commit: String,
    /// `dest`.
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VcsError {
    #[error("invalid repository request: {0}")]
    InvalidSpec(String),
    #[error("cannot run {program}: {source}; install git or fix the path of the git program")]
    GitMissing {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("cloning {url} failed:\n{detail}\n{hint}")]
    Clone {
        url: String,
        detail: String,
        hint: String,
    },
    #[error("{what} not found in {url}. {hint}")]
    RevisionNotFound {
        what: String,
        url: String,
        hint: String,
    },
    #[error("git {command} failed in {}:\n{detail}", dir.display())]
    Git {
        command: String,
        dir: PathBuf,
        detail: String,
    },
    #[error("failed applying git diff: {0}")]
    Diff(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> VcsError {
    let context = context.into();
    move |source| VcsError::Io { context, source }
}

/// The mirror folder `checkout` uses for `url` (its lock file is this path plus `.lock`).
pub fn cache_path(settings: &VcsSettings, url: &str) -> PathBuf {
    let url = rewrite_url(settings, &strip_credentials(url.trim()));
    cache::entry_path(settings, &url)
}

/// The revision asked for, checked.
#[derive(Default)]
struct Wanted {
    commit: Option<String>,
    tag: Option<String>,
    branch: Option<String>,
}

impl Wanted {
    fn new(spec: &RepoSpec) -> Result<Self, VcsError> {
        fn field(name: &str, v: &Option<String>) -> Result<Option<String>, VcsError> {
            let Some(v) = v.as_deref().map(str::trim).filter(|v| !v.is_empty()) else {
                return Ok(None);
            };
            // Every value ends up as a git argument: refuse what git would read as an option.
            if v.starts_with('-') || v.chars().any(char::is_control) {
                return Err(VcsError::InvalidSpec(format!("bad {name} {v:?}")));
            }
            Ok(Some(v.to_string()))
        }
        Ok(Wanted {
            commit: field("commit", &spec.commit)?,
            tag: field("tag", &spec.tag)?,
            branch: field("branch", &spec.branch)?,
        })
    }

    fn is_default(&self) -> bool {
        self.commit.is_none() && self.tag.is_none() && self.branch.is_none()
    }
}

/// A remote as git will be given it.
struct Remote {
    /// Rewritten and credential-free.
    url: String,
    creds: Option<Creds>,
    /// For messages: the host, or a phrase for a local path.
    host: String,
}

impl Remote {
    fn new(settings: &VcsSettings, raw: &str) -> Result<Self, VcsError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(VcsError::InvalidSpec("no repository URL".into()));
        }
        if raw.starts_with('-') || raw.chars().any(char::is_control) {
            return Err(VcsError::InvalidSpec(format!(
                "bad repository URL {:?}",
                strip_credentials(raw)
            )));
        }
        let url = rewrite_url(settings, &strip_credentials(raw));
        let parsed = parse(&url);
        let creds = if parsed.is_http() {
            // A password in the task's URL wins; a user alone gives way to configured
            // credentials, as in the Python agent.
            match embedded_credentials(raw) {
                Some((user, Some(pass))) => Some(Creds { user, pass }),
                other => find_credential(settings, &url)
                    .map(|c| Creds {
                        user: c.user.clone(),
                        pass: c.pass.clone(),
                    })
                    .or(other.map(|(user, _)| Creds {
                        user,
                        pass: String::new(),
                    })),
            }
        } else {
            None
        };
        let host = parsed
            .host()
            .map_or_else(|| "the repository path".to_string(), str::to_string);
        Ok(Remote { url, creds, host })
    }

    fn hint(&self, detail: &str) -> String {
        let generic = format!(
            "Make sure the commit is pushed and the agent has credentials for {}.",
            self.host
        );
        let lower = detail.to_lowercase();
        let auth = [
            "could not read username",
            "could not read password",
            "authentication failed",
            "terminal prompts disabled",
            "returned error: 401",
            "returned error: 403",
        ]
        .iter()
        .any(|p| lower.contains(p));
        if lower.contains("host key verification failed") {
            format!(
                "The ssh host key of {} is not known: add it to the agent user's \
                 ~/.ssh/known_hosts. {generic}",
                self.host
            )
        } else if lower.contains("permission denied (publickey") {
            format!(
                "The ssh key of the agent's user was refused by {}. {generic}",
                self.host
            )
        } else if auth && self.creds.is_none() {
            format!(
                "No git credentials are configured for {}: set agent.git_user and agent.git_pass \
                 (or agent.git.extra_credentials). {generic}",
                self.host
            )
        } else if auth {
            format!(
                "The git credentials for {} were rejected. {generic}",
                self.host
            )
        } else {
            generic
        }
    }

    fn clone_error(&self, git: &Git, e: GitError) -> VcsError {
        match e {
            GitError::Spawn(source) => spawn_error(git.program(), source),
            GitError::Failed { detail } => {
                // "Cloning into <our temp folder>..." says nothing about the failure.
                let detail = detail
                    .lines()
                    .filter(|l| !l.starts_with("Cloning into"))
                    .collect::<Vec<_>>()
                    .join("\n");
                VcsError::Clone {
                    url: self.url.clone(),
                    hint: self.hint(&detail),
                    detail,
                }
            }
        }
    }
}

fn spawn_error(program: String, source: io::Error) -> VcsError {
    if source.kind() == io::ErrorKind::NotFound {
        VcsError::GitMissing { program, source }
    } else {
        VcsError::Io {
            context: format!("running {program}"),
            source,
        }
    }
}

/// A generic git failure as a [`VcsError`].
fn git_error(git: &Git, command: &str, dir: &Path, e: GitError) -> VcsError {
    match e {
        GitError::Spawn(source) => spawn_error(git.program(), source),
        GitError::Failed { detail } => VcsError::Git {
            command: command.to_string(),
            dir: dir.to_path_buf(),
            detail,
        },
    }
}

/// A repository git is pointed at: a bare mirror or a working copy.
#[derive(Clone, Copy)]
enum Loc<'p> {
    Bare(&'p Path),
    Work(&'p Path),
}

impl Loc<'_> {
    fn cmd(&self, rest: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
        let mut out: Vec<OsString> = match self {
            // --git-dir, not -C: a broken mirror must fail, not find an enclosing repository.
            Loc::Bare(p) => {
                let mut a = OsString::from("--git-dir=");
                a.push(p.as_os_str());
                vec![a]
            }
            Loc::Work(p) => args!["-C", *p].into(),
        };
        out.extend(rest);
        out
    }

    /// Where the remote's branches are.
    fn branch_prefix(&self) -> &'static str {
        match self {
            Loc::Bare(_) => "refs/heads/",
            Loc::Work(_) => "refs/remotes/origin/",
        }
    }
}

/// Checks out `spec` into `dest` (deleted first if it exists, unless it can be reused as it
/// is) and returns what was checked out.
/// See the crate documentation for the steps.
pub fn checkout(
    settings: &VcsSettings,
    spec: &RepoSpec,
    dest: &Path,
    reporter: &dyn Reporter,
) -> Result<RepoInfo, VcsError> {
    let _step =
        clearml_progress::StepGuard::start(reporter, Step::Clone, &strip_credentials(&spec.url));
    let want = Wanted::new(spec)?;
    let remote = Remote::new(settings, &spec.url)?;
    let git = Git::new(
        settings.git_program.as_os_str(),
        &settings.git_config,
        reporter,
        secrets(settings, &spec.url),
    );
    if let Some(info) = reuse::reuse_work_tree(&git, &remote, &want, dest) {
        return Ok(info);
    }
    prepare_dest(dest)?;
    let cached = if settings.cache_enabled {
        via_cache(settings, &git, &remote, &want, dest)?
    } else {
        None
    };
    let (sha, branch) = match cached {
        Some(found) => found,
        None => direct_clone(&git, &remote, &want, dest)?,
    };
    let commit = finish_checkout(&git, dest, &sha, branch.as_deref())?;
    git.say(&format!(
        "checked out {commit} ({})",
        branch.as_deref().unwrap_or("detached")
    ));
    update_submodules(settings, &git, dest, 0);
    Ok(RepoInfo {
        url: remote.url,
        branch,
        commit,
        root: dest.to_path_buf(),
    })
}

/// Every password we may hand to git, for censoring.
fn secrets(settings: &VcsSettings, url: &str) -> Vec<String> {
    let mut out: Vec<String> = settings
        .credentials
        .iter()
        .map(|c| c.pass.clone())
        .collect();
    if let Some((_, Some(pass))) = embedded_credentials(url) {
        out.push(pass);
    }
    out
}

fn prepare_dest(dest: &Path) -> Result<(), VcsError> {
    match dest.symlink_metadata() {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(dest).map_err(io_err(format!("removing {}", dest.display())))?
        }
        Ok(_) => {
            std::fs::remove_file(dest).map_err(io_err(format!("removing {}", dest.display())))?
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(format!("checking {}", dest.display()))(e)),
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(io_err(format!("creating {}", parent.display())))?;
    }
    Ok(())
}

fn remove_path(path: &Path) -> Result<(), VcsError> {
    let result = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    };
    result.map_err(io_err(format!("removing {}", path.display())))
}

/// The cached path: lock, update the mirror, resolve the revision there, clone `dest` from it.
/// `Ok(None)`: the cache could not be used; the caller clones directly.
fn via_cache(
    settings: &VcsSettings,
    git: &Git,
    remote: &Remote,
    want: &Wanted,
    dest: &Path,
) -> Result<Option<(String, Option<String>)>, VcsError> {
    if let Err(e) = std::fs::create_dir_all(&settings.cache_dir) {
        git.say(&format!(
            "cannot create the repository cache {}: {e}; cloning without it",
            settings.cache_dir.display()
        ));
        return Ok(None);
    }
    let entry = cache::entry_path(settings, &remote.url);
    let Some(_lock) = cache::lock(&entry, settings.lock_timeout, git) else {
        git.say("cloning without the repository cache");
        return Ok(None);
    };
    let existed = update_mirror(settings, git, remote, &entry, want.commit.as_deref())?;
    if existed && want.is_default() {
        refresh_default_branch(git, remote, &entry);
    }
    let found = resolve(git, Loc::Bare(&entry), remote, want)?;
    let clone = git.run(
        None,
        &args![
            "-c",
            "protocol.file.allow=always",
            "clone",
            "--quiet",
            "--no-checkout",
            "--local",
            "--",
            &entry,
            dest
        ],
        None,
        true,
    );
    clone.map_err(|e| git_error(git, "clone", &entry, e))?;
    set_origin(git, dest, &remote.url)?;
    Ok(Some(found))
}

fn set_origin(git: &Git, work: &Path, url: &str) -> Result<(), VcsError> {
    git.run(
        None,
        &Loc::Work(work).cmd(args!["remote", "set-url", "origin", url]),
        None,
        false,
    )
    .map(drop)
    .map_err(|e| git_error(git, "remote set-url", work, e))
}

/// Makes the mirror at `entry` current. Returns whether it existed before (a fresh clone has
/// just been made otherwise).
fn update_mirror(
    settings: &VcsSettings,
    git: &Git,
    remote: &Remote,
    entry: &Path,
    commit: Option<&str>,
) -> Result<bool, VcsError> {
    if entry.symlink_metadata().is_ok() && !is_bare_repo(git, entry) {
        git.say(&format!("removing broken cache entry {}", entry.display()));
        remove_path(entry)?;
    }
    if entry.symlink_metadata().is_err() {
        git.say(&format!("cloning {} into the cache", remote.url));
        clone_mirror(git, remote, entry)?;
        return Ok(false);
    }
    git.say(&format!("Using cached repository {}", entry.display()));
    let cached_commit = |c: &str| rev_parse(git, Loc::Bare(entry), &format!("{c}^{{commit}}"));
    if let Some(c) = commit.filter(|c| is_full_sha(c))
        && cached_commit(c).is_some()
    {
        git.say(&format!("commit {c} is already in the cache; not fetching"));
        return Ok(true);
    }
    git.say(&format!("fetching {}", remote.url));
    let Err(e) = fetch_mirror(settings, git, remote, entry) else {
        return Ok(true);
    };
    let detail = e.detail();
    if let Some(c) = commit
        && cached_commit(c).is_some()
    {
        git.say(&format!(
            "WARNING: fetching failed ({detail}); using commit {c} from the cache"
        ));
        return Ok(true);
    }
    git.say(&format!(
        "fetching into the cache failed: {detail}; cloning the repository again"
    ));
    let fresh = cache::sibling(entry, ".new");
    remove_path(&fresh)?;
    if let Err(e) = clone_mirror(git, remote, &fresh) {
        // Keep the old mirror: the remote is more likely down than the mirror broken.
        remove_path(&fresh)?;
        return Err(e);
    }
    remove_path(entry)?;
    std::fs::rename(&fresh, entry).map_err(io_err(format!("renaming {}", fresh.display())))?;
    Ok(false)
}

fn is_bare_repo(git: &Git, entry: &Path) -> bool {
    git.run(
        None,
        &Loc::Bare(entry).cmd(args!["rev-parse", "--is-bare-repository"]),
        None,
        false,
    )
    .is_ok_and(|out| out.trim() == "true")
}

/// `git clone --bare` into a temporary sibling, renamed into place when complete, so an
/// interrupted clone never looks like a mirror.
fn clone_mirror(git: &Git, remote: &Remote, target: &Path) -> Result<(), VcsError> {
    let tmp = cache::sibling(target, ".tmp");
    remove_path(&tmp)?;
    let result = git.run(
        None,
        &args!["clone", "--bare", "--", &remote.url, &tmp],
        remote.creds.as_ref(),
        true,
    );
    if let Err(e) = result {
        remove_path(&tmp)?;
        return Err(remote.clone_error(git, e));
    }
    std::fs::rename(&tmp, target).map_err(io_err(format!("renaming {}", tmp.display())))
}

fn fetch_mirror(
    settings: &VcsSettings,
    git: &Git,
    remote: &Remote,
    entry: &Path,
) -> Result<(), GitError> {
    // Auto-gc runs in the foreground, so it is done while we hold the lock.
    let mut a = Vec::from(args!["-c", "gc.autoDetach=false", "fetch", "--prune"]);
    for arg in &settings.fetch_args {
        let skip = arg == "--all"
            || arg == "--multiple"
            || arg == "--prune"
            || arg == "-p"
            || arg.starts_with("--recurse-submodules")
            || arg.starts_with("--no-recurse-submodules");
        if !skip {
            a.push(arg.into());
        }
    }
    a.extend(args![
        "--",
        &remote.url,
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*"
    ]);
    git.run(None, &Loc::Bare(entry).cmd(a), remote.creds.as_ref(), true)
        .map(drop)
}

/// Points the mirror's HEAD at the remote's current default branch (it may have changed since
/// the clone). Best effort: the old HEAD stays on any failure.
fn refresh_default_branch(git: &Git, remote: &Remote, entry: &Path) {
    let Ok(out) = git.run(
        None,
        &args!["ls-remote", "--symref", "--", &remote.url, "HEAD"],
        remote.creds.as_ref(),
        false,
    ) else {
        return;
    };
    let target = out.lines().find_map(|l| {
        l.strip_prefix("ref: ")
            .and_then(|r| r.split_once('\t'))
            .map(|(r, _)| r.to_string())
    });
    if let Some(r) = target.filter(|r| r.starts_with("refs/heads/"))
        && rev_parse(git, Loc::Bare(entry), &r).is_some()
    {
        // Best effort, as said above.
        let _ = git.run(
            None,
            &Loc::Bare(entry).cmd(args!["symbolic-ref", "HEAD", &r]),
            None,
            false,
        );
    }
}

fn rev_parse(git: &Git, loc: Loc, rev: &str) -> Option<String> {
    let out = git
        .run(
            None,
            &loc.cmd(args!["rev-parse", "--verify", "--quiet", rev]),
            None,
            false,
        )
        .ok()?;
    let sha = out.trim();
    (!sha.is_empty()).then(|| sha.to_string())
}

fn is_full_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.chars().all(|c| c.is_ascii_hexdigit())
}

/// The commit to check out, and the branch to name it by.
fn resolve(
    git: &Git,
    loc: Loc,
    remote: &Remote,
    want: &Wanted,
) -> Result<(String, Option<String>), VcsError> {
    let not_found = |what: String| VcsError::RevisionNotFound {
        what,
        url: remote.url.clone(),
        hint: remote.hint(""),
    };
    if let Some(c) = &want.commit {
        let rev = format!("{c}^{{commit}}");
        if let Some(sha) = rev_parse(git, loc, &rev) {
            return Ok((sha, want.branch.clone()));
        }
        if is_full_sha(c) {
            // Not on any branch or tag; servers that allow it hand it out by id.
            git.say(&format!(
                "commit {c} is on no branch or tag; fetching it by id"
            ));
            // In the mirror a ref keeps the commit from garbage collection; a working copy
            // needs no stray ref.
            let keep = match loc {
                Loc::Bare(_) => format!("+{c}:refs/clearml/keep/{c}"),
                Loc::Work(_) => c.clone(),
            };
            let fetched = git.run(
                None,
                &loc.cmd(args!["fetch", "--quiet", "--", &remote.url, keep]),
                remote.creds.as_ref(),
                false,
            );
            if fetched.is_ok()
                && let Some(sha) = rev_parse(git, loc, &rev)
            {
                return Ok((sha, want.branch.clone()));
            }
        }
        return Err(not_found(format!("commit {c}")));
    }
    if let Some(t) = &want.tag {
        return rev_parse(git, loc, &format!("refs/tags/{t}^{{commit}}"))
            .map(|sha| (sha, want.branch.clone()))
            .ok_or_else(|| not_found(format!("tag {t}")));
    }
    let prefix = loc.branch_prefix();
    if let Some(b) = &want.branch {
        let mut names = vec![b.as_str()];
        // Tasks sometimes record the remote-tracking name.
        for p in ["refs/heads/", "origin/", "refs/remotes/origin/"] {
            if let Some(short) = b.strip_prefix(p) {
                names.push(short);
            }
        }
        for name in names {
            if let Some(sha) = rev_parse(git, loc, &format!("{prefix}{name}^{{commit}}")) {
                return Ok((sha, Some(name.to_string())));
            }
        }
        return Err(not_found(format!("branch {b}")));
    }
    let head_ref = match loc {
        Loc::Bare(_) => "HEAD",
        Loc::Work(_) => "refs/remotes/origin/HEAD",
    };
    let head = git
        .run(
            None,
            &loc.cmd(args!["symbolic-ref", "--quiet", head_ref]),
            None,
            false,
        )
        .ok()
        .and_then(|out| out.trim().strip_prefix(prefix).map(str::to_string));
    for name in head.into_iter().chain(["master".into(), "main".into()]) {
        if let Some(sha) = rev_parse(git, loc, &format!("{prefix}{name}^{{commit}}")) {
            return Ok((sha, Some(name)));
        }
    }
    Err(not_found(
        "a default branch (the remote's HEAD, master or main)".into(),
    ))
}

fn direct_clone(
    git: &Git,
    remote: &Remote,
    want: &Wanted,
    dest: &Path,
) -> Result<(String, Option<String>), VcsError> {
    git.say(&format!("cloning {} into {}", remote.url, dest.display()));
    git.run(
        None,
        &args!["clone", "--no-checkout", "--", &remote.url, dest],
        remote.creds.as_ref(),
        true,
    )
    .map_err(|e| remote.clone_error(git, e))?;
    resolve(git, Loc::Work(dest), remote, want)
}

/// Checks out `sha` in `dest`, on `branch` when it is a valid branch name, and returns HEAD.
fn finish_checkout(
    git: &Git,
    dest: &Path,
    sha: &str,
    branch: Option<&str>,
) -> Result<String, VcsError> {
    let work = Loc::Work(dest);
    let named = branch.filter(|b| {
        git.run(
            None,
            &work.cmd(args!["check-ref-format", "--branch", *b]),
            None,
            false,
        )
        .is_ok()
    });
    let a: Vec<OsString> = match named {
        Some(b) => args!["checkout", "--quiet", "--force", "-B", b, sha].into(),
        None => args!["checkout", "--quiet", "--force", "--detach", sha].into(),
    };
    git.run(None, &work.cmd(a), None, true)
        .map_err(|e| git_error(git, "checkout", dest, e))?;
    rev_parse(git, work, "HEAD").ok_or_else(|| VcsError::Git {
        command: "rev-parse HEAD".into(),
        dir: dest.to_path_buf(),
        detail: "no commit checked out".into(),
    })
}

/// Nesting limit for submodules, against pathological repositories.
const MAX_SUBMODULE_DEPTH: usize = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_option_like_values() {
        let spec = RepoSpec {
            url: "https://h/r".into(),
            branch: Some("--upload-pack=x".into()),
            ..RepoSpec::default()
        };
        assert!(matches!(Wanted::new(&spec), Err(VcsError::InvalidSpec(_))));
        assert!(matches!(
            Remote::new(&VcsSettings::default(), "--upload-pack=touch /tmp/x"),
            Err(VcsError::InvalidSpec(_))
        ));
        let empty = RepoSpec {
            url: "https://h/r".into(),
            commit: Some("  ".into()),
            ..RepoSpec::default()
        };
        assert!(Wanted::new(&empty).is_ok_and(|w| w.is_default()));
    }

    #[test]
    fn credentials_choice() {
        let settings = VcsSettings {
            credentials: vec![
                GitCredential {
                    user: "a".into(),
                    pass: "pa".into(),
                    host: Some("gitlab.example.com".into()),
                },
                GitCredential {
                    user: "b".into(),
                    pass: "pb".into(),
                    host: None,
                },
            ],
            ..VcsSettings::default()
        };
        let user = |url: &str| {
            Remote::new(&settings, url)
                .ok()
                .and_then(|r| r.creds)
                .map(|c| c.user)
        };
        assert_eq!(
            user("https://GitLab.example.com/x/y.git").as_deref(),
            Some("a")
        );
        assert_eq!(user("https://github.com/x/y.git").as_deref(), Some("b"));
        assert_eq!(user("https://u:p@github.com/x/y.git").as_deref(), Some("u"));
        assert_eq!(user("https://tok@github.com/x/y.git").as_deref(), Some("b"));
        assert_eq!(user("/srv/repo"), None);
    }
}
