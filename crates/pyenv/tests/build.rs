//! Real builds with real uv, pip and PyPI.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::PathBuf;

use clearml_pyenv::{EnvError, Manager, Requirements, build, find_python, requirement_files};
use common::{Lines, run_python, spec, work_dir};

#[test]
fn text_requirements_are_installed_and_importable() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text(
        "# from the task\nsix==1.16.0\nclearml-agent==1.9.2\n\npkg @ file:///nonexistent/pkg.whl\n"
            .into(),
    );
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert_eq!(env.manager, Manager::Uv);
    assert!(!env.reused);
    assert_eq!(env.python, work.path().join("venv/bin/python"));
    assert!(
        env.python_version.starts_with("3."),
        "{}",
        env.python_version
    );
    assert_eq!(
        run_python(&env.python, "import six; print(six.__version__)"),
        "1.16.0"
    );
    assert!(
        env.frozen.contains(&"six==1.16.0".to_string()),
        "{:?}",
        env.frozen
    );
    // Installer tooling and the agent are not part of the recorded environment.
    assert!(
        !env.frozen
            .iter()
            .any(|l| l.starts_with("pip==") || l.starts_with("setuptools==")),
        "{:?}",
        env.frozen
    );
    assert!(lines.any("uv venv --seed"));
    assert!(lines.any("Skipping requirement `clearml-agent==1.9.2`"));
    assert!(lines.any("local file /nonexistent/pkg.whl does not exist"));
    // The seeded pip works inside the venv, for tasks that pip-install at run time.
    assert!(run_python(&env.python, "import pip; print(pip.__version__)").len() > 1);
}

#[test]
fn file_chain_installs_root_then_subdir() {
    let work = work_dir();
    let repo = work.path().join("repo");
    fs::create_dir_all(repo.join("train/deep")).unwrap();
    fs::create_dir_all(repo.join("reqs")).unwrap();
    fs::write(repo.join("requirements.txt"), "six==1.16.0\n").unwrap();
    fs::write(
        repo.join("train/requirements.txt"),
        "-r ../reqs/extra.txt\n",
    )
    .unwrap();
    fs::write(repo.join("reqs/extra.txt"), "iniconfig==2.0.0\n").unwrap();

    let files = requirement_files(&repo, &repo.join("train/deep"));
    assert_eq!(
        files,
        [
            repo.join("requirements.txt"),
            repo.join("train/requirements.txt")
        ]
    );
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Files(files);
    spec.base_dir = Some(repo.clone());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert!(
        env.frozen.contains(&"six==1.16.0".to_string()),
        "{:?}",
        env.frozen
    );
    assert!(
        env.frozen.contains(&"iniconfig==2.0.0".to_string()),
        "{:?}",
        env.frozen
    );
    let root = lines
        .all()
        .iter()
        .position(|l| l.contains(" + six==1.16.0"))
        .unwrap();
    let sub = lines
        .all()
        .iter()
        .position(|l| l.contains(" + iniconfig==2.0.0"))
        .unwrap();
    assert!(root < sub, "root file installs first");
}

#[test]
fn extra_index_url_is_passed_with_its_password_masked() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    spec.extra_index_urls = vec!["https://someuser:s3cret@pypi.org/simple".into()];
    spec.force_upgrade = true;
    let lines = Lines::default();
    build(&spec, &lines).unwrap();

    let install = lines
        .all()
        .into_iter()
        .find(|l| l.starts_with("Running:") && l.contains("pip install"))
        .unwrap();
    assert!(
        install.contains("--extra-index-url https://someuser:****@pypi.org/simple"),
        "{install}"
    );
    assert!(install.contains("--upgrade"), "{install}");
    assert!(!lines.any("s3cret"));
}

#[test]
fn pip_mode_pins_pip_version() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.manager = Manager::Pip;
    spec.pip_version = vec!["==24.0".into()];
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();

    assert_eq!(env.manager, Manager::Pip);
    assert_eq!(env.uv, None);
    let version = run_python(
        &env.python,
        "import subprocess, sys; print(subprocess.check_output([sys.executable, '-m', 'pip', '--version']).decode())",
    );
    assert!(version.starts_with("pip 24.0 "), "{version}");
    assert!(
        env.frozen.contains(&"six==1.16.0".to_string()),
        "{:?}",
        env.frozen
    );
    assert!(
        !env.frozen.iter().any(|l| l.starts_with("pip==")),
        "{:?}",
        env.frozen
    );
    assert!(lines.any("-m venv"));
    assert!(lines.any("install pip==24.0 --upgrade"));
}

