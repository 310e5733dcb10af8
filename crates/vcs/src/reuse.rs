//! Reusing the working copy a slot's last task left behind: when it is a clone of the same
//! remote with the wanted commit (a full sha, so no mirror lookup is needed) checked out under
//! the same branch name, resetting it to a clean tree gives what a fresh clone would, with two
//! to four git runs instead of eight.

use std::ffi::OsString;
use std::path::Path;

use crate::git::{Git, args};
use crate::{Remote, RepoInfo, Wanted, is_full_sha};

/// The working copy at `dest`, made clean, when it already is what `want` asks for; `None`
/// (nothing changed) when a full checkout is needed.
pub(crate) fn reuse_work_tree(
    git: &Git,
    remote: &Remote,
    want: &Wanted,
    dest: &Path,
) -> Option<RepoInfo> {
    let sha = want.commit.as_deref().filter(|c| is_full_sha(c))?;
    // Submodules would need their own checks: a fresh checkout handles them.
    if !dest.join(".git").is_dir() || dest.join(".gitmodules").exists() {
        return None;
    }
    // An explicit git dir and work tree: never a repository that merely encloses `dest`.
    let here = |rest: &[&str]| -> Vec<OsString> {
        let mut a: Vec<OsString> = args![
            "--git-dir",
            dest.join(".git"),
            "--work-tree",
            dest,
            "-C",
            dest
        ]
        .into();
        a.extend(rest.iter().map(OsString::from));
        a
    };
    let origin = git
        .run(
            None,
            &here(&["config", "--get", "remote.origin.url"]),
            None,
            false,
        )
        .ok()?;
    if origin.trim() != remote.url {
        return None;
    }
    let status = git
        .run(
            None,
            &here(&[
                "status",
                "--porcelain=v2",
                "--branch",
                "--untracked-files=all",
                "--ignored",
            ]),
            None,
            false,
        )
        .ok()?;
    let mut oid = None;
    let mut head = None;
    let mut dirty = false;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("# branch.oid ") {
            oid = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("# branch.head ") {
            head = Some(v.trim());
        } else if !line.starts_with('#') && !line.is_empty() {
            dirty = true;
        }
    }
    if !oid.is_some_and(|o| o.eq_ignore_ascii_case(sha)) {
        return None;
    }
    // The name a fresh checkout gives it: the wanted branch, else detached.
    let named = match want.branch.as_deref() {
        Some(b) => head == Some(b),
        None => head == Some("(detached)"),
    };
    if !named {
        return None;
    }
    if dirty {
        git.say("resetting the working copy left by the last task");
        git.run(
            None,
            &here(&["reset", "--hard", "--quiet", "HEAD"]),
            None,
            true,
        )
        .ok()?;
        git.run(None, &here(&["clean", "-ffdx", "--quiet"]), None, true)
            .ok()?;
    }
    let commit = oid?.to_ascii_lowercase();
    git.say(&format!(
        "reusing the working copy at {commit} ({})",
        want.branch.as_deref().unwrap_or("detached")
    ));
    Some(RepoInfo {
        url: remote.url.clone(),
        branch: want.branch.clone(),
        commit,
        root: dest.to_path_buf(),
    })
}
