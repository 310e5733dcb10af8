//! The git state of a local checkout, as `task create` stores it on a task: where an agent can
//! clone the code from, the commit to check out, and the changes on top of it (uncommitted
//! edits, commits not pushed, an untracked entry script) as one diff the agent applies with
//! [`apply_diff`](crate::apply_diff).

use std::path::{Component, Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{Reporter, VcsError, strip_credentials};

/// What [`capture_local`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalCheckout {
    /// Where an agent clones from: `origin` without credentials, or the local path when
    /// there is no `origin`.
    pub repository: String,
    /// The commit to check out: `HEAD` when it is on a remote branch, else where it branched
    /// off its upstream.
    pub commit: String,
    pub branch: Option<String>,
    /// Everything between `commit` and the working tree, for `git apply`.
    pub diff: String,
}

/// The diff options that make `git apply` on the agent side work whatever the user's git
/// configuration says.
const DIFF_OPTS: &[&str] = &[
    "diff",
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--submodule=diff",
];

fn git_raw(dir: &Path, args: &[&str]) -> Result<Output, VcsError> {
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| VcsError::GitMissing {
            program: "git".into(),
            source,
        })
}

/// Runs git in `dir`; `Ok(None)` when git ran and failed.
fn git_out(dir: &Path, args: &[&str]) -> Result<Option<String>, VcsError> {
    let out = git_raw(dir, args)?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()))
}

/// The top folder of the git work tree `dir` is in (absolute, symlinks resolved), or `None`
/// when it is in none.
pub fn repository_root(dir: &Path) -> Result<Option<PathBuf>, VcsError> {
    let Some(top) = git_out(dir, &["rev-parse", "--show-toplevel"])? else {
        return Ok(None);
    };
    let top = std::path::absolute(Path::new(&top)).map_err(|source| VcsError::Io {
        context: format!("cannot resolve {top}"),
        source,
    })?;
    Ok(Some(std::fs::canonicalize(&top).unwrap_or(top)))
}

