//! Which agent binary docker mode mounts into an image: one whose glibc needs the image meets.
//!
//! A cargo-built agent links against the build host's glibc and does not start in an older
//! image (Ubuntu 18.04, CentOS 7). The portable build (`scripts/build-portable`, the wheel's
//! binary) needs glibc 2.17 and runs anywhere. The candidates, in this order, the first that
//! fits the image wins:
//!
//! 1. `CLEARML_AGENT_DOCKER_BINARY` (an explicit choice);
//! 2. the running binary;
//! 3. `clearml-agent-portable` beside the running binary;
//! 4. where `scripts/build-portable` puts it, for a running binary inside a cargo `target`
//!    folder (`target/x86_64-unknown-linux-gnu/release/clearml-agent`).
//!
//! The image's glibc is learnt once per image id (a `--rm` run of its `getconf`/`ldd`) and kept
//! in a small JSON cache; when the first candidate needs at most glibc 2.17 nothing is probed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::glibc::required_glibc;

/// A glibc version, `(2, 17)`.
pub type GlibcVersion = (u32, u32);

/// The oldest glibc docker mode supports; a binary needing no more runs in every such image.
pub const BASELINE_GLIBC: GlibcVersion = (2, 17);

/// The variable naming an explicit agent binary for containers.
pub const BINARY_ENV: &str = "CLEARML_AGENT_DOCKER_BINARY";

/// The name of a portable binary placed beside the agent.
pub const PORTABLE_NAME: &str = "clearml-agent-portable";

/// The shell command (run with `/bin/sh -c`) that prints the image's glibc version.
pub const PROBE_SCRIPT: &str =
    "getconf GNU_LIBC_VERSION 2>/dev/null; ldd --version 2>&1 | head -n 1";

/// One binary docker mode could mount.
#[derive(Clone, Debug, PartialEq)]
pub struct BinaryCandidate {
    pub path: PathBuf,
    /// Where it came from, for messages (`CLEARML_AGENT_DOCKER_BINARY`, `the running binary`).
    pub origin: String,
    /// Its newest glibc symbol version (`Ok(None)`: static or no glibc); `Err` says why it
    /// cannot be used (missing, unreadable).
    pub needs: Result<Option<GlibcVersion>, String>,
}

impl BinaryCandidate {
    /// Reads `path`'s glibc needs.
    pub fn read(path: PathBuf, origin: impl Into<String>) -> BinaryCandidate {
        let needs = if path.is_file() {
            required_glibc(&path).map_err(|e| e.to_string())
        } else {
            Err("not found".into())
        };
        BinaryCandidate {
            path,
            origin: origin.into(),
            needs,
        }
    }

    fn fits(&self, image: GlibcVersion) -> bool {
        matches!(self.needs, Ok(n) if n.is_none_or(|n| n <= image))
    }
}

/// The candidate paths in the documented order (see the module doc), without duplicates.
pub fn candidate_paths(explicit: Option<&Path>, running: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<(PathBuf, String)> = Vec::new();
    if let Some(p) = explicit {
        out.push((p.to_path_buf(), BINARY_ENV.into()));
    }
    out.push((running.to_path_buf(), "the running binary".into()));
    if let Some(dir) = running.parent() {
        out.push((
            dir.join(PORTABLE_NAME),
            format!("{PORTABLE_NAME} beside it"),
        ));
        // target/<profile>/clearml-agent -> target/x86_64-unknown-linux-gnu/release/clearml-agent
        if let Some(target) = dir
            .parent()
            .filter(|t| t.file_name() == Some("target".as_ref()))
        {
            out.push((
                target.join("x86_64-unknown-linux-gnu/release/clearml-agent"),
                "scripts/build-portable's output".into(),
            ));
        }
    }
    let mut seen = Vec::new();
    out.retain(|(p, _)| {
        let fresh = !seen.contains(p);
        seen.push(p.clone());
        fresh
    });
    out
}

