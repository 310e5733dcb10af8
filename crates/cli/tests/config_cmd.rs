//! `clearml-agent [--config-file F] config [--json]`, run as a real process.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value as Json;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/tests/fixtures")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../hocon/tests/corpus")
}

/// The agent with a clean environment: an empty home, nothing inherited that could change
/// the config.
fn agent(home: &Path) -> Command {
    let mut cmd = Command::cargo_bin("clearml-agent").expect("binary");
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(TEST_ENV.iter().copied());
    cmd
}

/// The variables the corpus snippets substitute (as in tools/pyhocon/gen_expected.py).
const TEST_ENV: &[(&str, &str)] = &[
    ("HOCON_TEST_USER", "tester"),
    ("HOCON_TEST_HOME", "/home/tester"),
    ("HOCON_TEST_PORT", "8008"),
    ("HOCON_TEST_URL", "https://pypi.example.org/simple"),
];

fn config_json(cmd: &mut Command) -> Json {
    let out = cmd.arg("config").arg("--json").output().expect("runs");
    assert!(
        out.status.success(),
        "config --json failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

/// `path` inside `json`, by dotted keys.
fn at<'a>(json: &'a Json, path: &str) -> &'a Json {
    path.split('.').fold(json, |j, k| &j[k])
}

#[test]
fn config_json_works_for_every_fixture_and_corpus_file_that_parses() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut checked = 0;
    for dir in [fixtures(), corpus()] {
        for entry in std::fs::read_dir(&dir).expect("dir") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "conf") {
                continue;
            }
            // The parser itself is compared with pyhocon in the hocon crate; here the command
            // must show what the parser reads.
            let parsed = clearml_hocon::Options::with_env(|n| {
                TEST_ENV
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
            })
            .parse_file(&path)
            .map(|v| v.to_json());
            let out = agent(home.path())
                .arg("--config-file")
                .arg(&path)
                .args(["config", "--json"])
                .output()
                .expect("runs");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.contains("panicked"), "{}: {stderr}", path.display());
            let Ok(ok) = &parsed else {
                assert!(!out.status.success(), "{} should fail", path.display());
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or_default();
                assert!(
                    stderr.contains(name),
                    "{}: unlocated error {stderr}",
                    path.display()
                );
                continue;
            };
            if !ok.is_object() || ok.get("agent").is_some_and(|a| !a.is_object()) {
                // A root list, or a snippet whose `agent` is not a section, is not a config.
                continue;
            }
            assert!(out.status.success(), "{}: {stderr}", path.display());
            let json: Json = serde_json::from_slice(&out.stdout).expect("JSON");
            // Top-level keys of the file show up in the effective config (unless masked).
            for (k, v) in ok.as_object().into_iter().flatten() {
                if v.is_object() || k.contains("pass") || k.contains("secret") {
                    continue;
                }
                assert_eq!(&json[k], v, "{}: key {k}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked > 90, "only {checked} files checked");
}

#[test]
fn fixture_values_and_masking_show_in_json() {
    let home = tempfile::tempdir().expect("tempdir");
    let json = config_json(
        agent(home.path())
            .arg("--config-file")
            .arg(fixtures().join("init_written.conf")),
    );
    assert_eq!(at(&json, "agent.git_pass"), "****");
    assert_eq!(at(&json, "api.credentials.secret_key"), "****");
    assert!(at(&json, "api.credentials.access_key").is_string());
    assert!(
        at(&json, "api.api_server")
            .as_str()
            .is_some_and(|s| s.starts_with("http"))
    );
    // init writes the full default agent section, so its package manager is pip.
    assert_eq!(at(&json, "agent.package_manager.type"), "pip");
}

#[test]
fn env_overrides_are_visible_in_config_json() {
    let home = tempfile::tempdir().expect("tempdir");
    let json = config_json(
        agent(home.path())
            .arg("--config-file")
            .arg(fixtures().join("docs_example.conf"))
            .env("CLEARML_API_HOST", "http://127.0.0.1:18008")
            .env("CLEARML_WORKER_ID", "box:gpu0")
            .env("CUDA_VERSION", "12.4")
            .env("TRAINS_WEB_HOST", "http://legacy-web")
            .env("CLEARML_AGENT__AGENT__DOCKER_FORCE_PULL", "true")
            .env(
                "CLEARML_AGENT__SDK__STORAGE__CACHE__SIZE__MIN_FREE_BYTES",
                "20GB",
            ),
    );
    assert_eq!(at(&json, "api.api_server"), "http://127.0.0.1:18008");
    assert_eq!(at(&json, "api.web_server"), "http://legacy-web");
    assert_eq!(at(&json, "agent.worker_id"), "box:gpu0");
    // Shown normalised, as the Python agent's session stores it (issue 12).
    assert_eq!(at(&json, "agent.cuda_version"), "124");
    assert_eq!(at(&json, "agent.docker_force_pull"), true);
    assert_eq!(at(&json, "sdk.storage.cache.size.min_free_bytes"), "20GB");
}

#[test]
fn home_clearml_conf_is_found_without_flags() {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        home.path().join("clearml.conf"),
        "api { api_server: http://localhost:8008 }\n",
    )
    .expect("write");
    let json = config_json(&mut agent(home.path()));
    assert_eq!(at(&json, "api.api_server"), "http://localhost:8008");
    assert_eq!(at(&json, "api.host"), "http://localhost:8008");
    assert_eq!(
        at(&json, "agent.venvs_dir"),
        "~/.clearml/venvs-builds",
        "config shows values as written; ~ is expanded where the path is used"
    );
}

