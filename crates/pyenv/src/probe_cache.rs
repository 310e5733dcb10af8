//! Remembered interpreter probes: running `python3` to read its version costs 10 ms for a
//! real interpreter and over 100 ms through a pyenv shim (bash, then `pyenv`), on every task
//! start. A probe's answer depends only on the file that was run, on what it runs, and for a
//! pyenv shim on how pyenv picks a version; all of that goes into the key (file identity, and
//! for a shim the version-selecting variables and files), and the answer is used only while
//! the real interpreter it named is still the same file. Other scripts are never remembered:
//! what they run cannot be known without running them.
//!
//! The file holds one line per probe: `key \t real path \t version \t identity of the real
//! interpreter`. Lost updates between agents only cost a probe.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// What identifies a file's contents without reading it.
fn identity(path: &Path) -> Option<String> {
    let m = std::fs::metadata(path).ok()?;
    Some(format!(
        "{}:{}:{}.{}:{}",
        m.dev(),
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.len()
    ))
}

/// The key of a probe of `exe`, or `None` when its answer cannot be remembered.
fn key(exe: &Path) -> Option<String> {
    let mut key = format!("{}|{}", exe.to_str()?, identity(exe)?);
    let mut head = [0u8; 2];
    let is_script = std::fs::File::open(exe)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && &head == b"#!";
    if is_script {
        key.push('|');
        key.push_str(&pyenv_selection(exe)?);
    }
    (!key.contains(['\t', '\n'])).then_some(key)
}

/// How pyenv would pick the version for shim `exe` right now: its variables, the first
/// `.python-version` above the folders it looks from, and the global version file. `None`
/// when `exe` is not a pyenv shim.
fn pyenv_selection(exe: &Path) -> Option<String> {
    let shims = exe.parent()?;
    if shims.file_name()? != "shims" {
        return None;
    }
    let text = std::fs::read_to_string(exe).ok()?;
    if !text.contains("pyenv") || text.len() > 4096 {
        return None;
    }
    let root = shims.parent()?;
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let cwd = std::env::current_dir().ok()?;
    let mut out = format!(
        "PYENV_VERSION={};PYENV_DIR={};PATH={};cwd={}",
        var("PYENV_VERSION"),
        var("PYENV_DIR"),
        var("PATH"),
        cwd.display()
    );
    let pyenv_dir = std::env::var_os("PYENV_DIR").map(PathBuf::from);
    for start in pyenv_dir.iter().chain(std::iter::once(&cwd)) {
        let found = start
            .ancestors()
            .map(|d| d.join(".python-version"))
            .find(|f| f.is_file());
        if let Some(f) = found {
            let content = std::fs::read_to_string(&f).unwrap_or_default();
            out.push_str(&format!(";{}={}", f.display(), content.trim()));
        }
    }
    let global = std::fs::read_to_string(root.join("version")).unwrap_or_default();
    out.push_str(&format!(";global={}", global.trim()));
    Some(out)
}

fn read(file: &Path) -> BTreeMap<String, (String, String, String)> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut parts = l.split('\t');
            let (k, real, version, id) =
                (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
            Some((k.to_string(), (real.into(), version.into(), id.into())))
        })
        .collect()
}

/// The remembered answer for `exe`: its real interpreter and full version.
pub(crate) fn lookup(file: &Path, exe: &Path) -> Option<(PathBuf, String)> {
    let key = key(exe)?;
    let (real, version, id) = read(file).remove(&key)?;
    let real = PathBuf::from(real);
    (identity(&real)? == id).then_some((real, version))
}

/// Remembers a probe's answer; best effort.
pub(crate) fn remember(file: &Path, exe: &Path, real: &Path, version: &str) {
    let (Some(key), Some(id), Some(real_s)) = (key(exe), identity(real), real.to_str()) else {
        return;
    };
    if real_s.contains(['\t', '\n']) || version.contains(['\t', '\n']) {
        return;
    }
    let mut all = read(file);
    // Stale keys of the same file go: one line per candidate path.
    let prefix = format!("{}|", exe.display());
    all.retain(|k, _| !k.starts_with(&prefix));
    all.insert(key, (real_s.to_string(), version.to_string(), id));
    let text: String = all
        .iter()
        .map(|(k, (r, v, i))| format!("{k}\t{r}\t{v}\t{i}\n"))
        .collect();
    let Some(dir) = file.parent() else {
        return;
    };
    if std::fs::create_dir_all(dir).is_err() {
        return;
    }
    if let Ok(mut tmp) = tempfile::NamedTempFile::new_in(dir) {
        use std::io::Write as _;
        if tmp.write_all(text.as_bytes()).is_ok() {
            let _ = tmp.persist(file);
        }
    }
}
