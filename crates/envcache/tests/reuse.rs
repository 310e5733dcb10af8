//! Reusing a restored environment in place ([`EnvCache::reuse`]): only an untouched folder of
//! the very same entry is taken as it is.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use clearml_envcache::{CacheSettings, EnvCache, KeyInputs, NullReporter, cache_key};

fn cache(dir: &Path) -> EnvCache {
    EnvCache::open(CacheSettings {
        dir: dir.to_path_buf(),
        max_entries: 10,
        free_space_threshold: 0,
    })
    .unwrap()
}

fn inputs(reqs: &[&str]) -> KeyInputs {
    KeyInputs {
        python_version: "3.11.7".into(),
        package_manager: "uv".into(),
        requirements: reqs.iter().map(|s| s.to_string()).collect(),
        ..KeyInputs::default()
    }
}

/// A small venv-shaped folder that embeds its own path.
fn fake_venv(dir: &Path, text: &str) {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("lib/site-packages/pkg/__pycache__")).unwrap();
    std::fs::write(
        dir.join("bin/activate"),
        format!("VIRTUAL_ENV='{}'\n", dir.display()),
    )
    .unwrap();
    std::fs::write(dir.join("lib/site-packages/pkg/__init__.py"), text).unwrap();
    std::fs::write(dir.join("lib/site-packages/pkg/mod.py"), "x = 1\n").unwrap();
    std::fs::write(
        dir.join("lib/site-packages/pkg/__pycache__/__init__.cpython-311.pyc"),
        b"\0pyc",
    )
    .unwrap();
    std::os::unix::fs::symlink("lib", dir.join("lib64")).unwrap();
}

/// A cache holding one entry (of `reqs`), restored once into `<tmp>/slot/3.11`.
struct Setup {
    _tmp: tempfile::TempDir,
    cache: EnvCache,
    key: String,
    slot: std::path::PathBuf,
}

fn setup(reqs: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(&tmp.path().join("cache"));
    let key = cache_key(&inputs(reqs));
    let build = tmp.path().join("build/3.11");
    fake_venv(&build, &key);
    c.store(
        &key,
        &build,
        &inputs(reqs),
        &["pkg==1".into()],
        &NullReporter,
    )
    .unwrap();
    let slot = tmp.path().join("slot/3.11");
    let r = c.restore(&key, &slot, &NullReporter).unwrap().unwrap();
    assert!(!r.reused);
    assert!(r.rewritten >= 1, "bin/activate holds the path");
    Setup {
        _tmp: tmp,
        cache: c,
        key,
        slot,
    }
}

fn reused(s: &Setup) -> bool {
    s.cache
        .reuse(&s.key, &s.slot, &NullReporter)
        .unwrap()
        .is_some_and(|r| r.reused && r.manifest.frozen == ["pkg==1"])
}

#[test]
fn an_untouched_folder_is_reused_and_holds_the_entry_in_use() {
    let s = setup(&["pkg==1"]);
    let r = s
        .cache
        .reuse(&s.key, &s.slot, &NullReporter)
        .unwrap()
        .unwrap();
    assert!(r.reused);
    assert_eq!(r.in_use.key(), s.key);
    // Held in use: eviction of everything leaves it alone.
    let strict = EnvCache::open(CacheSettings {
        dir: s.cache.dir().to_path_buf(),
        max_entries: 0,
        free_space_threshold: 0,
    })
    .unwrap();
    assert!(strict.evict(0, &NullReporter).unwrap().is_empty());
    drop(r);
    // Reused again and again while nothing changes.
    assert!(reused(&s));
    assert!(reused(&s));
}

#[test]
fn new_bytecode_is_allowed() {
    let s = setup(&["pkg==1"]);
    let site = s.slot.join("lib/site-packages/pkg");
    std::fs::write(site.join("__pycache__/mod.cpython-311.pyc"), b"\0pyc").unwrap();
    std::fs::create_dir_all(s.slot.join("lib/site-packages/__pycache__")).unwrap();
    std::fs::write(
        s.slot
            .join("lib/site-packages/__pycache__/x.cpython-311.pyc"),
        b"\0pyc",
    )
    .unwrap();
    assert!(reused(&s));
}

