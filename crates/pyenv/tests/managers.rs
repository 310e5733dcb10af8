//! The package managers with real tools and PyPI: uv sync from a uv.lock, poetry, pip with
//! `pip_version`, priority/post ordering, and the conda fallback.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use clearml_pyenv::{Manager, Requirements, build};
use common::{Lines, cache_root, run_python, spec, uv, work_dir};

fn uv_project(dir: &Path, dependency: &str) {
    fs::create_dir_all(dir).unwrap();
    // No [build-system]: uv treats it as a virtual project and installs only its dependencies.
    fs::write(
        dir.join("pyproject.toml"),
        format!(
            "[project]\nname = \"demo\"\nversion = \"0.1.0\"\nrequires-python = \">=3.8\"\n\
             dependencies = [\"{dependency}\"]\n"
        ),
    )
    .unwrap();
}

fn uv_lock(dir: &Path) {
    let out = Command::new(uv())
        .arg("lock")
        .current_dir(dir)
        .env("UV_CACHE_DIR", cache_root().join("test-uv-cache"))
        .env("UV_PYTHON_DOWNLOADS", "never")
        .env_remove("VIRTUAL_ENV")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn uv_lock_project_is_synced_into_our_venv() {
    let work = work_dir();
    let project = work.path().join("repo");
    uv_project(&project, "six==1.16.0");
    uv_lock(&project);
    let mut spec = spec(work.path());
    spec.project_dir = Some(project.clone());
    // The task's requirements are not what a lock-file project installs.
    spec.requirements = Requirements::Text("iniconfig==2.0.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert_eq!(env.manager, Manager::Uv);
    assert_eq!(
        run_python(&env.python, "import six; print(six.__version__)"),
        "1.16.0"
    );
    assert!(lines.any(" sync --locked "), "{:?}", lines.all());
    assert!(!lines.any("retrying without --locked"));
    assert!(lines.any("the task's requirements are not installed"));
    assert!(env.frozen.contains(&"six==1.16.0".to_string()));
    assert!(!env.frozen.iter().any(|l| l.starts_with("iniconfig")));
    // uv wrote into our venv, not <project>/.venv.
    assert!(!project.join(".venv").exists());
}

#[test]
fn stale_uv_lock_falls_back_to_an_unlocked_sync() {
    let work = work_dir();
    let project = work.path().join("repo");
    uv_project(&project, "six==1.16.0");
    uv_lock(&project);
    uv_project(&project, "iniconfig==2.0.0");
    let mut spec = spec(work.path());
    spec.project_dir = Some(project.clone());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert!(lines.any("`uv sync --locked` failed"), "{:?}", lines.all());
    assert!(lines.any("retrying without --locked"));
    assert_eq!(
        run_python(&env.python, "import iniconfig; print('ok')"),
        "ok"
    );

    // With the flag off, a lock is not enforced at all.
    let lines = Lines::default();
    spec.uv_sync_locked_if_lock_file = false;
    build(&spec, &lines).unwrap();
    assert!(!lines.any("--locked"), "{:?}", lines.all());
}

#[test]
fn poetry_project_installs_into_our_venv() {
    // The source uses PyPI's simple API: this sandbox's PyPI answers 404 to the per-version
    // JSON API that poetry uses for the implicit PyPI source.
    let work = work_dir();
    let project = work.path().join("repo");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("pyproject.toml"),
        "[tool.poetry]\nname = \"demo\"\nversion = \"0.1.0\"\ndescription = \"\"\n\
         authors = [\"t <t@example.com>\"]\npackage-mode = false\n\n\
         [tool.poetry.dependencies]\npython = \">=3.8\"\nsix = \"1.16.0\"\n\n\
         [[tool.poetry.source]]\nname = \"simple\"\nurl = \"https://pypi.org/simple/\"\n\
         priority = \"primary\"\n",
    )
    .unwrap();
    let mut spec = spec(work.path());
    spec.manager = Manager::Poetry;
    spec.project_dir = Some(project.clone());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert_eq!(env.manager, Manager::Poetry);
    assert!(lines.any("install -n"), "{:?}", lines.all());
    assert_eq!(
        run_python(&env.python, "import six; print(six.__version__)"),
        "1.16.0"
    );
    assert!(env.frozen.contains(&"six==1.16.0".to_string()));
    assert!(!project.join(".venv").exists());
}

#[test]
fn poetry_without_a_project_falls_back_to_uv() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.manager = Manager::Poetry;
    spec.project_dir = Some(work.path().to_path_buf());
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();
    assert_eq!(env.manager, Manager::Uv);
    assert!(lines.any("poetry requested but"));
    assert!(lines.any("has no poetry project"));
}

#[test]
fn pip_mode_honours_pip_version_and_flags() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.manager = Manager::Pip;
    spec.pip_version = vec!["<24".into()];
    spec.extra_pip_install_flags = vec!["--no-compile".into()];
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert_eq!(env.manager, Manager::Pip);
    let version = run_python(
        &env.python,
        "import subprocess, sys; print(subprocess.check_output([sys.executable, '-m', 'pip', '--version']).decode())",
    );
    assert!(version.starts_with("pip 23."), "{version}");
    assert!(lines.any("install 'pip<24' --upgrade --no-compile"));
    let install = lines
        .all()
        .into_iter()
        .find(|l| l.starts_with("Running: ") && l.contains(" -r "))
        .unwrap();
    assert!(install.ends_with("--no-compile"), "{install}");
}

#[test]
fn priority_and_post_packages_run_in_order() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text(
        "six==1.16.0\niniconfig==2.0.0\nthis-package-does-not-exist-xyz==1\npackaging==24.0\n"
            .into(),
    );
    spec.priority_packages = vec!["iniconfig".into()];
    spec.priority_optional_packages = vec!["this_package_does_not_exist_xyz".into()];
    spec.post_packages = vec!["six".into()];
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    let runs: Vec<String> = lines
        .all()
        .into_iter()
        .filter(|l| l.starts_with("Running: ") && l.contains(" pip install "))
        .collect();
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs[0].ends_with("iniconfig==2.0.0"), "{runs:?}");
    assert!(runs[1].ends_with("this-package-does-not-exist-xyz==1"));
    assert!(runs[2].contains(" -r "));
    assert!(runs[3].ends_with("six==1.16.0"));
    assert!(lines.any("Warning: optional priority package `this-package-does-not-exist-xyz==1`"));
    for dep in ["six==1.16.0", "iniconfig==2.0.0", "packaging==24.0"] {
        assert!(env.frozen.contains(&dep.to_string()), "{:?}", env.frozen);
    }
}

#[test]
fn conda_without_a_binary_falls_back_to_uv() {
    if ["conda", "mamba", "micromamba"]
        .iter()
        .any(|b| Command::new(b).arg("--version").output().is_ok())
        || std::env::var_os("CONDA_EXE").is_some()
    {
        eprintln!("a conda binary exists here; the fallback is not testable");
        return;
    }
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.manager = Manager::Conda;
    spec.conda_channels = vec!["conda-forge".into()];
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();
    assert_eq!(env.manager, Manager::Uv);
    assert!(lines.any("conda requested but no conda binary found"));
    assert!(lines.any("using uv"));
    assert_eq!(
        run_python(&env.python, "import six; print(six.__version__)"),
        "1.16.0"
    );
}
