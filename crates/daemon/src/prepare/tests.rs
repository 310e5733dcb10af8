//! Unit tests of the task preparation helpers.
use super::*;
use clearml_progress::NullReporter;

#[test]
fn folder_names() {
    assert_eq!(repo_folder_name("https://github.com/a/b.git"), "b");
    assert_eq!(repo_folder_name("git@github.com:a/b.git"), "b");
    assert_eq!(repo_folder_name("/tmp/x/repo/"), "repo");
    assert_eq!(repo_folder_name("file:///tmp/x/my repo"), "my_repo");
    assert_eq!(repo_folder_name(".."), "repository");
}

/// Services mode gives every task its own venv and code folder: the same requirements must
/// still map to one cache entry, or each service task rebuilds its env from scratch.
#[test]
fn cache_key_ignores_the_per_task_folders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("clearml.conf");
    let cache = dir.path().join("cache");
    std::fs::write(
        &conf,
        format!("agent.venvs_cache.path: \"{}\"\n", cache.display()),
    )
    .expect("write");
    let config = Config::load(&clearml_config::LoadOptions {
        config_file: Some(conf),
        ..clearml_config::LoadOptions::default()
    })
    .expect("load");
    let settings = PrepareSettings::from_config(&config).expect("settings");
    let spec_for = |task: &str| {
        let root = dir.path().join(format!("venvs-builds.service.{task}"));
        clearml_pyenv::EnvSpec {
            requirements: clearml_pyenv::Requirements::Text("six==1.16.0\n".into()),
            base_dir: Some(root.join("code")),
            project_dir: Some(root.join("code")),
            ..clearml_pyenv::EnvSpec::new(root.join("3.11"), dir.path().join("tools"))
        }
    };
    let key = |task: &str| {
        let code = dir.path().join(format!("venvs-builds.service.{task}/code"));
        let inputs = env_cache_key(&spec_for(task), "3.11.7", &code, &settings, &NullReporter)
            .expect("cacheable");
        clearml_envcache::cache_key(&inputs)
    };
    assert_eq!(key("a"), key("b"));
    let mut other = spec_for("a");
    other.requirements = clearml_pyenv::Requirements::Text("six==1.15.0\n".into());
    let code = dir.path().join("venvs-builds.service.a/code");
    let inputs =
        env_cache_key(&other, "3.11.7", &code, &settings, &NullReporter).expect("cacheable");
    assert_ne!(clearml_envcache::cache_key(&inputs), key("a"));
}
