//! Loading clearml.conf the way the Python agent does: defaults, search order, overrides, types.

use std::path::{Path, PathBuf};

use clearml_config::{Config, ConfigError, Env, LoadOptions, PackageManagerKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// An isolated home folder and an environment that only knows it.
struct Home {
    dir: tempfile::TempDir,
    env: Env,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().expect("tempdir");
        let env = Env::from_pairs([("HOME", dir.path().display().to_string())]);
        Home { dir, env }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn var(mut self, k: &str, v: &str) -> Home {
        self.env.set(k, v);
        self
    }

    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&LoadOptions {
            config_file: None,
            env: self.env.clone(),
        })
    }

    fn load_file(&self, file: &Path) -> Result<Config, ConfigError> {
        Config::load(&LoadOptions {
            config_file: Some(file.to_path_buf()),
            env: self.env.clone(),
        })
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

#[test]
fn defaults_alone_give_the_documented_values() {
    let home = Home::new();
    let c = home.load().expect("loads");
    assert!(c.files().is_empty());
    let a = c.agent().expect("typed agent");
    assert_eq!(a.worker_id, None);
    assert_eq!(a.package_manager.kind, PackageManagerKind::Uv);
    assert_eq!(a.package_manager.pip_version.len(), 3);
    assert_eq!(
        a.package_manager.conda_channels,
        ["pytorch", "conda-forge", "nvidia", "defaults"]
    );
    assert!(a.package_manager.extra_index_url.is_empty());
    assert!(!a.package_manager.system_site_packages);
    assert!(!a.package_manager.force_upgrade);
    assert!(!a.package_manager.torch_nightly);
    assert_eq!(a.venvs_dir, home.path(".clearml/venvs-builds"));
    assert!(a.vcs_cache.enabled);
    assert_eq!(a.vcs_cache.path, home.path(".clearml/vcs-cache"));
    assert!(a.pip_download_cache.enabled);
    assert_eq!(
        a.pip_download_cache.path,
        home.path(".clearml/pip-download-cache")
    );
    assert!(!a.venv_update_enabled);
    assert!(a.translate_ssh);
    assert!(!a.reload_config);
    assert!(!a.force_git_ssh_protocol);
    assert_eq!(a.docker_pip_cache, home.path(".clearml/pip-cache"));
    assert_eq!(a.docker_apt_cache, home.path(".clearml/apt-cache"));
    assert!(!a.docker_force_pull);
    assert_eq!(
        a.default_docker.image,
        "nvidia/cuda:12.6.3-cudnn-runtime-ubuntu20.04"
    );
    assert!(a.extra_docker_arguments.is_empty());
    let s = c.storage_cache().expect("typed cache");
    assert_eq!(s.default_base_dir, home.path(".clearml/cache"));
    assert_eq!(s.min_free_bytes, Some(10_000_000_000));
    let api = c.api().expect("typed api");
    assert!(api.verify_certificate);
    assert_eq!(api.api_server, None);
}

#[test]
fn clearml_conf_wins_over_trains_conf_and_both_are_read() {
    let home = Home::new();
    home.write(
        "trains.conf",
        "agent.worker_name: old\nagent.git_user: legacy\n",
    );
    home.write("clearml.conf", "agent.worker_name: new\n");
    let c = home.load().expect("loads");
    assert_eq!(c.files().len(), 2);
    let a = c.agent().expect("agent");
    assert_eq!(a.worker_name.as_deref(), Some("new"));
    assert_eq!(a.git_user.as_deref(), Some("legacy"));
}

#[test]
fn config_file_env_var_replaces_the_home_files_and_flag_beats_it() {
    let home = Home::new();
    home.write("clearml.conf", "agent.worker_name: from-home\n");
    let custom = home.write("custom.conf", "agent.worker_name: from-env-file\n");
    let flag = home.write("flag.conf", "agent.worker_name: from-flag\n");
    let home = home.var("CLEARML_CONFIG_FILE", &custom.display().to_string());
    let c = home.load().expect("loads");
    assert_eq!(c.files(), std::slice::from_ref(&custom));
    assert_eq!(
        c.agent().expect("agent").worker_name.as_deref(),
        Some("from-env-file")
    );
    let c = home.load_file(&flag).expect("loads");
    assert_eq!(
        c.agent().expect("agent").worker_name.as_deref(),
        Some("from-flag")
    );
}

#[test]
fn a_named_config_file_must_exist() {
    let home = Home::new();
    let missing = home.path("nope.conf");
    match home.load_file(&missing) {
        Err(ConfigError::MissingFile(p)) => assert_eq!(p, missing),
        other => panic!("expected MissingFile, got {other:?}"),
    }
    let home = home.var("CLEARML_CONFIG_FILE", "/definitely/not/here.conf");
    assert!(matches!(home.load(), Err(ConfigError::MissingFile(_))));
}

#[test]
fn generic_env_overrides_are_read_as_hocon() {
    let home = Home::new()
        .var("CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL", "true")
        .var(
            "CLEARML_AGENT__AGENT__PACKAGE_MANAGER__EXTRA_INDEX_URL",
            "[\"https://a.example/simple\", https://b.example/simple]",
        )
        .var(
            "CLEARML_AGENT__SDK__STORAGE__CACHE__SIZE__MIN_FREE_BYTES",
            "512MiB",
        );
    let c = home.load().expect("loads");
    let a = c.agent().expect("agent");
    assert!(a.docker_force_pull);
    assert_eq!(
        a.package_manager.extra_index_url,
        ["https://a.example/simple", "https://b.example/simple"]
    );
    assert_eq!(
        c.storage_cache().expect("cache").min_free_bytes,
        Some(512 * 1024 * 1024)
    );
    let origin = &c.get("agent.docker_force_pull").expect("set").origin;
    assert!(
        origin
            .to_string()
            .contains("CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL")
    );
}

#[test]
fn named_env_overrides_beat_the_file_and_first_name_wins() {
    let home = Home::new();
    home.write(
        "clearml.conf",
        "api { api_server: http://file:8008, credentials { access_key: FILEKEY, secret_key: FILESECRET } }\nagent { worker_id: file-id, cuda_version: 10.1 }\n",
    );
    let home = home
        .var("CLEARML_API_HOST", "http://env:8008")
        .var("TRAINS_API_HOST", "http://legacy:8008")
        .var("TRAINS_WEB_HOST", "http://web.legacy")
        .var("CLEARML_FILES_HOST", "http://files:8081")
        .var("CLEARML_API_ACCESS_KEY", "ENVKEY")
        .var("CLEARML_API_SECRET_KEY", "ENVSECRET")
        .var("CLEARML_WORKER_ID", "env-id")
        .var("CLEARML_WORKER_NAME", "env-name")
        .var("CUDA_VERSION", "12.2")
        .var("CLEARML_CUDNN_VERSION", "")
        .var("CUDNN_VERSION", "8.9");
    let c = home.load().expect("loads");
    let api = c.api().expect("api");
    assert_eq!(api.api_server.as_deref(), Some("http://env:8008"));
    assert_eq!(api.web_server.as_deref(), Some("http://web.legacy"));
    assert_eq!(api.files_server.as_deref(), Some("http://files:8081"));
    assert_eq!(api.access_key.as_deref(), Some("ENVKEY"));
    assert_eq!(api.secret_key.as_deref(), Some("ENVSECRET"));
    let a = c.agent().expect("agent");
    assert_eq!(a.worker_id.as_deref(), Some("env-id"));
    assert_eq!(a.worker_name.as_deref(), Some("env-name"));
    assert_eq!(a.cuda_version.as_deref(), Some("12.2"));
    // An empty variable counts as unset, so the next name is used.
    assert_eq!(a.cudnn_version.as_deref(), Some("8.9"));

    let home = home.var("CLEARML_CUDA_VERSION", "11.8");
    let a = home.load().expect("loads").agent().expect("agent");
    assert_eq!(a.cuda_version.as_deref(), Some("11.8"));
}

#[test]
fn a_bad_boolean_variable_is_named() {
    let home = Home::new().var("CLEARML_API_HOST_VERIFY_CERT", "perhaps");
    let e = home.load().expect_err("bad bool");
    assert!(
        e.to_string().contains("CLEARML_API_HOST_VERIFY_CERT"),
        "{e}"
    );
    let home = Home::new().var("CLEARML_AGENT__AGENT__X", "[unclosed");
    let e = home.load().expect_err("bad hocon");
    assert!(e.to_string().contains("CLEARML_AGENT__AGENT__X"), "{e}");
}

#[test]
fn a_wrong_type_names_the_key_and_the_file_position() {
    let home = Home::new();
    let file = home.write(
        "clearml.conf",
        "agent {\n    package_manager {\n        force_upgrade: \"maybe\"\n    }\n}\n",
    );
    let c = home.load().expect("parses");
    let e = c.agent().expect_err("wrong type");
    let msg = e.to_string();
    assert!(msg.contains("agent.package_manager.force_upgrade"), "{msg}");
    assert!(msg.contains(&format!("{}:3:24", file.display())), "{msg}");
    assert!(msg.contains("\"maybe\""), "{msg}");

    home.write("clearml.conf", "agent.package_manager.type: pipx\n");
    let e = home.load().expect("parses").agent().expect_err("bad kind");
    assert!(e.to_string().contains("pipx"), "{e}");

    home.write(
        "clearml.conf",
        "sdk.storage.cache.size.min_free_bytes: lots\n",
    );
    let e = home
        .load()
        .expect("parses")
        .storage_cache()
        .expect_err("bad size");
    assert!(e.to_string().contains("min_free_bytes"), "{e}");
}

#[test]
fn paths_expand_home_and_variables_and_api_host_is_derived() {
    let home = Home::new().var("CACHE_ROOT", "/srv/cache");
    home.write(
        "clearml.conf",
        "api.api_server: \"http://localhost:8008\"\nagent.venvs_dir: ~/venvs\nagent.vcs_cache.path: \"$CACHE_ROOT/vcs\"\n",
    );
    let c = home.load().expect("loads");
    let a = c.agent().expect("agent");
    assert_eq!(a.venvs_dir, home.path("venvs"));
    assert_eq!(a.vcs_cache.path, PathBuf::from("/srv/cache/vcs"));
    assert_eq!(
        c.tree().get_str("api.host").expect("str").as_deref(),
        Some("http://localhost:8008")
    );
}

#[test]
fn an_extra_config_folder_adds_sections_by_file_stem() {
    let home = Home::new();
    let dir = home.path("extra");
    std::fs::create_dir(&dir).expect("mkdir");
    std::fs::write(dir.join("agent.conf"), "docker_force_pull: true\n").expect("write");
    let home = home.var("CLEARML_CONFIG_PATH", &dir.display().to_string());
    assert!(
        home.load()
            .expect("loads")
            .agent()
            .expect("agent")
            .docker_force_pull
    );
}

#[test]
fn secrets_are_masked_for_printing() {
    let home = Home::new();
    home.write(
        "clearml.conf",
        r#"
api { credentials { access_key: VISIBLEKEY, secret_key: "S3CR3T!#" } }
agent {
  git_user: bob
  git_pass: hunter2
  enable_git_ask_pass: true
  package_manager.extra_index_url: ["https://bob:idxpw@pypi.example.org/simple"]
  extra_docker_arguments: ["-e", "CLEARML_API_SECRET_KEY=dockersecret", "-e", "MY_TOKEN_VAR=fine"]
}
environment { DB_URL: "postgres://u:dbpw@db/x" }
"#,
    );
    let masked = home.load().expect("loads").masked().to_json().to_string();
    for secret in ["S3CR3T", "hunter2", "idxpw", "dockersecret", "dbpw"] {
        assert!(!masked.contains(secret), "{secret} leaked: {masked}");
    }
    for visible in ["VISIBLEKEY", "bob", "MY_TOKEN_VAR=fine", "pypi.example.org"] {
        assert!(masked.contains(visible), "{visible} hidden: {masked}");
    }
    // dont_hide_secrets keeps enable_git_ask_pass although it contains "pass".
    assert!(masked.contains("\"enable_git_ask_pass\":true"), "{masked}");
}

#[test]
fn every_fixture_loads_or_fails_with_a_location() {
    let home = Home::new()
        .var("HOCON_TEST_USER", "tester")
        .var("HOCON_TEST_HOME", "/home/tester")
        .var("HOCON_TEST_PORT", "8008")
        .var("HOCON_TEST_URL", "https://pypi.example.org/simple");
    for name in [
        "docs_example.conf",
        "init_written.conf",
        "seed_agent_section.conf",
        "seed_git_credentials.conf",
        "seed_sdk_size.conf",
        "env_substitution.conf",
    ] {
        let c = home
            .load_file(&fixture(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        c.agent().unwrap_or_else(|e| panic!("{name}: {e}"));
        c.api().unwrap_or_else(|e| panic!("{name}: {e}"));
        c.storage_cache().unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, line) in [
        ("seed_agent_section_unbalanced.conf", 87),
        ("seed_size_unbalanced.conf", 5),
    ] {
        let e = home.load_file(&fixture(name)).expect_err(name).to_string();
        let at = format!("{name}:{line}:");
        assert!(e.contains(&at), "{name}: {e}");
        assert!(e.contains("'}' is missing"), "{name}: {e}");
    }
}

#[test]
fn init_written_file_keeps_credentials_and_agent_settings() {
    let c = Home::new()
        .load_file(&fixture("init_written.conf"))
        .expect("loads");
    let api = c.api().expect("api");
    assert!(api.api_server.is_some_and(|s| s.starts_with("http")));
    assert!(api.secret_key.is_some());
    let a = c.agent().expect("agent");
    assert!(a.git_user.is_some());
    assert!(!a.package_manager.extra_index_url.is_empty());
}

/// Every `agent.*` key the daemon reads is typed: a wrong type is an error with the key and
/// `file:line:col`, never the default.
#[test]
fn daemon_keys_of_the_wrong_type_are_errors_with_their_place() {
    let home = Home::new();
    let file = home.write(
        "clearml.conf",
        "agent {\n  venvs_cache {\n    path: ~/vc\n    max_entries: ten\n  }\n}\n",
    );
    let c = home.load_file(&file).expect("loads");
    let err = c
        .venvs_cache()
        .expect_err("ten is not a number")
        .to_string();
    assert!(err.contains("agent.venvs_cache.max_entries"), "{err}");
    assert!(err.contains(&format!("{}:4:18", file.display())), "{err}");

    let file = home.write(
        "neg.conf",
        "agent.venvs_cache { path: ~/vc, max_entries: -1 }\n",
    );
    let err = home
        .load_file(&file)
        .expect("loads")
        .venvs_cache()
        .expect_err("negative");
    assert!(
        err.to_string().contains(&format!("{}:1:", file.display())),
        "{err}"
    );

    let file = home.write(
        "git.conf",
        "agent {\n  git_user: u\n  git_host_match_prefix: maybe\n}\n",
    );
    let c = home.load_file(&file).expect("loads");
    let err = c.vcs().expect_err("bad git keys").to_string();
    assert!(err.contains("agent.git_host_match_prefix"), "{err}");
    assert!(err.contains(&format!("{}:3:", file.display())), "{err}");

    let file = home.write("port.conf", "agent.force_git_ssh_port: 70000\n");
    let err = home
        .load_file(&file)
        .expect("loads")
        .vcs()
        .expect_err("port")
        .to_string();
    assert!(
        err.contains("agent.force_git_ssh_port") && err.contains("70000"),
        "{err}"
    );

    let file = home.write(
        "creds.conf",
        "agent.git.extra_credentials: [{user: u, pass: p, host: h}, {user: [1]}]\n",
    );
    let err = home
        .load_file(&file)
        .expect("loads")
        .vcs()
        .expect_err("list user")
        .to_string();
    assert!(err.contains("agent.git.extra_credentials[1].user"), "{err}");

    let file = home.write("mon.conf", "agent.abort_kill_grace_sec: soon\n");
    let err = home
        .load_file(&file)
        .expect("loads")
        .monitor()
        .expect_err("soon")
        .to_string();
    assert!(err.contains("agent.abort_kill_grace_sec"), "{err}");
}

#[test]
fn daemon_keys_read_back_typed() {
    let home = Home::new();
    let file = home.write(
        "clearml.conf",
        "agent {\n  venvs_cache { path: ~/vc, max_entries: \"3\", free_space_threshold_gb: 0 }\n  \
         git { extra_credentials: [{user: u, pass: p, host: h}, {user: only}] }\n  \
         git_fetch_args: [\"--depth\", \"1\"]\n  force_git_ssh_port: 2222\n  \
         abort_poll_interval_sec: 0.25\n}\n",
    );
    let c = home.load_file(&file).expect("loads");
    let vc = c.venvs_cache().expect("typed").expect("on");
    assert_eq!(vc.path, home.path("vc"));
    assert_eq!((vc.max_entries, vc.free_space_threshold), (3, 0));
    let git = c.vcs().expect("typed");
    assert_eq!(git.extra_credentials.len(), 1);
    assert_eq!(git.extra_credentials[0].host.as_deref(), Some("h"));
    assert_eq!(git.fetch_args, ["--depth", "1"]);
    assert_eq!(git.force_git_ssh_port, Some(2222));
    assert_eq!(git.ssh_replacement_scheme, "https");
    // The variable beats the key (which the built-in defaults always set), as in 3.0.3.
    let scheme = Home::new().var("CLEARML_AGENT_SSH_URL_REPLACEMENT_SCHEME", "http");
    let file = scheme.write("s.conf", "agent.translate_ssl_replacement_scheme: https\n");
    let by_env = scheme.load_file(&file).expect("loads");
    assert_eq!(by_env.vcs().expect("typed").ssh_replacement_scheme, "http");
    assert_eq!(
        c.monitor().expect("typed").abort_poll_interval_sec,
        Some(0.25)
    );

    let off = home.write(
        "off.conf",
        "agent.venvs_cache { path: ~/vc, enabled: false }\n",
    );
    assert_eq!(
        home.load_file(&off)
            .expect("loads")
            .venvs_cache()
            .expect("typed"),
        None
    );
}
