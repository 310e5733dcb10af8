//! The cache key: what an environment's contents depend on, hashed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::CacheError;

/// Everything that decides what ends up in a built environment. Two builds with equal inputs
/// are interchangeable, so the second one can be a restore of the first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyInputs {
    /// The base interpreter's full version ("3.11.7"): a venv links to it and its
    /// site-packages path carries X.Y, and patch releases can change wheel tags.
    pub python_version: String,
    /// "uv", "pip", ...: the installers resolve differently and seed different tooling.
    pub package_manager: String,
    /// The requirement set from [`normalise_text`] / [`normalise_files`]: file contents, not
    /// file names, so editing a nested `-r` file changes the key.
    pub requirements: Vec<String>,
    /// Index and extra-index URLs: the same pins can resolve to other wheels elsewhere.
    pub index_urls: Vec<String>,
    /// Installer flags that change the result (`--upgrade`, a pip version constraint, ...).
    pub install_flags: Vec<String>,
    /// The CUDA version torch wheels are picked for, when known.
    pub cuda_version: Option<String>,
    /// The docker image the environment is built in (`None` on the host).
    pub docker_image: Option<String>,
    /// A venv that sees the system site-packages resolves against them.
    pub system_site_packages: bool,
}

/// The key of `inputs`: lowercase hex sha256 over a canonical encoding (a version tag, then
/// JSON with a fixed field order and the list fields sorted and deduplicated, so the order of
/// index URLs or flags does not matter).
pub fn cache_key(inputs: &KeyInputs) -> String {
    let canon = |v: &[String]| -> Vec<String> {
        v.iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    };
    let canonical = KeyInputs {
        python_version: inputs.python_version.trim().to_string(),
        package_manager: inputs.package_manager.trim().to_ascii_lowercase(),
        requirements: canon(&inputs.requirements),
        index_urls: canon(&inputs.index_urls),
        install_flags: canon(&inputs.install_flags),
        cuda_version: inputs
            .cuda_version
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        docker_image: inputs
            .docker_image
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        system_site_packages: inputs.system_site_packages,
    };
    // Serialising a struct of strings cannot fail; an empty encoding would still be a
    // deterministic key.
    let json = serde_json::to_vec(&canonical).unwrap_or_default();
    let mut h = Sha256::new();
    h.update(b"clearml-envcache/v1\n");
    h.update(&json);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a requirement set cannot be cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uncacheable(pub String);

/// The normalised requirement set of a task's requirements text: lines trimmed, comments and
/// blank lines dropped, `-r`/`-c` includes replaced by the (normalised) contents of the file,
/// found relative to `base_dir`, sorted and deduplicated.
///
/// `Ok(Err(_))` when the set refers to local code (an editable install, `./path`, a
/// `file:` URL): that code can change without the text changing, so it must not be cached.
pub fn normalise_text(
    text: &str,
    base_dir: Option<&Path>,
) -> Result<Result<Vec<String>, Uncacheable>, CacheError> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    if let Err(u) = collect(text, base_dir, &mut out, &mut seen, 0)? {
        return Ok(Err(u));
    }
    Ok(Ok(out.into_iter().collect()))
}

/// [`normalise_text`] for a chain of requirement files (each one's includes relative to its
/// own folder), merged into one set.
pub fn normalise_files(files: &[PathBuf]) -> Result<Result<Vec<String>, Uncacheable>, CacheError> {
    let mut out = BTreeSet::new();
    let mut seen = BTreeSet::new();
    for f in files {
        if let Err(u) = collect_file(f, &mut out, &mut seen, 0)? {
            return Ok(Err(u));
        }
    }
    Ok(Ok(out.into_iter().collect()))
}

/// Nesting deeper than this is a cycle or abuse.
const MAX_DEPTH: usize = 16;

fn collect_file(
    path: &Path,
    out: &mut BTreeSet<String>,
    seen: &mut BTreeSet<PathBuf>,
    depth: usize,
) -> Result<Result<(), Uncacheable>, CacheError> {
    let canonical = std::fs::canonicalize(path).map_err(|e| CacheError::io("reading", path, e))?;
    if !seen.insert(canonical.clone()) {
        // Already included: the set is the same either way.
        return Ok(Ok(()));
    }
    let text =
        std::fs::read_to_string(&canonical).map_err(|e| CacheError::io("reading", path, e))?;
    collect(&text, canonical.parent(), out, seen, depth + 1)
}