/// Whether the image's glibc must be learnt: the first usable candidate needs more than
/// [`BASELINE_GLIBC`].
pub fn needs_probe(candidates: &[BinaryCandidate]) -> bool {
    candidates
        .iter()
        .find_map(|c| c.needs.as_ref().ok())
        .is_some_and(|n| n.is_some_and(|n| n > BASELINE_GLIBC))
}

/// The binary to mount. `image` is the image's glibc (`None`: unknown, e.g. a musl image,
/// whose failure the entry script explains). Returns the chosen candidate and a note for the
/// console when it is not the first, or the message to fail the task with.
pub fn choose_binary<'a>(
    candidates: &'a [BinaryCandidate],
    image: Option<GlibcVersion>,
    image_name: &str,
) -> Result<(&'a BinaryCandidate, Option<String>), String> {
    let usable = |c: &&BinaryCandidate| c.needs.is_ok();
    let Some(first) = candidates.iter().find(usable) else {
        let tried: Vec<String> = candidates
            .iter()
            .map(|c| {
                format!(
                    "{} ({}: {})",
                    c.path.display(),
                    c.origin,
                    c.needs.as_ref().err().map_or("", String::as_str)
                )
            })
            .collect();
        return Err(format!(
            "no agent binary to mount into the container: {}",
            tried.join(", ")
        ));
    };
    let Some(image) = image else {
        return Ok((first, None));
    };
    if let Some(c) = candidates.iter().filter(usable).find(|c| c.fits(image)) {
        let note = (!std::ptr::eq(c, first)).then(|| {
            format!(
                "image {image_name} has glibc {}.{}, older than {} needs ({}); mounting {} ({}) instead",
                image.0,
                image.1,
                first.path.display(),
                show_needs(&first.needs),
                c.path.display(),
                c.origin
            )
        });
        return Ok((c, note));
    }
    let looked: Vec<String> = candidates
        .iter()
        .map(|c| match &c.needs {
            Ok(n) => format!("{} ({}, needs {})", c.path.display(), c.origin, show(*n)),
            Err(why) => format!("{} ({}: {why})", c.path.display(), c.origin),
        })
        .collect();
    Err(format!(
        "image {image_name} has glibc {}.{}, but the agent binary {} needs glibc {}, and no portable agent binary was found (looked at: {}). \
         Build one with scripts/build-portable (or use the binary of the clearml-agent wheel; both need glibc 2.17) and \
         set {BINARY_ENV} to its path or put it beside the agent as {PORTABLE_NAME}",
        image.0,
        image.1,
        first.path.display(),
        show_needs(&first.needs),
        looked.join("; ")
    ))
}

fn show(n: Option<GlibcVersion>) -> String {
    n.map_or("no glibc".into(), |(a, b)| format!("{a}.{b}"))
}

fn show_needs(n: &Result<Option<GlibcVersion>, String>) -> String {
    match n {
        Ok(n) => show(*n),
        Err(e) => e.clone(),
    }
}

/// Image id -> glibc version (`"2.36"`; `"none"` for an image without glibc), as a JSON file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GlibcCache {
    entries: BTreeMap<String, String>,
}

impl GlibcCache {
    /// The cache at `path`; a missing or unreadable file is an empty cache.
    pub fn load(path: &Path) -> GlibcCache {
        let entries = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice::<BTreeMap<String, String>>(&b).ok())
            .unwrap_or_default();
        GlibcCache { entries }
    }

    /// `Some(v)`: known (`v` is `None` for an image without glibc); `None`: not cached.
    pub fn get(&self, image_id: &str) -> Option<Option<GlibcVersion>> {
        let v = self.entries.get(image_id)?;
        if v == "none" {
            return Some(None);
        }
        let (a, b) = v.split_once('.')?;
        Some(Some((a.parse().ok()?, b.parse().ok()?)))
    }

    pub fn insert(&mut self, image_id: &str, v: Option<GlibcVersion>) {
        let text = v.map_or("none".to_string(), |(a, b)| format!("{a}.{b}"));
        self.entries.insert(image_id.to_string(), text);
    }

    /// Writes the cache (through a temporary file, so a concurrent reader sees whole files).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(&self.entries).map_err(std::io::Error::other)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests;
