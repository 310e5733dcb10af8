//! The cache with real virtual environments (uv, packages from PyPI) and with small fake ones
//! for eviction and concurrency.
#![allow(clippy::print_stdout, clippy::print_stderr)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use clearml_envcache::{CacheSettings, EnvCache, KeyInputs, NullReporter, Stored, cache_key};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        let tools = workspace().join(".cache/test-tools");
        clearml_pyenv::find_uv(&tools, Path::new("python3"), &clearml_pyenv::NullReporter)
            .expect("uv")
    })
    .clone()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A uv venv (with pip, as the agent builds them) with `packages` installed.
fn real_venv(dir: &Path, packages: &[&str]) {
    let uv = uv();
    let cache = workspace().join(".cache/uv-cache");
    run(Command::new(&uv)
        .args(["venv", "--seed", "--python", "python3"])
        .arg(dir)
        .env("UV_CACHE_DIR", &cache)
        .env("UV_PYTHON_DOWNLOADS", "never"));
    run(Command::new(&uv)
        .args(["pip", "install", "--python"])
        .arg(dir.join("bin/python"))
        .args(packages)
        .env("UV_CACHE_DIR", &cache));
}

fn inputs(reqs: &[&str]) -> KeyInputs {
    KeyInputs {
        python_version: "3.11.7".into(),
        package_manager: "uv".into(),
        requirements: reqs.iter().map(|s| s.to_string()).collect(),
        ..KeyInputs::default()
    }
}

fn cache(dir: &Path, max_entries: usize) -> EnvCache {
    EnvCache::open(CacheSettings {
        dir: dir.to_path_buf(),
        max_entries,
        free_space_threshold: 0,
    })
    .unwrap()
}

#[test]
fn real_venv_restores_elsewhere_by_hardlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let build = tmp.path().join("builds/3.11");
    real_venv(&build, &["tabulate==0.9.0", "six==1.16.0"]);
    let c = cache(&tmp.path().join("cache"), 10);
    let ins = inputs(&["tabulate==0.9.0", "six==1.16.0"]);
    let key = cache_key(&ins);
    let frozen = vec!["six==1.16.0".to_string(), "tabulate==0.9.0".to_string()];
    let Stored::Added(m) = c.store(&key, &build, &ins, &frozen, &NullReporter).unwrap() else {
        panic!("not stored");
    };
    assert!(
        m.relocate.iter().any(|r| r == "bin/tabulate"),
        "{:?}",
        m.relocate
    );
    assert!(
        m.relocate.iter().any(|r| r == "bin/activate"),
        "{:?}",
        m.relocate
    );
    assert!(matches!(
        c.store(&key, &build, &ins, &frozen, &NullReporter).unwrap(),
        Stored::AlreadyPresent
    ));
    // The build folder goes away: the restored venv must not need it.
    std::fs::remove_dir_all(&build).unwrap();

    let target = tmp.path().join("elsewhere/slot-2/3.11");
    let r = c
        .restore(&key, &target, &NullReporter)
        .unwrap()
        .expect("hit");
    eprintln!(
        "restore: {:?}, {} linked, {} rewritten, {} copied",
        r.elapsed, r.linked, r.rewritten, r.copied
    );
    assert!(r.elapsed < Duration::from_millis(500), "{:?}", r.elapsed);
    assert_eq!(r.copied, 0);
    assert_eq!(r.manifest.frozen, frozen);
    assert!(r.linked > 100);

    let out = run(Command::new(target.join("bin/python")).args([
        "-c",
        "import sys, tabulate, six; print(tabulate.__file__); print(sys.prefix)",
    ]));
    let target_s = target.display().to_string();
    assert!(out.lines().all(|l| l.starts_with(&target_s)), "{out}");
    let script = std::fs::read_to_string(target.join("bin/tabulate")).unwrap();
    let shebang = script.lines().next().unwrap();
    assert_eq!(shebang, format!("#!{target_s}/bin/python"));
    let out = run(Command::new(target.join("bin/tabulate")).arg("--help"));
    assert!(out.contains("Usage"), "{out}");
    let activate = std::fs::read_to_string(target.join("bin/activate")).unwrap();
    assert!(activate.contains(&target_s));
    assert!(!activate.contains("builds/3.11"));

    // Hardlinks: the same inode as the store's file.
    let rel = "lib/python3.11/site-packages/tabulate/__init__.py";
    let stored = c.dir().join(&key).join("venv").join(rel);
    let restored = target.join(rel);
    assert_eq!(
        std::fs::metadata(&stored).unwrap().ino(),
        std::fs::metadata(&restored).unwrap().ino()
    );

    // An in-place write either fails (read-only) or, as root, gets the entry discarded.
    let before = std::fs::read(&stored).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let wrote = std::fs::OpenOptions::new()
        .append(true)
        .open(&restored)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"\n# tampered\n"))
        .is_ok();
    let again = tmp.path().join("third");
    if wrote {
        assert!(c.restore(&key, &again, &NullReporter).unwrap().is_none());
        assert!(!c.contains(&key));
        assert!(!again.exists());
    } else {
        assert_eq!(std::fs::read(&stored).unwrap(), before);
        assert!(c.restore(&key, &again, &NullReporter).unwrap().is_some());
    }
    // Unlink + recreate, which installers do, never touches the store.
    std::fs::remove_file(target.join("lib/python3.11/site-packages/six.py")).unwrap();
    std::fs::write(target.join("lib/python3.11/site-packages/six.py"), "x").unwrap();
}