/// `path` relative to `base` (both absolute, canonical), with `..` where needed; `.` when
/// they are the same.
pub fn relative_path(path: &Path, base: &Path) -> String {
    let p: Vec<Component> = path.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = p.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = vec!["..".to_string(); b.len() - common];
    parts.extend(
        p[common..]
            .iter()
            .map(|c| c.as_os_str().to_string_lossy().into_owned()),
    );
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn diff_text(out: &Output, what: &str, reporter: &dyn Reporter) -> String {
    match String::from_utf8(out.stdout.clone()) {
        Ok(t) => t,
        Err(_) => {
            reporter.line(&format!(
                "warning: {what} is not UTF-8 text; invalid bytes were replaced"
            ));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    }
}

/// A remote URL that is a relative local path (`git remote add origin ../x`) made absolute,
/// since the agent clones from elsewhere.
fn resolve_local_url(root: &Path, url: &str) -> String {
    let scp_like = url
        .split_once(':')
        .is_some_and(|(host, _)| !host.contains('/') && host.len() > 1);
    if url.contains("://") || scp_like || Path::new(url).is_absolute() {
        return url.to_string();
    }
    let p = root.join(url);
    std::fs::canonicalize(&p).unwrap_or(p).display().to_string()
}

/// The git state of the work tree at `root` (from [`repository_root`]). `entry_file`, when
/// git does not track it, is added to the diff as a new file. Notes on what is stored and why
/// (no `origin`, commits not pushed, credentials left out) go to `reporter`, one line each.
pub fn capture_local(
    root: &Path,
    entry_file: Option<&Path>,
    reporter: &dyn Reporter,
) -> Result<LocalCheckout, VcsError> {
    let head = git_out(root, &["rev-parse", "HEAD"])?.ok_or_else(|| {
        VcsError::InvalidSpec(format!(
            "the git repository {} has no commit yet; commit your code first",
            root.display()
        ))
    })?;
    let local_branch = git_out(root, &["rev-parse", "--abbrev-ref", "HEAD"])?
        .filter(|b| b != "HEAD" && !b.is_empty());
    let origin =
        git_out(root, &["config", "--get", "remote.origin.url"])?.filter(|u| !u.is_empty());

    // Which commit the agent can check out, and the diff from it to the working tree.
    let (repository, commit, branch) = match origin {
        None => {
            reporter.line(&format!(
                "note: {} has no remote `origin`: the task points at the local path, so only agents on this machine can clone it",
                root.display()
            ));
            (root.display().to_string(), head.clone(), local_branch)
        }
        Some(url) => {
            let full = resolve_local_url(root, &url);
            // Tokens in the URL must not be stored on the task: the agent brings its own git
            // credentials (as the SDK does).
            let url = strip_credentials(&full);
            if url != full {
                reporter.line("note: the credentials in the origin URL are not stored on the task");
            }
            let pushed = git_out(root, &["branch", "-r", "--contains", "HEAD"])?
                .is_some_and(|o| !o.is_empty());
            let upstream = git_out(
                root,
                &["rev-parse", "--abbrev-ref", "--symbolic-full-name", "@{u}"],
            )?
            .filter(|u| !u.is_empty());
            if pushed {
                (url, head.clone(), local_branch)
            } else if let Some(up) = upstream {
                // Local commits not pushed: start from where they branched off the upstream,
                // and carry them in the diff.
                let base =
                    git_out(root, &["merge-base", "HEAD", &up])?.unwrap_or_else(|| head.clone());
                if base != head {
                    reporter.line(&format!(
                        "note: commits not pushed to {up} are stored in the task's diff on top of {base}"
                    ));
                }
                let branch = up.split_once('/').map(|(_, b)| b.to_string());
                (url, base, branch)
            } else {
                reporter.line(&format!(
                    "warning: commit {head} is on no remote branch: push it, or the agent cannot check it out from {url}"
                ));
                (url, head.clone(), local_branch)
            }
        }
    };

    let out = git_raw(root, &[DIFF_OPTS, &[commit.as_str()]].concat())?;
    if !out.status.success() {
        return Err(VcsError::Git {
            command: "diff".into(),
            dir: root.to_path_buf(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut diff = diff_text(&out, "the diff", reporter);

    // An entry script git does not track yet would be missing on the agent: add it as a new file.
    if let Some(file) = entry_file {
        let rel = relative_path(file, root);
        let tracked = git_raw(root, &["ls-files", "--error-unmatch", "--", &rel])?
            .status
            .success();
        if !tracked {
            let out = git_raw(
                root,
                &[DIFF_OPTS, &["--no-index", "--", "/dev/null", &rel]].concat(),
            )?;
            // `--no-index` exits 1 when the files differ.
            if out.status.code() == Some(1) {
                reporter.line(&format!(
                    "note: {rel} is not tracked by git: it is added to the task's diff"
                ));
                diff.push_str(&diff_text(&out, &rel, reporter));
            }
        }
    }
    Ok(LocalCheckout {
        repository,
        commit,
        branch,
        diff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/a/b/c.py"), Path::new("/a")),
            "b/c.py"
        );
        assert_eq!(relative_path(Path::new("/a"), Path::new("/a")), ".");
        assert_eq!(relative_path(Path::new("/a/x"), Path::new("/a/b")), "../x");
    }

    #[test]
    fn relative_remotes_become_absolute() {
        assert_eq!(
            resolve_local_url(Path::new("/r"), "git@h:o/r.git"),
            "git@h:o/r.git"
        );
        assert_eq!(
            resolve_local_url(Path::new("/r"), "https://h/o/r"),
            "https://h/o/r"
        );
        assert_eq!(
            resolve_local_url(Path::new("/nonexistent-r"), "../x"),
            "/nonexistent-r/../x"
        );
    }
}
