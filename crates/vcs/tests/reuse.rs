//! A slot's working copy reused for the next task of the same commit: reset to exactly what a
//! fresh checkout gives, and never reused when it is not the wanted commit, branch or remote.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use clearml_vcs::{RepoSpec, checkout};
use common::{Lines, commit_file, git, init, read, settings};

fn spec(url: &Path, branch: Option<&str>, commit: &str) -> RepoSpec {
    RepoSpec {
        url: url.to_str().unwrap().to_string(),
        branch: branch.map(str::to_string),
        commit: Some(commit.to_string()),
        tag: None,
    }
}

const REUSED: &str = "reusing the working copy";

#[test]
fn a_dirty_working_copy_of_the_same_commit_is_reset_and_reused() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    init(&origin);
    std::fs::write(origin.join(".gitignore"), "out/\n").unwrap();
    git(&origin, &["add", ".gitignore"]);
    let c1 = commit_file(&origin, "a.txt", "one", "first");
    let s = settings(&tmp.path().join("cache"));
    let dest = tmp.path().join("work/origin");
    let want = spec(&origin, Some("main"), &c1);

    let first = Lines::default();
    assert_eq!(checkout(&s, &want, &dest, &first).unwrap().commit, c1);
    assert_eq!(first.count(REUSED), 0);

    // What the last task left: a modified, a deleted, an untracked and an ignored file.
    std::fs::write(dest.join("a.txt"), "changed by the task").unwrap();
    std::fs::remove_file(dest.join(".gitignore")).unwrap();
    std::fs::write(dest.join("new.txt"), "untracked").unwrap();
    std::fs::create_dir_all(dest.join("out")).unwrap();
    std::fs::write(dest.join("out/result"), "ignored").unwrap();
    // A file outside the repository's view, to tell a reuse from a fresh clone.
    let stamp = dest.join(".git/reuse-stamp");
    std::fs::write(&stamp, "").unwrap();

    let second = Lines::default();
    let info = checkout(&s, &want, &dest, &second).unwrap();
    assert_eq!(info.commit, c1);
    assert_eq!(info.branch.as_deref(), Some("main"));
    assert_eq!(second.count(REUSED), 1, "{:?}", second.all());
    assert!(stamp.exists(), "the working copy was cloned again");
    assert_eq!(read(&dest.join("a.txt")), "one");
    assert!(dest.join(".gitignore").exists());
    assert!(!dest.join("new.txt").exists());
    assert!(!dest.join("out").exists());
    assert_eq!(git(&dest, &["status", "--porcelain", "--ignored"]), "");
    assert_eq!(git(&dest, &["rev-parse", "--abbrev-ref", "HEAD"]), "main");
}

#[test]
fn another_commit_branch_or_remote_is_checked_out_afresh() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    init(&origin);
    let c1 = commit_file(&origin, "a.txt", "one", "first");
    let c2 = commit_file(&origin, "a.txt", "two", "second");
    let other = tmp.path().join("other/origin");
    init(&other);
    let o1 = commit_file(&other, "a.txt", "other", "first");
    let s = settings(&tmp.path().join("cache"));
    let dest = tmp.path().join("work/origin");
    checkout(
        &s,
        &spec(&origin, Some("main"), &c1),
        &dest,
        &Lines::default(),
    )
    .unwrap();

    let cases = [
        ("another commit", spec(&origin, Some("main"), &c2), "two"),
        ("detached instead of main", spec(&origin, None, &c2), "two"),
        ("another remote", spec(&other, None, &o1), "other"),
    ];
    for (what, want, content) in cases {
        let lines = Lines::default();
        let info = checkout(&s, &want, &dest, &lines).unwrap();
        assert_eq!(lines.count(REUSED), 0, "{what}: {:?}", lines.all());
        assert_eq!(Some(info.commit), want.commit, "{what}");
        assert_eq!(read(&dest.join("a.txt")), content, "{what}");
    }
    // The same again (detached, the other remote): reused.
    let lines = Lines::default();
    checkout(&s, &spec(&other, None, &o1), &dest, &lines).unwrap();
    assert_eq!(lines.count(REUSED), 1, "{:?}", lines.all());
    assert_eq!(
        git(&dest, &["rev-parse", "--abbrev-ref", "HEAD"]),
        "HEAD",
        "detached"
    );
}

#[test]
fn a_branch_without_a_commit_always_checks_out() {
    let tmp = tempfile::tempdir().unwrap();
    let origin = tmp.path().join("origin");
    init(&origin);
    commit_file(&origin, "a.txt", "one", "first");
    let s = settings(&tmp.path().join("cache"));
    let dest = tmp.path().join("work/origin");
    let want = RepoSpec {
        url: origin.to_str().unwrap().to_string(),
        branch: Some("main".into()),
        ..RepoSpec::default()
    };
    checkout(&s, &want, &dest, &Lines::default()).unwrap();
    let c2 = commit_file(&origin, "a.txt", "two", "second");
    let lines = Lines::default();
    let info = checkout(&s, &want, &dest, &lines).unwrap();
    assert_eq!(lines.count(REUSED), 0);
    assert_eq!(info.commit, c2);
    assert_eq!(read(&dest.join("a.txt")), "two");
}
