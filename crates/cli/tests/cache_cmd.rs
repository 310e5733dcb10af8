//! `clearml-agent cache status|prune`, run as a real process on a temp home.

use std::fs::{File, FileTimes};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use assert_cmd::Command;
use serde_json::Value as Json;

fn agent(home: &Path, config: &Path) -> Command {
    let mut cmd = Command::cargo_bin("clearml-agent").expect("binary");
    cmd.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("--config-file")
        .arg(config);
    cmd
}

/// A home with a cache of four 64 KiB files, `c0` the least recently used, and a config that
/// allows 150000 bytes with a 10 % margin: two entries must go.
fn setup() -> (tempfile::TempDir, PathBuf, Vec<PathBuf>) {
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    let cache = h.join("cache");
    std::fs::create_dir(&cache).expect("mkdir");
    let entries = (0..4u64)
        .map(|i| {
            let p = cache.join(format!("c{i}"));
            File::create(&p)
                .and_then(|mut f| f.write_all(&[1u8; 65536]))
                .expect("write");
            let t = SystemTime::now() - Duration::from_secs(3600 * (10 - i));
            File::open(&p)
                .and_then(|f| f.set_times(FileTimes::new().set_accessed(t).set_modified(t)))
                .expect("times");
            p
        })
        .collect();
    let config = h.join("clearml.conf");
    std::fs::write(
        &config,
        format!(
            r#"
sdk.storage.cache {{
  default_base_dir: "{h}/cache"
  size {{ max_used_bytes: 150000, min_free_bytes: -1, cleanup_margin_percent: 10% }}
}}
agent {{
  vcs_cache.path: "{h}/vcs"
  pip_download_cache.path: "{h}/pip"
  venvs_cache.path: "{h}/venvs-cache"
}}
"#,
            h = h.display()
        ),
    )
    .expect("config");
    (home, config, entries)
}

fn json_of(cmd: &mut Command) -> Json {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is JSON")
}

#[test]
fn status_shows_the_folders_and_the_policy() {
    let (home, config, _entries) = setup();
    let h = home.path();
    let js = json_of(agent(h, &config).args(["cache", "status", "--json"]));
    assert_eq!(js["policy"]["max_used_bytes"], 150000);
    assert_eq!(js["policy"]["min_free_bytes"], Json::Null);
    assert_eq!(js["policy"]["cleanup_margin_percent"], 10.0);
    let folders = js["folders"].as_array().expect("folders");
    let paths: Vec<&str> = folders
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let want = |p: &str| h.join(p).display().to_string();
    assert_eq!(
        paths,
        [
            want("cache"),
            want("vcs"),
            want("pip"),
            want(".clearml/uv-cache"),
            want("venvs-cache")
        ]
    );
    assert_eq!(folders[0]["entries"], 4);
    assert!(folders[0]["bytes"].as_u64().unwrap() >= 4 * 65536);
    assert!(folders[0]["free_bytes"].as_u64().is_some());
    assert_eq!(folders[1]["exists"], false);

    let out = agent(h, &config)
        .args(["cache", "status"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("FOLDER"), "{text}");
    assert!(text.contains(&want("cache")), "{text}");
    assert!(text.contains("(missing)"), "{text}");
    assert!(text.contains("Total: 4 entries"), "{text}");
}

#[test]
fn prune_removes_the_least_recently_used_and_dry_run_does_not() {
    let (home, config, entries) = setup();
    let h = home.path();
    let out = agent(h, &config)
        .args(["cache", "prune", "--dry-run"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("would remove {}", entries[0].display())),
        "{text}"
    );
    assert!(text.contains(&format!("would remove {}", entries[1].display())));
    assert!(!text.contains(&format!("would remove {}", entries[2].display())));
    assert!(entries.iter().all(|e| e.exists()));

    let js = json_of(agent(h, &config).args(["cache", "prune", "--json"]));
    let removed: Vec<&str> = js["report"]["removed"]
        .as_array()
        .expect("removed")
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    let e = |i: usize| entries[i].display().to_string();
    assert_eq!(removed, [e(0), e(1)]);
    assert_eq!(js["report"]["removed"][0]["reason"], "max_used_bytes");
    assert_eq!(js["report"]["within_limits"], true);
    assert!(!entries[0].exists() && !entries[1].exists());
    assert!(entries[2].exists() && entries[3].exists());

    // Within the limits now: nothing more goes.
    let out = agent(h, &config)
        .args(["cache", "prune"])
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("removed 0 entries"));
}
