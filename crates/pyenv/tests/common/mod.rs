//! Shared test setup: uv found once per test binary (bootstrapped with pip into the workspace's
//! ignored `.cache/test-tools` on the first run, or `CLEARML_TEST_UV`), caches under `.cache/`
//! so reruns are warm, and a reporter that keeps every line.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use clearml_pyenv::{EnvSpec, Reporter, find_python, find_uv};

pub fn cache_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache");
    std::fs::create_dir_all(&root).unwrap();
    root.canonicalize().unwrap()
}

pub fn tools_dir() -> PathBuf {
    cache_root().join("test-tools")
}

/// A fresh folder on the same filesystem as the uv cache, so uv can hard-link.
pub fn work_dir() -> tempfile::TempDir {
    let root = cache_root().join("test-work");
    std::fs::create_dir_all(&root).unwrap();
    tempfile::tempdir_in(root).unwrap()
}

#[derive(Default)]
pub struct Lines(Mutex<Vec<String>>);

impl Reporter for Lines {
    fn line(&self, text: &str) {
        eprintln!("| {text}");
        self.0.lock().unwrap().push(text.to_string());
    }
}

impl Lines {
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    pub fn any(&self, needle: &str) -> bool {
        self.all().iter().any(|l| l.contains(needle))
    }
}

pub fn uv() -> PathBuf {
    static UV: OnceLock<PathBuf> = OnceLock::new();
    UV.get_or_init(|| {
        if let Some(path) = std::env::var_os("CLEARML_TEST_UV").filter(|v| !v.is_empty()) {
            return PathBuf::from(path);
        }
        let python = find_python(None, None).unwrap();
        let lines = Lines::default();
        let started = std::time::Instant::now();
        let uv = find_uv(&tools_dir(), &python.path, &lines).unwrap();
        eprintln!("uv at {} in {:?}", uv.display(), started.elapsed());
        uv
    })
    .clone()
}

/// A uv build into `<work>/venv` with the shared caches.
pub fn spec(work: &Path) -> EnvSpec {
    let mut spec = EnvSpec::new(work.join("venv"), tools_dir());
    spec.uv_binary = Some(uv());
    spec.uv_cache_dir = Some(cache_root().join("test-uv-cache"));
    spec.pip_cache_dir = Some(cache_root().join("test-pip-cache"));
    spec
}

/// Runs the venv's python with `code` and returns its trimmed stdout.
pub fn run_python(python: &Path, code: &str) -> String {
    let out = std::process::Command::new(python)
        .args(["-c", code])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
