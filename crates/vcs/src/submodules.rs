//! Submodules: each one checked out at the commit its parent records, through the same
//! mirror cache and credentials as the parent repository.

use super::*;

/// Initialises and checks out the submodules of `work`, recursively. Like the Python agent, a
/// submodule that fails is reported and skipped rather than failing the task.
pub(crate) fn update_submodules(settings: &VcsSettings, git: &Git, work: &Path, depth: usize) {
    if depth > MAX_SUBMODULE_DEPTH || !work.join(".gitmodules").is_file() {
        return;
    }
    let w = Loc::Work(work);
    // Copies the URLs from .gitmodules, relative ones resolved against origin (the real URL).
    if let Err(e) = git.run(None, &w.cmd(args!["submodule", "init"]), None, false) {
        git.say(&format!(
            "WARNING: git submodule init failed in {}: {}",
            work.display(),
            e.detail()
        ));
        return;
    }
    let listing = git
        .run(
            None,
            &w.cmd(args![
                "config",
                "-z",
                "--get-regexp",
                r"^submodule\..*\.url$"
            ]),
            None,
            false,
        )
        .unwrap_or_default();
    for item in listing.split('\0') {
        let Some((key, url)) = item.split_once('\n') else {
            continue;
        };
        let Some(name) = key
            .strip_prefix("submodule.")
            .and_then(|k| k.strip_suffix(".url"))
        else {
            continue;
        };
        let path = git
            .run(
                None,
                &w.cmd(args![
                    "config",
                    "-f",
                    ".gitmodules",
                    "--get",
                    format!("submodule.{name}.path")
                ]),
                None,
                false,
            )
            .unwrap_or_default();
        let path = path.trim();
        let inside = !path.is_empty()
            && Path::new(path)
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            continue;
        }
        match update_submodule(settings, git, work, name, path, url) {
            Ok(()) => update_submodules(settings, git, &work.join(path), depth + 1),
            Err(e) => git.say(&format!(
                "WARNING: submodule {path} was not checked out: {e}"
            )),
        }
    }
}

fn update_submodule(
    settings: &VcsSettings,
    git: &Git,
    work: &Path,
    name: &str,
    path: &str,
    raw_url: &str,
) -> Result<(), VcsError> {
    let git = &git.with_secrets(secrets(settings, raw_url));
    let remote = Remote::new(settings, raw_url)?;
    let w = Loc::Work(work);
    let url_key = format!("submodule.{name}.url");
    let set_url = |url: &OsString| {
        git.run(None, &w.cmd(args!["config", &url_key, url]), None, false)
            .map(drop)
            .map_err(|e| git_error(git, "config", work, e))
    };
    let update = |extra: Vec<OsString>, creds: Option<&Creds>| {
        let mut a = extra;
        a.extend(args!["submodule", "update", "--checkout", "--", path]);
        git.run(None, &w.cmd(a), creds, true)
            .map(drop)
            .map_err(|e| git_error(git, "submodule update", work, e))
    };
    if settings.cache_enabled && std::fs::create_dir_all(&settings.cache_dir).is_ok() {
        let entry = cache::entry_path(settings, &remote.url);
        if let Some(_lock) = cache::lock(&entry, settings.lock_timeout, git) {
            let recorded = recorded_commit(git, work, path)?;
            update_mirror(settings, git, &remote, &entry, Some(&recorded))?;
            let want = Wanted {
                commit: Some(recorded),
                ..Wanted::default()
            };
            resolve(git, Loc::Bare(&entry), &remote, &want)?;
            // Clone from the mirror (a local clone), then point everything at the real URL.
            set_url(&entry.clone().into_os_string())?;
            let updated = update(args!["-c", "protocol.file.allow=always"].into(), None);
            set_url(&OsString::from(&remote.url))?;
            updated?;
            return set_origin(git, &work.join(path), &remote.url);
        }
    }
    set_url(&OsString::from(&remote.url))?;
    update(Vec::new(), remote.creds.as_ref())
}

/// The commit the superproject records for the submodule at `path`.
fn recorded_commit(git: &Git, work: &Path, path: &str) -> Result<String, VcsError> {
    let out = git
        .run(
            None,
            &Loc::Work(work).cmd(args!["ls-tree", "-z", "HEAD", "--", path]),
            None,
            false,
        )
        .map_err(|e| git_error(git, "ls-tree", work, e))?;
    // "<mode> commit <sha>\t<path>\0"
    out.split('\t')
        .next()
        .and_then(|meta| {
            let mut parts = meta.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(_), Some("commit"), Some(sha)) => Some(sha.to_string()),
                _ => None,
            }
        })
        .ok_or_else(|| VcsError::Git {
            command: "ls-tree".into(),
            dir: work.to_path_buf(),
            detail: format!("{path} is not a submodule in HEAD"),
        })
}