/// A small venv-shaped folder that embeds its own path.
fn fake_venv(dir: &Path, marker: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("lib/site-packages/pkg")).unwrap();
    std::fs::write(
        dir.join("bin/activate"),
        format!("VIRTUAL_ENV='{}'\n", dir.display()),
    )
    .unwrap();
    std::fs::write(dir.join("lib/site-packages/pkg/__init__.py"), marker).unwrap();
    std::os::unix::fs::symlink("lib", dir.join("lib64")).unwrap();
}

#[test]
fn eviction_is_lru_and_skips_entries_in_use() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(&tmp.path().join("cache"), 3);
    let keys: Vec<String> = (0..5)
        .map(|i| cache_key(&inputs(&[&format!("pkg=={i}")])))
        .collect();
    for (i, k) in keys.iter().enumerate().take(3) {
        let b = tmp.path().join(format!("b{i}"));
        fake_venv(&b, k);
        assert!(matches!(
            c.store(k, &b, &inputs(&[]), &[], &NullReporter).unwrap(),
            Stored::Added(_)
        ));
        std::thread::sleep(Duration::from_millis(5));
    }
    // Use order 0, 1, 2; 0 stays in use.
    let guard0 = c
        .restore(&keys[0], &tmp.path().join("r0"), &NullReporter)
        .unwrap()
        .unwrap()
        .in_use;
    for (i, key) in keys.iter().enumerate().take(3).skip(1) {
        std::thread::sleep(Duration::from_millis(5));
        let r = c
            .restore(key, &tmp.path().join(format!("r{i}")), &NullReporter)
            .unwrap()
            .unwrap();
        drop(r);
    }
    let b3 = tmp.path().join("b3");
    fake_venv(&b3, &keys[3]);
    c.store(&keys[3], &b3, &inputs(&[]), &[], &NullReporter)
        .unwrap();
    let left: Vec<String> = c.entries().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(
        left,
        vec![keys[0].clone(), keys[2].clone(), keys[3].clone()]
    );

    drop(guard0);
    let b4 = tmp.path().join("b4");
    fake_venv(&b4, &keys[4]);
    c.store(&keys[4], &b4, &inputs(&[]), &[], &NullReporter)
        .unwrap();
    let left: Vec<String> = c.entries().unwrap().into_iter().map(|e| e.key).collect();
    assert_eq!(
        left,
        vec![keys[2].clone(), keys[3].clone(), keys[4].clone()]
    );
    // A restored env outlives its evicted entry: its files are its own links.
    assert_eq!(
        std::fs::read_to_string(tmp.path().join("r0/lib/site-packages/pkg/__init__.py")).unwrap(),
        keys[0]
    );
}

#[test]
fn concurrent_store_and_restore_of_one_key_are_safe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cache");
    let key = cache_key(&inputs(&["same"]));
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let dir = dir.clone();
            let key = key.clone();
            let root = tmp.path().join(format!("t{t}"));
            std::thread::spawn(move || {
                // Each thread opens its own handle, as separate agents would.
                let c = cache(&dir, 2);
                for i in 0..15 {
                    let build = root.join(format!("build{i}"));
                    fake_venv(&build, "same");
                    c.store(&key, &build, &inputs(&["same"]), &[], &NullReporter)
                        .unwrap();
                    let target = root.join(format!("restored{i}"));
                    let r = c.restore(&key, &target, &NullReporter).unwrap();
                    if let Some(r) = r {
                        assert_eq!(
                            std::fs::read_to_string(
                                target.join("lib/site-packages/pkg/__init__.py")
                            )
                            .unwrap(),
                            "same"
                        );
                        let act = std::fs::read_to_string(target.join("bin/activate")).unwrap();
                        assert_eq!(act, format!("VIRTUAL_ENV='{}'\n", target.display()));
                        assert_eq!(
                            std::fs::read_link(target.join("lib64")).unwrap(),
                            Path::new("lib")
                        );
                        drop(r);
                    }
                    // Another key now and then, so eviction races with the restores.
                    if i % 5 == 4 {
                        let other = cache_key(&inputs(&[&format!("other{t}{i}")]));
                        let b = root.join(format!("other{i}"));
                        fake_venv(&b, "other");
                        c.store(&other, &b, &inputs(&[]), &[], &NullReporter)
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let c = cache(&dir, 2);
    assert!(c.entries().unwrap().len() <= 2 + 4);
    let leftovers = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(leftovers, 0);
}