#[test]
fn missing_package_error_carries_uv_message() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text("this-package-does-not-exist-xyz==1\n".into());
    let err = build(&spec, &Lines::default()).unwrap_err();
    let text = err.to_string();
    match &err {
        EnvError::CommandFailed {
            command,
            code,
            tail,
            ..
        } => {
            assert!(command.contains("uv pip install"), "{command}");
            assert!(code.is_some_and(|c| c != 0));
            assert!(
                tail.iter()
                    .any(|l| l.contains("this-package-does-not-exist-xyz"))
            );
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(
        text.contains("was not found in the package registry"),
        "{text}"
    );
}

#[test]
fn include_without_base_dir_fails_before_building() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text("-r requirements/base.txt\n".into());
    let err = build(&spec, &Lines::default()).unwrap_err();
    assert!(matches!(err, EnvError::Requirements(_)), "{err}");
    assert!(!spec.venv_dir.exists());

    // With the repository given, the include is found there.
    let repo = work.path().join("repo");
    fs::create_dir_all(repo.join("requirements")).unwrap();
    fs::write(repo.join("requirements/base.txt"), "six==1.16.0\n").unwrap();
    spec.base_dir = Some(repo);
    let env = build(&spec, &Lines::default()).unwrap();
    assert!(env.frozen.contains(&"six==1.16.0".to_string()));
}

#[test]
fn existing_venv_is_reused_or_recreated() {
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    build(&spec, &Lines::default()).unwrap();
    let marker = spec.venv_dir.join("lib/marker");
    fs::write(&marker, "").unwrap();
    let repo_file = spec.venv_dir.join("task_repository/repo/x.py");
    fs::create_dir_all(repo_file.parent().unwrap()).unwrap();
    fs::write(&repo_file, "").unwrap();

    spec.requirements = Requirements::Text("iniconfig==2.0.0\n".into());
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();
    assert!(env.reused);
    assert!(marker.exists());
    assert!(lines.any("Reusing the virtual environment"));
    assert!(!lines.any("uv venv"));
    // Installed on top, as clearml-agent 3.x does with a reused venv.
    assert!(env.frozen.contains(&"six==1.16.0".to_string()));
    assert!(env.frozen.contains(&"iniconfig==2.0.0".to_string()));

    // A different site-packages setting needs a new venv; the repository stays.
    spec.system_site_packages = true;
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();
    assert!(!env.reused);
    assert!(!marker.exists());
    assert!(repo_file.exists());
    assert!(lines.any("Recreating the virtual environment"));
    assert!(lines.any("--allow-existing"));
    let cfg = fs::read_to_string(spec.venv_dir.join("pyvenv.cfg")).unwrap();
    assert!(cfg.contains("include-system-site-packages = true"), "{cfg}");
}

#[test]
fn venv_of_another_python_version_is_recreated() {
    let Some(py310) = pyenv_python("3.10") else {
        eprintln!("no Python 3.10 under ~/.pyenv; skipping");
        return;
    };
    let work = work_dir();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Text("six==1.16.0\n".into());
    let first = build(&spec, &Lines::default()).unwrap();
    assert!(!first.python_version.starts_with("3.10."));

    spec.python_version = Some("3.10".into());
    spec.python_binary = Some(py310);
    let lines = Lines::default();
    let env = build(&spec, &lines).unwrap();
    assert!(!env.reused);
    assert!(
        env.python_version.starts_with("3.10."),
        "{}",
        env.python_version
    );
    assert!(lines.any("Recreating the virtual environment"));
    assert!(run_python(&env.python, "import sys; print(sys.version)").starts_with("3.10."));
}

#[test]
fn project_folder_is_installed() {
    let work = work_dir();
    let project = work.path().join("project");
    fs::create_dir_all(&project).unwrap();
    fs::write(
        project.join("pyproject.toml"),
        "[build-system]\nrequires = [\"flit_core>=3.2,<4\"]\nbuild-backend = \"flit_core.buildapi\"\n\n\
         [project]\nname = \"demo_pkg\"\nversion = \"0.1.0\"\ndescription = \"demo\"\n\
         dependencies = [\"six==1.16.0\"]\n",
    )
    .unwrap();
    fs::write(project.join("demo_pkg.py"), "VALUE = 42\n").unwrap();
    let mut spec = spec(work.path());
    spec.requirements = Requirements::Project(project);
    let env = build(&spec, &Lines::default()).unwrap();
    assert_eq!(
        run_python(&env.python, "import demo_pkg, six; print(demo_pkg.VALUE)"),
        "42"
    );
}

#[test]
fn python_search() {
    let any = find_python(None, None).unwrap();
    assert!(any.matches_request && any.path.is_file());
    let minor: Vec<&str> = any.version.split('.').take(2).collect();
    let mine = find_python(Some(&minor.join(".")), None).unwrap();
    assert!(mine.matches_request, "{mine:?}");

    // Nothing matches: the first working one, with a warning.
    let other = find_python(Some("2.1"), None).unwrap();
    assert!(!other.matches_request);
    assert!(other.note.unwrap().contains("2.1 was requested"));

    let err = find_python(None, Some(std::path::Path::new("/nonexistent/python"))).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/python"), "{err}");

    if let Some(py310) = pyenv_python("3.10") {
        let found = find_python(Some("python3.10"), Some(&py310)).unwrap();
        assert!(found.matches_request && found.version.starts_with("3.10."));
    }
}

/// A pyenv interpreter of `version`, if this machine has one (its shim is not on PATH when
/// another version is selected).
fn pyenv_python(version: &str) -> Option<PathBuf> {
    let root = PathBuf::from(std::env::var_os("HOME")?).join(".pyenv/versions");
    fs::read_dir(root)
        .ok()?
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{version}."))
        })
        .map(|e| e.path().join(format!("bin/python{version}")))
        .find(|p| p.is_file())
}