#[test]
fn plain_config_prints_properties_with_secrets_hidden() {
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join("c.conf");
    std::fs::write(
        &conf,
        "api { api_server: http://localhost:8008, credentials { access_key: AK1, secret_key: \"TOPSECRET\" } }\n\
         agent.git_pass: \"gitpw\"\n\
         agent.package_manager.extra_index_url: [\"https://u:idxpw@pypi.example.org/simple\"]\n",
    )
    .expect("write");
    let out = agent(home.path())
        .arg("--config-file")
        .arg(&conf)
        .env("CLEARML_API_SECRET_KEY", "ENVSECRET")
        .arg("config")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Current configuration (clearml_agent v"),
        "{text}"
    );
    assert!(
        text.contains(&format!("location: {}", conf.display())),
        "{text}"
    );
    assert!(
        text.contains("api.api_server = http://localhost:8008\n"),
        "{text}"
    );
    assert!(
        text.contains("api.credentials.access_key = AK1\n"),
        "{text}"
    );
    assert!(
        text.contains("api.credentials.secret_key = ****\n"),
        "{text}"
    );
    assert!(text.contains(
        "agent.package_manager.extra_index_url.0 = https://u:********@pypi.example.org/simple"
    ));
    for secret in ["TOPSECRET", "ENVSECRET", "gitpw", "idxpw"] {
        assert!(!text.contains(secret), "{secret} leaked");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(secret));
    }
}

#[test]
fn a_missing_config_file_is_a_clear_error() {
    let home = tempfile::tempdir().expect("tempdir");
    agent(home.path())
        .args(["--config-file", "/no/such/clearml.conf", "config"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "configuration file /no/such/clearml.conf does not exist",
        ));
}

#[test]
fn a_wrong_type_fails_config_with_key_and_position() {
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join("bad.conf");
    std::fs::write(&conf, "agent.package_manager.force_upgrade: \"maybe\"\n").expect("write");
    agent(home.path())
        .arg("--config-file")
        .arg(&conf)
        .arg("config")
        .assert()
        .failure()
        .stderr(predicates::str::contains(format!(
            "{}:1:38: agent.package_manager.force_upgrade: expected a boolean",
            conf.display()
        )));
}

#[test]
fn unbalanced_seed_fragment_reports_where() {
    let home = tempfile::tempdir().expect("tempdir");
    agent(home.path())
        .arg("--config-file")
        .arg(fixtures().join("seed_agent_section_unbalanced.conf"))
        .arg("config")
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "seed_agent_section_unbalanced.conf:87:1: end of input inside the object opened at line",
        ));
}

#[test]
fn version_help_and_argument_files() {
    let home = tempfile::tempdir().expect("tempdir");
    agent(home.path())
        .arg("--version")
        .assert()
        .success()
        .stdout(predicates::str::starts_with("CLEARML-AGENT version "));
    agent(home.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicates::str::contains("--config-file"))
        .stdout(predicates::str::contains("config"));
    let args = home.path().join("args.txt");
    std::fs::write(&args, "config\n--json\n").expect("write");
    let out = agent(home.path())
        .arg(format!("@{}", args.display()))
        .output()
        .expect("runs");
    assert!(out.status.success());
    let _: Json = serde_json::from_slice(&out.stdout).expect("JSON from @args");
    agent(home.path())
        .arg("--no-such-flag")
        .assert()
        .failure()
        .code(2);
}