fn collect(
    text: &str,
    base_dir: Option<&Path>,
    out: &mut BTreeSet<String>,
    seen: &mut BTreeSet<PathBuf>,
    depth: usize,
) -> Result<Result<(), Uncacheable>, CacheError> {
    if depth > MAX_DEPTH {
        return Err(CacheError::Invalid(
            "requirement files are nested too deeply".into(),
        ));
    }
    // Backslash continuations join into one logical line first.
    let joined = text.replace("\\\r\n", " ").replace("\\\n", " ");
    for raw in joined.lines() {
        let line = strip_comment(raw).trim();
        if line.is_empty() {
            continue;
        }
        if let Some((flag, target)) = include(line) {
            let Some(base) = base_dir else {
                return Ok(Err(Uncacheable(format!(
                    "{line:?} has no folder to be read from"
                ))));
            };
            let mut inner = BTreeSet::new();
            if let Err(u) = collect_file(&base.join(target), &mut inner, seen, depth)? {
                return Ok(Err(u));
            }
            // Constraints narrow what gets installed but are not requirements; keep them
            // apart so a constraint file's line never equals a requirement line.
            out.extend(
                inner
                    .into_iter()
                    .map(|l| if flag == "-c" { format!("-c {l}") } else { l }),
            );
            continue;
        }
        if refers_to_local_code(line) {
            return Ok(Err(Uncacheable(format!(
                "{line:?} installs local code, which can change without the requirements changing"
            ))));
        }
        out.insert(line.split_whitespace().collect::<Vec<_>>().join(" "));
    }
    Ok(Ok(()))
}

/// `# comment` and ` # comment` end a line; `#` inside a URL (`#egg=`) does not.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    match line.find(" #").or_else(|| line.find("\t#")) {
        Some(i) => &line[..i],
        None => line,
    }
}

fn include(line: &str) -> Option<(&'static str, &str)> {
    for (prefix, flag) in [
        ("--requirement", "-r"),
        ("--constraint", "-c"),
        ("-r", "-r"),
        ("-c", "-c"),
    ] {
        if let Some(rest) = line.strip_prefix(prefix) {
            let rest = rest.strip_prefix('=').unwrap_or(rest).trim();
            // `-rfile` is valid pip syntax; `--requirementx` is not an include.
            if rest.is_empty()
                || (prefix.starts_with("--") && !line[prefix.len()..].starts_with([' ', '=', '\t']))
            {
                continue;
            }
            return Some((flag, rest));
        }
    }
    None
}

fn refers_to_local_code(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    l.starts_with("-e ")
        || l.starts_with("--editable")
        || l.starts_with('.')
        || l.starts_with('/')
        || l.starts_with("~")
        || l.contains("file:")
        || l.contains(" @ ./")
        || l.contains(" @ /")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn inputs(reqs: &[&str]) -> KeyInputs {
        KeyInputs {
            python_version: "3.11.7".into(),
            package_manager: "uv".into(),
            requirements: reqs.iter().map(|s| s.to_string()).collect(),
            ..KeyInputs::default()
        }
    }

    #[test]
    fn key_is_order_insensitive_and_input_sensitive() {
        let a = cache_key(&inputs(&["six==1.16.0", "attrs"]));
        assert_eq!(a.len(), 64);
        assert_eq!(a, cache_key(&inputs(&["attrs", "six==1.16.0", "attrs"])));
        assert_ne!(a, cache_key(&inputs(&["six==1.15.0", "attrs"])));
        let mut other = inputs(&["six==1.16.0", "attrs"]);
        other.system_site_packages = true;
        assert_ne!(a, cache_key(&other));
        let mut other = inputs(&["six==1.16.0", "attrs"]);
        other.cuda_version = Some("12.1".into());
        assert_ne!(a, cache_key(&other));
        let mut other = inputs(&["six==1.16.0", "attrs"]);
        other.python_version = "3.11.8".into();
        assert_ne!(a, cache_key(&other));
    }

    #[test]
    fn nested_files_count_by_content() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(
            d.path().join("requirements.txt"),
            "# top\nsix==1.16.0  # pinned\n\n-r sub/base.txt\n",
        )
        .unwrap();
        std::fs::write(d.path().join("sub/base.txt"), "attrs==23.2.0\n-c c.txt\n").unwrap();
        std::fs::write(d.path().join("sub/c.txt"), "idna<4\n").unwrap();
        let set = normalise_files(&[d.path().join("requirements.txt")])
            .unwrap()
            .unwrap();
        assert_eq!(set, vec!["-c idna<4", "attrs==23.2.0", "six==1.16.0"]);
        let text = normalise_text("-r requirements.txt\n", Some(d.path()))
            .unwrap()
            .unwrap();
        assert_eq!(text, set);
        std::fs::write(d.path().join("sub/base.txt"), "attrs==23.1.0\n").unwrap();
        let changed = normalise_files(&[d.path().join("requirements.txt")])
            .unwrap()
            .unwrap();
        assert_ne!(changed, set);
    }

    #[test]
    fn local_code_and_cycles() {
        assert!(normalise_text("-e .\n", None).unwrap().is_err());
        assert!(normalise_text("./pkg\n", None).unwrap().is_err());
        assert!(
            normalise_text("x @ file:///tmp/x\n", None)
                .unwrap()
                .is_err()
        );
        assert!(normalise_text("-r a.txt\n", None).unwrap().is_err());
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "-r b.txt\nsix\n").unwrap();
        std::fs::write(d.path().join("b.txt"), "-r a.txt\nattrs\n").unwrap();
        let set = normalise_files(&[d.path().join("a.txt")]).unwrap().unwrap();
        assert_eq!(set, vec!["attrs", "six"]);
        assert!(normalise_text("-r missing.txt\n", Some(d.path())).is_err());
    }
}
