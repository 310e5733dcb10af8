//! Uncommitted changes stored with a task (`script.diff`), applied with `git apply`.

use std::path::{Component, Path, PathBuf};

use crate::git::{Git, args};
use crate::{Reporter, VcsError};

/// Whether `diff` is a git diff rather than a literal script: after leading whitespace it starts
/// with `diff ` (any case), or with `submodule ` and then `diff ` on the second line.
pub fn is_git_diff(diff: &str) -> bool {
    let text = diff.trim_start().to_lowercase();
    if text.starts_with("diff ") {
        return true;
    }
    let mut lines = text.lines();
    lines.next().is_some_and(|l| l.starts_with("submodule "))
        && lines.next().is_some_and(|l| l.starts_with("diff "))
}

/// Applies `diff` in `repo_root` with `git apply --unidiff-zero --whitespace=nowarn`.
///
/// As the Python agent does, a file named by a `--- a/<path>` header that is missing from the
/// checkout is created empty first (only inside `repo_root`); the files so created are removed
/// again when the diff does not apply. New files (`--- /dev/null`) need nothing special.
pub fn apply_diff(repo_root: &Path, diff: &str, reporter: &dyn Reporter) -> Result<(), VcsError> {
    if diff.trim().is_empty() {
        return Ok(());
    }
    let git = Git::new("git".as_ref(), &[], reporter, []);
    let mut created: Vec<PathBuf> = Vec::new();
    for rel in old_paths(diff) {
        let path = repo_root.join(&rel);
        if path.symlink_metadata().is_ok() {
            continue;
        }
        let made = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&path).map(drop));
        if let Err(e) = made {
            remove_all(&created);
            return Err(VcsError::Io {
                context: format!("creating {}", path.display()),
                source: e,
            });
        }
        created.push(path);
    }
    git.say(&format!(
        "applying uncommitted changes in {}",
        repo_root.display()
    ));
    let mut input = diff.as_bytes().to_vec();
    input.push(b'\n');
    let result = git.run_with_input(
        Some(repo_root),
        &args!["apply", "--unidiff-zero", "--whitespace=nowarn"],
        None,
        Some(&input),
        true,
    );
    match result {
        Ok(_) => {
            git.say("applied uncommitted changes");
            Ok(())
        }
        Err(e) => {
            remove_all(&created);
            Err(VcsError::Diff(e.detail()))
        }
    }
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        // Best effort: the error that made us clean up is the one to report.
        let _ = std::fs::remove_file(p);
    }
}

/// The relative paths of the `--- a/<path>` headers, skipping lines inside hunks (a removed
/// line `-- a/x` looks like a header) and any path that would leave the repository.
fn old_paths(diff: &str) -> Vec<PathBuf> {
    let mut in_header = true;
    let mut out = Vec::new();
    for line in diff.lines() {
        if line.starts_with("diff ") {
            in_header = true;
        } else if line.starts_with("@@") {
            in_header = false;
        } else if in_header {
            let raw = if let Some(rest) = line.strip_prefix("--- \"") {
                unquote(rest.strip_suffix('"').unwrap_or(rest))
            } else if let Some(rest) = line.strip_prefix("--- ") {
                // Non-git tools append "\t<timestamp>".
                rest.split('\t').next().unwrap_or(rest).to_string()
            } else {
                continue;
            };
            let Some(rel) = raw.strip_prefix("a/") else {
                continue;
            };
            let rel = PathBuf::from(rel);
            let inside = rel.components().all(|c| matches!(c, Component::Normal(_)))
                && rel
                    .components()
                    .next()
                    .is_some_and(|c| c.as_os_str() != ".git");
            if inside {
                out.push(rel);
            }
        }
    }
    out
}

/// Undoes git's C-style quoting of a path (`\"`, `\\`, `\t`, `\n`, octal bytes).
fn unquote(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' || i + 1 >= bytes.len() {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        let next = bytes[i + 1];
        match next {
            b'0'..=b'7' if i + 3 < bytes.len() => {
                let oct = std::str::from_utf8(&bytes[i + 1..i + 4])
                    .ok()
                    .and_then(|o| u8::from_str_radix(o, 8).ok());
                match oct {
                    Some(v) => {
                        out.push(v);
                        i += 4;
                    }
                    None => {
                        out.push(next);
                        i += 2;
                    }
                }
            }
            _ => {
                out.push(match next {
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b'a' => 0x07,
                    b'b' => 0x08,
                    b'f' => 0x0c,
                    b'v' => 0x0b,
                    other => other,
                });
                i += 2;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_git_diffs() {
        assert!(is_git_diff("\n  diff --git a/x b/x\n"));
        assert!(is_git_diff("DIFF --git a/x b/x"));
        assert!(is_git_diff("submodule sub 1..2\ndiff --git a/x b/x"));
        assert!(!is_git_diff("submodule sub\nprint(1)"));
        assert!(!is_git_diff("import os\ndiff = 1"));
        assert!(!is_git_diff(""));
    }

    #[test]
    fn header_paths() {
        let diff = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n--- a/not-a-header\n+y\n\
                    diff --git a/d/y b/d/y\n--- \"a/d/sp ace\\303\\251\"\n+++ b/d/y\n@@ -0,0 +1 @@\n+z\n\
                    diff --git a/e b/e\n--- a/../evil\n+++ b/e\n--- /dev/null\n";
        assert_eq!(
            old_paths(diff),
            vec![PathBuf::from("x.py"), PathBuf::from("d/sp aceé")]
        );
    }
}
