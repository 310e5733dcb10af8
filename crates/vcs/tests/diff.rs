//! Applying a task's uncommitted changes.
#![allow(clippy::unwrap_used)]

mod common;

use clearml_vcs::{VcsError, apply_diff, is_git_diff};
use common::{Lines, commit_file, git, init, read};

#[test]
fn applies_modifications_and_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init(&repo);
    commit_file(&repo, "a.txt", "one\ntwo\n", "first");
    commit_file(&repo, "gone.txt", "bye\n", "second");

    // The diff as a developer's working copy produces it.
    let scratch = tmp.path().join("scratch");
    git(
        tmp.path(),
        &["clone", "-q", repo.to_str().unwrap(), "scratch"],
    );
    std::fs::write(scratch.join("a.txt"), "one\n2\n").unwrap();
    std::fs::create_dir_all(scratch.join("pkg")).unwrap();
    std::fs::write(scratch.join("pkg/new.py"), "print('new')\n").unwrap();
    std::fs::remove_file(scratch.join("gone.txt")).unwrap();
    git(&scratch, &["add", "-A"]);
    // `git diff` output loses its trailing newline on the way through the server.
    let diff = git(&scratch, &["diff", "--cached"]);
    assert!(is_git_diff(&diff));

    let lines = Lines::default();
    apply_diff(&repo, &diff, &lines).unwrap();
    assert_eq!(read(&repo.join("a.txt")), "one\n2\n");
    assert_eq!(read(&repo.join("pkg/new.py")), "print('new')\n");
    assert!(!repo.join("gone.txt").exists());
    assert_eq!(
        lines.count("applied uncommitted changes"),
        1,
        "{:?}",
        lines.all()
    );
}

#[test]
fn creates_files_named_by_old_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init(&repo);
    commit_file(&repo, "a.txt", "a\n", "first");
    // A diff against a file the checkout lacks (e.g. an ignored, empty file on the developer's
    // machine): it is created empty, then patched.
    let diff = "diff --git a/conf/local.cfg b/conf/local.cfg\n\
                --- a/conf/local.cfg\n\
                +++ b/conf/local.cfg\n\
                @@ -0,0 +1 @@\n\
                +x = 1";
    apply_diff(&repo, diff, &Lines::default()).unwrap();
    assert_eq!(read(&repo.join("conf/local.cfg")), "x = 1\n");
}

#[test]
fn a_diff_that_does_not_apply_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    init(&repo);
    commit_file(&repo, "a.txt", "one\n", "first");
    let diff = "diff --git a/a.txt b/a.txt\n\
                --- a/a.txt\n\
                +++ b/a.txt\n\
                @@ -1 +1 @@\n\
                -something else\n\
                +two\n\
                diff --git a/b.txt b/b.txt\n\
                --- a/b.txt\n\
                +++ b/b.txt\n\
                @@ -1 +1 @@\n\
                -old\n\
                +new\n";
    let err = apply_diff(&repo, diff, &Lines::default()).unwrap_err();
    assert!(matches!(err, VcsError::Diff(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.starts_with("failed applying git diff: "), "{text}");
    assert!(text.contains("a.txt"), "{text}");
    // Nothing half-done is left behind.
    assert_eq!(read(&repo.join("a.txt")), "one\n");
    assert!(!repo.join("b.txt").exists());
}

#[test]
fn empty_diff_is_nothing_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    apply_diff(tmp.path(), "  \n", &Lines::default()).unwrap();
}
