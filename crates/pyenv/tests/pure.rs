//! The helpers that need no Python.

#![allow(clippy::unwrap_used)]

use std::fs;

use clearml_pyenv::{python_version_from_binary, requirement_files};

#[test]
fn version_from_binary() {
    let cases = [
        ("python3.10", Some("3.10")),
        ("python3", Some("3")),
        ("python3.10.4", Some("3.10.4")),
        ("/usr/bin/python3.11", Some("3.11")),
        ("python3.exe", Some("3")),
        (" python3.9 ", Some("3.9")),
        ("/usr/bin/python", None),
        ("python", None),
        ("bash", None),
        ("", None),
        ("python3..1", None),
        ("pythonX", None),
        ("/opt/python3.8/bin/bash", None),
    ];
    for (binary, want) in cases {
        assert_eq!(
            python_version_from_binary(binary).as_deref(),
            want,
            "{binary:?}"
        );
    }
}

#[test]
fn requirement_files_from_root_down() {
    let repo = tempfile::tempdir().unwrap();
    let root = repo.path();
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("requirements.txt"), "").unwrap();
    fs::write(root.join("a/b/requirements.txt"), "").unwrap();
    fs::create_dir_all(root.join("a/requirements.txt")).unwrap(); // a folder, not a file

    let want = vec![
        root.join("requirements.txt"),
        root.join("a/b/requirements.txt"),
    ];
    assert_eq!(requirement_files(root, &root.join("a/b/c")), want);
    assert_eq!(requirement_files(root, "a/b/c".as_ref()), want);
    assert_eq!(requirement_files(root, "./a/b".as_ref()), want);
    assert_eq!(requirement_files(root, "".as_ref()), want[..1]);
    assert_eq!(requirement_files(root, "a/../a/b".as_ref()), want[..1]);
    assert_eq!(requirement_files(root, "/elsewhere".as_ref()), want[..1]);
    assert_eq!(requirement_files(root, "a/missing/b".as_ref()), want[..1]);

    fs::remove_file(root.join("requirements.txt")).unwrap();
    assert_eq!(requirement_files(root, "a/b".as_ref()), want[1..]);
    assert!(requirement_files(&root.join("nope"), "x".as_ref()).is_empty());
}
