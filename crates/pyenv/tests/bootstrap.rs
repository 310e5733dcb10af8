//! The uv bootstrap from scratch, twice at once. It downloads uv (~40 MB) each time, so it is
//! ignored by default: `cargo test -p clearml-pyenv --test bootstrap -- --ignored`.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use clearml_pyenv::{bootstrap_uv, find_python};
use common::{Lines, work_dir};

#[test]
#[ignore = "downloads uv from PyPI; run explicitly"]
fn concurrent_bootstraps_install_once() {
    let work = work_dir();
    let tools = work.path().join("tools");
    let python = find_python(None, None).unwrap().path;
    let started = std::time::Instant::now();
    let (a, b) = std::thread::scope(|s| {
        let run = || {
            let lines = Lines::default();
            let uv = bootstrap_uv(&tools, &python, &lines).unwrap();
            (uv, lines.all())
        };
        let a = s.spawn(run);
        let b = s.spawn(run);
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("bootstrap took {:?}", started.elapsed());
    assert_eq!(a.0, b.0);
    assert_eq!(a.0, tools.join("uv-venv/bin/uv"));
    let installs = [&a.1, &b.1]
        .iter()
        .flat_map(|lines| lines.iter())
        .filter(|l| l.contains("installing it with pip"))
        .count();
    assert_eq!(installs, 1);
    let out = std::process::Command::new(&a.0)
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("uv "));
}