#[test]
fn a_folder_the_task_modified_is_not_reused() {
    type Change = fn(&Path);
    let changes: [(&str, Change); 8] = [
        ("a new file", |v| {
            std::fs::write(v.join("lib/site-packages/extra.py"), "").unwrap()
        }),
        ("a removed file", |v| {
            std::fs::remove_file(v.join("lib/site-packages/pkg/mod.py")).unwrap()
        }),
        ("a replaced file", |v| {
            let f = v.join("lib/site-packages/pkg/mod.py");
            std::fs::remove_file(&f).unwrap();
            std::fs::write(&f, "x = 1\n").unwrap();
        }),
        ("a rewritten file written again", |v| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            std::fs::write(v.join("bin/activate"), "VIRTUAL_ENV=elsewhere\n").unwrap();
        }),
        ("a changed symlink", |v| {
            std::fs::remove_file(v.join("lib64")).unwrap();
            std::os::unix::fs::symlink("bin", v.join("lib64")).unwrap();
        }),
        ("a non-bytecode file in __pycache__", |v| {
            std::fs::write(v.join("lib/site-packages/pkg/__pycache__/evil.py"), "").unwrap()
        }),
        ("a new __pycache__ with other files", |v| {
            std::fs::create_dir_all(v.join("bin/__pycache__")).unwrap();
            std::fs::write(v.join("bin/__pycache__/x.txt"), "").unwrap();
        }),
        ("a removed folder", |v| {
            std::fs::remove_dir_all(v.join("lib/site-packages/pkg/__pycache__")).unwrap()
        }),
    ];
    for (what, change) in changes {
        let s = setup(&["pkg==1"]);
        change(&s.slot);
        assert!(!reused(&s), "reused after {what}");
        // A full restore into the cleared folder works and is reusable again.
        std::fs::remove_dir_all(&s.slot).unwrap();
        let r = s.cache.restore(&s.key, &s.slot, &NullReporter).unwrap();
        assert!(r.is_some(), "{what}");
        drop(r);
        assert!(reused(&s), "{what}: not reusable after a fresh restore");
    }
}

#[test]
fn another_requirement_set_is_not_reused() {
    let s = setup(&["pkg==1"]);
    let other = cache_key(&inputs(&["pkg==2"]));
    let build = s.cache.dir().join("../build2/3.11");
    fake_venv(&build, &other);
    s.cache
        .store(&other, &build, &inputs(&["pkg==2"]), &[], &NullReporter)
        .unwrap();
    assert!(
        s.cache
            .reuse(&other, &s.slot, &NullReporter)
            .unwrap()
            .is_none()
    );
    // A folder without the record (built, not restored) is never reused either.
    std::fs::remove_file(s.slot.join(clearml_envcache::MARKER)).unwrap();
    assert!(!reused(&s));
}

#[test]
fn an_entry_stored_again_under_the_same_key_is_not_reused() {
    let s = setup(&["pkg==1"]);
    // Evict it (nothing holds it), then store it anew: a new seal.
    let strict = EnvCache::open(CacheSettings {
        dir: s.cache.dir().to_path_buf(),
        max_entries: 0,
        free_space_threshold: 0,
    })
    .unwrap();
    assert_eq!(strict.evict(0, &NullReporter).unwrap().len(), 1);
    assert!(
        s.cache
            .reuse(&s.key, &s.slot, &NullReporter)
            .unwrap()
            .is_none()
    );
    std::thread::sleep(std::time::Duration::from_millis(5));
    let build = s.cache.dir().join("../build3/3.11");
    fake_venv(&build, &s.key);
    s.cache
        .store(&s.key, &build, &inputs(&["pkg==1"]), &[], &NullReporter)
        .unwrap();
    assert!(
        s.cache
            .reuse(&s.key, &s.slot, &NullReporter)
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_folder_an_entry_was_stored_from_is_reusable_until_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let c = cache(&tmp.path().join("cache"));
    let reqs = ["pkg==1"];
    let key = cache_key(&inputs(&reqs));
    let build = tmp.path().join("slot/3.11");
    fake_venv(&build, &key);
    // Not marked: never reused.
    assert!(c.reuse(&key, &build, &NullReporter).unwrap().is_none());
    let stored = c
        .store(&key, &build, &inputs(&reqs), &[], &NullReporter)
        .unwrap();
    let clearml_envcache::Stored::Added(m) = stored else {
        panic!("not stored: {stored:?}");
    };
    c.mark_reusable(&m, &build);
    let r = c.reuse(&key, &build, &NullReporter).unwrap();
    assert!(r.is_some_and(|r| r.reused));
    // What the task runs with is what a restore there would give: the same files.
    let restored = tmp.path().join("elsewhere/3.11");
    c.restore(&key, &restored, &NullReporter).unwrap().unwrap();
    assert_eq!(
        std::fs::read_to_string(build.join("lib/site-packages/pkg/__init__.py")).unwrap(),
        std::fs::read_to_string(restored.join("lib/site-packages/pkg/__init__.py")).unwrap()
    );
    std::fs::write(build.join("lib/site-packages/added.py"), "").unwrap();
    assert!(c.reuse(&key, &build, &NullReporter).unwrap().is_none());
}
