//! Remembered interpreter probes: a pyenv-style shim is run once, and again only when what it
//! resolves to or how pyenv would choose changes.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use clearml_pyenv::find_python_remembered;

fn script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `<root>/shims/python3`, a shim that counts its runs and runs `<root>/real-python`, which
/// answers the probe as interpreter `version`.
fn pyenv_like(root: &Path, version: &str) {
    std::fs::create_dir_all(root.join("shims")).unwrap();
    std::fs::write(root.join("version"), "3.99.1\n").unwrap();
    real(root, version);
    script(
        &root.join("shims/python3"),
        &format!(
            "#!/bin/sh\n# a pyenv shim\necho run >> {runs}\nexec {real} \"$@\"\n",
            runs = root.join("runs").display(),
            real = root.join("real-python").display()
        ),
    );
}

fn real(root: &Path, version: &str) {
    script(
        &root.join("real-python"),
        &format!(
            "#!/bin/sh\nprintf '%s\\n%s\\n' {} {version}\n",
            root.join("real-python").display()
        ),
    );
}

fn runs(root: &Path) -> usize {
    std::fs::read_to_string(root.join("runs"))
        .unwrap_or_default()
        .lines()
        .count()
}

#[test]
fn a_shim_is_probed_once_until_its_choice_or_target_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pyenv");
    pyenv_like(&root, "3.99.1");
    let shim = root.join("shims/python3");
    let memo = tmp.path().join("tools/python-probes.tsv");
    let find = || find_python_remembered(None, Some(&shim), Some(&memo)).unwrap();

    let first = find();
    assert_eq!(first.version, "3.99.1");
    assert_eq!(first.path, root.join("real-python"));
    assert_eq!(runs(&root), 1);
    assert_eq!(find(), first);
    assert_eq!(runs(&root), 1, "remembered");

    // pyenv's global choice changed: probed again.
    std::fs::write(root.join("version"), "3.99.2\n").unwrap();
    find();
    assert_eq!(runs(&root), 2);
    find();
    assert_eq!(runs(&root), 2);

    // The interpreter it resolved to was replaced: probed again, with the new answer.
    std::thread::sleep(std::time::Duration::from_millis(10));
    real(&root, "3.99.7");
    assert_eq!(find().version, "3.99.7");
    assert_eq!(runs(&root), 3);

    // Without a memo file every call probes.
    find_python_remembered(None, Some(&shim), None).unwrap();
    assert_eq!(runs(&root), 4);
}

#[test]
fn other_scripts_are_always_probed() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pyenv");
    pyenv_like(&root, "3.99.1");
    // The same script outside a shims folder: what it runs is unknown.
    let wrapper = tmp.path().join("python3");
    std::fs::copy(root.join("shims/python3"), &wrapper).unwrap();
    let memo = tmp.path().join("python-probes.tsv");
    for n in 1..=2 {
        find_python_remembered(None, Some(&wrapper), Some(&memo)).unwrap();
        assert_eq!(runs(&root), n);
    }
}