#[test]
fn debug_flag_sets_agent_debug() {
    let home = tempfile::tempdir().expect("tempdir");
    let json = config_json(agent(home.path()).arg("--debug"));
    assert_eq!(at(&json, "agent.debug"), true);
}

#[test]
fn a_wrong_daemon_key_fails_config_with_key_and_position() {
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join("bad.conf");
    std::fs::write(
        &conf,
        "agent.venvs_cache {\n  path: ~/vc\n  max_entries: ten\n}\n",
    )
    .expect("write");
    agent(home.path())
        .arg("--config-file")
        .arg(&conf)
        .arg("config")
        .assert()
        .failure()
        .stderr(predicates::str::contains("agent.venvs_cache.max_entries"))
        .stderr(predicates::str::contains(format!(
            "{}:3:16",
            conf.display()
        )));
}

#[test]
fn log_levels_are_checked_and_diagnostics_stay_off_stdout() {
    let home = tempfile::tempdir().expect("tempdir");
    agent(home.path())
        .args(["--log-level", "loud", "config"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("unknown log level \"loud\""));
    // Accepted before or after the command; stdout stays the configuration alone.
    for args in [
        ["--log-level", "DEBUG", "config", "--json"],
        ["config", "--json", "--log-level", "debug"],
    ] {
        let out = agent(home.path()).args(args).output().expect("runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Json>(&out.stdout).expect("stdout is JSON only");
    }
}

#[test]
fn plain_config_shows_the_docker_keys_with_effective_values() {
    let home = tempfile::tempdir().expect("tempdir");
    let conf = home.path().join("c.conf");
    std::fs::write(
        &conf,
        "agent.default_docker.image: \"python:3.11\"\n\
         agent.docker_force_pull: true\n\
         agent.extra_docker_arguments: [\"-e\", \"MY_TOKEN=tok-123\", \"--ipc=host\"]\n",
    )
    .expect("write");
    let out = agent(home.path())
        .arg("--config-file")
        .arg(&conf)
        .env("CLEARML_DOCKER_IMAGE", "ubuntu:22.04")
        .arg("config")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let docker = text
        .split("Docker mode (effective values):")
        .nth(1)
        .unwrap_or_else(|| panic!("no docker section:\n{text}"));
    for line in [
        "agent.default_docker.image = python:3.11",
        "CLEARML_DOCKER_IMAGE = ubuntu:22.04",
        "agent.docker_force_pull = true",
        "agent.forbidden_docker_args = [\"entrypoint\"]",
        // Defaults are shown too, resolved against the home folder.
        &format!(
            "agent.docker_pip_cache = {}",
            home.path().join(".clearml/pip-cache").display()
        ),
    ] {
        assert!(docker.contains(line), "{line:?} missing:\n{docker}");
    }
    assert!(docker.contains("--ipc=host"), "{docker}");
    assert!(
        !docker.contains("tok-123"),
        "a secret value is shown:\n{docker}"
    );
}

/// Issue 12: `config` shows the derived keys as the Python agent does: the fallback Python's
/// `X.Y`, and CUDA/cuDNN versions from `nvidia-smi` or the environment, normalised.
#[test]
fn config_shows_derived_python_and_cuda_versions() {
    use std::os::unix::fs::PermissionsExt as _;
    let home = tempfile::tempdir().expect("home");
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let smi = bin.join("nvidia-smi");
    std::fs::write(
        &smi,
        "#!/bin/sh\necho '| NVIDIA-SMI 535.104.05   Driver Version: 535.104.05   CUDA Version: 12.2 |'\n",
    )
    .expect("smi");
    std::fs::set_permissions(&smi, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let python = std::process::Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .expect("python3");
    let xy = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let out = agent(home.path())
        .env("PATH", &path)
        .env("CUDNN_VERSION", "8.9.2")
        .arg("config")
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("agent.default_python = {xy}\n")),
        "{text}"
    );
    assert!(text.contains("agent.cuda_version = 122\n"), "{text}");
    assert!(text.contains("agent.cudnn_version = 89\n"), "{text}");
    // A configured value wins over detection.
    let v = config_json(
        agent(home.path())
            .env("PATH", &path)
            .env("CLEARML_CUDA_VERSION", "11.8"),
    );
    assert_eq!(v["agent"]["cuda_version"], "118");
}
