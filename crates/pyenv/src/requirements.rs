//! Requirement sources and their hygiene before an installer sees them.
//!
//! Each source is rewritten into a temp file: `clearml-agent` lines go (the agent is not part
//! of the task's environment), `file://` references to missing paths go (frozen lists from
//! another machine or a conda build carry them), and `-r`/`-c` includes and `./relative`
//! paths become absolute, since the temp file no longer sits next to what they point at.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::EnvError;
use crate::report::Reporter;
use crate::{EnvSpec, Requirements};

/// Packages that are the installer's own tooling; the freeze leaves them out unless the
/// requirements asked for them.
const TOOLING: &[&str] = &["pip", "setuptools", "wheel", "distribute"];

/// Every `requirements.txt` from `repo_root` down to `script_dir` (absolute, or relative to
/// the root), root first. A `script_dir` outside the root yields only the root's file.
pub fn requirement_files(repo_root: &Path, script_dir: &Path) -> Vec<PathBuf> {
    let relative = relative_below(repo_root, script_dir);
    let mut dir = repo_root.to_path_buf();
    let mut found = Vec::new();
    let mut check = |dir: &Path| {
        let file = dir.join("requirements.txt");
        if file.is_file() {
            found.push(file);
        }
    };
    check(&dir);
    if let Some(relative) = relative {
        for part in relative.components() {
            match part {
                Component::Normal(name) => {
                    dir.push(name);
                    if !dir.is_dir() {
                        break;
                    }
                    check(&dir);
                }
                Component::CurDir => {}
                // `..`, a root or a prefix would leave the repository.
                _ => break,
            }
        }
    }
    found
}

fn relative_below(root: &Path, dir: &Path) -> Option<PathBuf> {
    if dir.is_relative() {
        return Some(dir.to_path_buf());
    }
    if let Ok(rel) = dir.strip_prefix(root) {
        return Some(rel.to_path_buf());
    }
    // Symlinked spellings of the same folder (e.g. /tmp vs /private/tmp).
    let root = fs::canonicalize(root).ok()?;
    let dir = fs::canonicalize(dir).ok()?;
    dir.strip_prefix(&root).ok().map(Path::to_path_buf)
}

/// One install step.
#[derive(Debug)]
pub(crate) enum Install {
    /// A cleaned requirements file; `source` says where it came from, for messages.
    File { path: PathBuf, source: String },
    /// A project folder, installed as a package.
    Project(PathBuf),
    /// One requirement line installed on its own: a priority package (before the rest) or a
    /// post package (after). An optional one may fail with a warning.
    Package {
        line: String,
        optional: bool,
        stage: &'static str,
    },
    /// The torch-family lines, installed first from the PyTorch index alone (the CUDA build),
    /// falling back to the default indexes when that fails.
    Torch {
        lines: Vec<String>,
        index: String,
        pre: bool,
    },
}

/// The cleaned requirements, ready to install.
#[derive(Debug, Default)]
pub(crate) struct Prepared {
    pub installs: Vec<Install>,
    /// Normalised names of the requested packages.
    pub names: BTreeSet<String>,
    /// Requirement lines that pin `pip` itself (they replace `pip_version`).
    pub pip_pins: Vec<String>,
    /// Keeps the temp files alive until the build ends.
    _temp: Option<tempfile::TempDir>,
}

pub(crate) fn prepare(spec: &EnvSpec, reporter: &dyn Reporter) -> Result<Prepared, EnvError> {
    let mut prepared = Prepared::default();
    let mut sources: Vec<(String, String, Option<PathBuf>, Option<PathBuf>)> = Vec::new();
    match &spec.requirements {
        Requirements::None => {
            reporter.line("Warning: installing NO task requirements or repository requirements");
            return Ok(prepared);
        }
        Requirements::Project(dir) => {
            if !dir.is_dir() {
                return Err(EnvError::Requirements(format!(
                    "project folder {} does not exist",
                    dir.display()
                )));
            }
            prepared.installs.push(Install::Project(dir.clone()));
            return Ok(prepared);
        }
        Requirements::Text(text) => sources.push((
            "the task's requirements".to_string(),
            text.clone(),
            spec.base_dir.clone(),
            spec.base_dir.clone(),
        )),
        Requirements::Files(files) => {
            for file in files {
                let text = fs::read_to_string(file)
                    .map_err(|source| EnvError::io("reading", file, source))?;
                let parent = file.parent().map(Path::to_path_buf);
                sources.push((file.display().to_string(), text, parent.clone(), parent));
            }
        }
    }

    let torch = crate::torch::torch_index(
        spec.cuda_version.as_deref(),
        spec.cpu_only,
        spec.torch_nightly,
    );
    let split = Split::new(spec, torch.is_some());
    let mut priority = Vec::new();
    let mut torch_lines = Vec::new();
    let mut post = Vec::new();
    let temp = tempfile::Builder::new()
        .prefix("clearml-requirements-")
        .tempdir()
        .map_err(|source| {
            EnvError::io("creating a temp folder in", &std::env::temp_dir(), source)
        })?;
    for (index, (source, text, include_base, path_base)) in sources.into_iter().enumerate() {
        let cleaned = clean(
            &text,
            &Context {
                source: &source,
                include_base: include_base.as_deref(),
                path_base: path_base.as_deref(),
            },
            reporter,
        )?;
        prepared.names.extend(cleaned.names);
        prepared.pip_pins.extend(cleaned.pip_pins);
        let mut kept = Vec::with_capacity(cleaned.lines.len());
        for line in cleaned.lines {
            match split.role(&line) {
                Role::Keep => kept.push(line),
                Role::Torch => torch_lines.push(line),
                Role::Priority { optional } => priority.push(Install::Package {
                    line,
                    optional,
                    stage: "priority",
                }),
                Role::Post { optional } => post.push(Install::Package {
                    line,
                    optional,
                    stage: "post",
                }),
            }
        }
        if kept.is_empty() {
            reporter.line(&format!("Nothing else to install from {source}"));
            continue;
        }
        let path = temp.path().join(format!("requirements-{index}.txt"));
        let mut body = kept.join("\n");
        body.push('\n');
        fs::write(&path, body).map_err(|source| EnvError::io("writing", &path, source))?;
        prepared.installs.push(Install::File { path, source });
    }
    // Order: priority packages one by one, torch from its index, the rest, post packages.
    let mut installs = priority;
    if let Some(index) = torch.filter(|_| !torch_lines.is_empty()) {
        reporter.line(&format!(
            "PyTorch packages ({}) will be installed from {index}",
            torch_lines.join(", ")
        ));
        installs.push(Install::Torch {
            lines: torch_lines,
            index,
            pre: spec.torch_nightly,
        });
    }
    installs.append(&mut prepared.installs);
    installs.extend(post);
    prepared.installs = installs;
    prepared._temp = Some(temp);
    Ok(prepared)
}

/// What happens to one cleaned requirement line.
#[derive(Debug, PartialEq, Eq)]
enum Role {
    Keep,
    Torch,
    Priority { optional: bool },
    Post { optional: bool },
}

/// The normalised package names that leave the main requirement set.
struct Split {
    torch: bool,
    priority: BTreeSet<String>,
    priority_optional: BTreeSet<String>,
    post: BTreeSet<String>,
    post_optional: BTreeSet<String>,
}

impl Split {
    fn new(spec: &EnvSpec, torch: bool) -> Self {
        let names = |list: &[String]| -> BTreeSet<String> {
            list.iter()
                .filter_map(|n| requirement_name(n.trim()))
                .collect()
        };
        Split {
            torch,
            priority: names(&spec.priority_packages),
            priority_optional: names(&spec.priority_optional_packages),
            post: names(&spec.post_packages),
            post_optional: names(&spec.post_optional_packages),
        }
    }

    fn role(&self, line: &str) -> Role {
        // Options, URLs and paths have no name and stay where they are.
        let Some(name) = requirement_name(line) else {
            return Role::Keep;
        };
        if self.torch && crate::torch::TORCH_PACKAGES.contains(&name.as_str()) {
            Role::Torch
        } else if self.priority.contains(&name) {
            Role::Priority { optional: false }
        } else if self.priority_optional.contains(&name) {
            Role::Priority { optional: true }
        } else if self.post.contains(&name) {
            Role::Post { optional: false }
        } else if self.post_optional.contains(&name) {
            Role::Post { optional: true }
        } else {
            Role::Keep
        }
    }
}

struct Context<'a> {
    /// For messages: "the task's requirements" or a file path.
    source: &'a str,
    /// Where `-r`/`-c` files are looked up; `None` makes them an error.
    include_base: Option<&'a Path>,
    /// Where `./relative` paths point; `None` leaves them to the installer's working folder.
    path_base: Option<&'a Path>,
}

#[derive(Debug, Default)]
struct Cleaned {
    lines: Vec<String>,
    names: BTreeSet<String>,
    pip_pins: Vec<String>,
}

fn clean(text: &str, ctx: &Context, reporter: &dyn Reporter) -> Result<Cleaned, EnvError> {
    let mut out = Cleaned::default();
    for line in logical_lines(text) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if mentions_clearml_agent(line) {
            reporter.line(&format!(
                "Skipping requirement `{}`: clearml-agent is not installed into task environments",
                crate::mask_secrets(line)
            ));
            continue;
        }
        if let Some(path) = missing_local_file(line) {
            reporter.line(&format!(
                "Skipping requirement `{}`: local file {} does not exist",
                crate::mask_secrets(line),
                path.display()
            ));
            continue;
        }
        if let Some((flag, target)) = include_option(line) {
            out.lines
                .push(format!("{flag} {}", resolve_include(flag, target, ctx)?));
            continue;
        }
        if let Some(target) = editable_arg(line) {
            out.lines
                .push(format!("-e {}", rebase(target, ctx.path_base)));
            continue;
        }
        if line.starts_with('-') {
            // Other options (`--extra-index-url`, `-f`, `--hash` ...) are the installer's to read.
            out.lines.push(line.to_string());
            continue;
        }
        if let Some(name) = requirement_name(line) {
            if name == "pip" {
                out.pip_pins.push(line.to_string());
            }
            out.names.insert(name);
        }
        out.lines.push(rebase(line, ctx.path_base));
    }
    Ok(out)
}

/// Lines with `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let trimmed = raw.trim_end();
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head);
            pending.push(' ');
        } else {
            pending.push_str(raw);
            lines.push(std::mem::take(&mut pending));
        }
    }
    if !pending.is_empty() {
        lines.push(pending);
    }
    lines
}

fn mentions_clearml_agent(line: &str) -> bool {
    line.to_ascii_lowercase()
        .replace('_', "-")
        .contains("clearml-agent")
}

/// The normalised project name at the start of a requirement line (`Foo_Bar[x]>=1` →
/// "foo-bar"); `None` for URLs and paths.
pub(crate) fn requirement_name(line: &str) -> Option<String> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
        .unwrap_or(line.len());
    let name = &line[..end];
    let next = line[end..].chars().next();
    if name.is_empty() || name.starts_with('.') || matches!(next, Some(':' | '+' | '/' | '\\')) {
        return None;
    }
    let mut normalised = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if matches!(c, '_' | '.') { '-' } else { c };
        if !(c == '-' && normalised.ends_with('-')) {
            normalised.push(c.to_ascii_lowercase());
        }
    }
    Some(normalised)
}

/// The path of a `file:` reference in the line when that path does not exist.
fn missing_local_file(line: &str) -> Option<PathBuf> {
    let start = line.to_ascii_lowercase().find("file:")?;
    let url = &line[start + "file:".len()..];
    let end = url
        .find(|c: char| c.is_whitespace() || c == '#' || c == '?' || c == ';')
        .unwrap_or(url.len());
    let url = &url[..end];
    let path = match url.strip_prefix("//") {
        Some(rest) => {
            let rest = rest.strip_prefix("localhost").unwrap_or(rest);
            // `file://host/x` names another machine; only local absolute paths are checked.
            if !rest.starts_with('/') {
                return None;
            }
            rest
        }
        None if url.starts_with('/') => url,
        // A relative `file:` path depends on the installer's folder; leave it to the installer.
        None => return None,
    };
    let path = PathBuf::from(clearml_percent::decode(path));
    (!path.exists()).then_some(path)
}

/// `-r x`, `-rx`, `--requirement x`, `--requirement=x` and the same for `-c`/`--constraint`.
fn include_option(line: &str) -> Option<(&'static str, &str)> {
    let forms: [(&str, &'static str); 4] = [
        ("--requirement", "-r"),
        ("--constraint", "-c"),
        ("-r", "-r"),
        ("-c", "-c"),
    ];
    for (prefix, flag) in forms {
        let Some(rest) = line.strip_prefix(prefix) else {
            continue;
        };
        let rest = if prefix.starts_with("--") {
            match rest.strip_prefix('=') {
                Some(value) => value,
                None if rest.starts_with(char::is_whitespace) => rest,
                None => continue,
            }
        } else {
            rest
        };
        let target = strip_comment(rest).trim().trim_matches(['"', '\'']);
        return Some((flag, target));
    }
    None
}

/// The path or URL after `-e`/`--editable`.
fn editable_arg(line: &str) -> Option<&str> {
    let rest = line
        .strip_prefix("--editable")
        .map(|r| r.strip_prefix('=').unwrap_or(r))
        .or_else(|| line.strip_prefix("-e"))?;
    let target = strip_comment(rest).trim();
    (!target.is_empty()).then_some(target)
}

/// pip's rule: `#` starts a comment only after whitespace.
fn strip_comment(text: &str) -> &str {
    text.find(" #")
        .or_else(|| text.find("\t#"))
        .map_or(text, |i| &text[..i])
}

fn resolve_include(flag: &str, target: &str, ctx: &Context) -> Result<String, EnvError> {
    if target.is_empty() {
        return Err(EnvError::Requirements(format!(
            "`{flag}` without a file name in {}",
            ctx.source
        )));
    }
    if target.contains("://") {
        return Ok(target.to_string());
    }
    let path = Path::new(target);
    let resolved = if path.is_absolute() {
        path.to_path_buf()
    } else {
        match ctx.include_base {
            Some(base) => base.join(path),
            None => {
                return Err(EnvError::Requirements(format!(
                    "`{flag} {target}` in {} needs a repository folder to resolve it, and none was given",
                    ctx.source
                )));
            }
        }
    };
    if !resolved.is_file() {
        return Err(EnvError::Requirements(format!(
            "`{flag} {target}` in {}: {} does not exist",
            ctx.source,
            resolved.display()
        )));
    }
    Ok(resolved.display().to_string())
}

/// `./pkg`, `../pkg`, `.` or `.[extra]` made absolute against `base`.
fn rebase(requirement: &str, base: Option<&Path>) -> String {
    let relative = requirement == "."
        || requirement == ".."
        || requirement.starts_with("./")
        || requirement.starts_with("../")
        || requirement.starts_with(".[");
    match base {
        Some(base) if relative => format!("{}/{requirement}", base.display()),
        _ => requirement.to_string(),
    }
}

/// The freeze lines worth recording: no `clearml-agent`, no tooling the task did not ask for.
pub(crate) fn filter_freeze(raw: &str, requested: &BTreeSet<String>) -> Vec<String> {
    raw.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter(|line| !mentions_clearml_agent(line))
        .filter(|line| match requirement_name(line) {
            Some(name) => !TOOLING.contains(&name.as_str()) || requested.contains(&name),
            None => true,
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn run_clean(text: &str, base: Option<&Path>) -> (Result<Cleaned, EnvError>, Vec<String>) {
        let lines = Mutex::new(Vec::new());
        let reporter = |l: &str| lines.lock().unwrap().push(l.to_string());
        let ctx = Context {
            source: "the task's requirements",
            include_base: base,
            path_base: base,
        };
        let result = clean(text, &ctx, &reporter);
        (result, lines.into_inner().unwrap())
    }

    #[test]
    fn hygiene() {
        let repo = tempfile::tempdir().unwrap();
        fs::write(repo.path().join("extra.txt"), "six\n").unwrap();
        let base = repo.path().display().to_string();
        let text = "# comment\n\nclearml-agent==1.9\nclearml_agent\nsix==1.16.0  # pinned\n\
                    -r extra.txt\n--constraint=extra.txt\n-e ./local\n./other[x]\n\
                    pkg @ file:///nonexistent/dir/pkg-1.0.whl\nrequests \\\n  >=2\n\
                    --extra-index-url https://u:p@h/simple\npip==23.0\nPyYAML>=6\n";
        let (cleaned, reports) = run_clean(text, Some(repo.path()));
        let cleaned = cleaned.unwrap();
        assert_eq!(
            cleaned.lines,
            [
                "six==1.16.0  # pinned".to_string(),
                format!("-r {base}/extra.txt"),
                format!("-c {base}/extra.txt"),
                format!("-e {base}/./local"),
                format!("{base}/./other[x]"),
                "requests    >=2".to_string(),
                "--extra-index-url https://u:p@h/simple".to_string(),
                "pip==23.0".to_string(),
                "PyYAML>=6".to_string(),
            ]
        );
        assert_eq!(cleaned.pip_pins, ["pip==23.0"]);
        assert!(cleaned.names.contains("pyyaml") && cleaned.names.contains("six"));
        assert_eq!(reports.len(), 3, "{reports:?}");
        assert!(reports[2].contains("/nonexistent/dir/pkg-1.0.whl"));
    }

    #[test]
    fn priority_torch_and_post_lines_are_split_out_in_order() {
        let mut spec = EnvSpec::new("/v", "/t");
        spec.requirements = Requirements::Text(
            "Cython==3.0\nsix==1.16.0\ntorch==2.1.0\nHorovod\n--extra-index-url https://x/simple\n\
             torchvision\npygobject\n"
                .into(),
        );
        spec.priority_packages = vec!["cython".into()];
        spec.priority_optional_packages = vec!["PyGObject".into()];
        spec.post_packages = vec!["horovod".into()];
        spec.cuda_version = Some("12.1".into());
        let prepared = prepare(&spec, &NullSink).unwrap();
        let kinds: Vec<String> = prepared
            .installs
            .iter()
            .map(|i| match i {
                Install::Package {
                    line,
                    optional,
                    stage,
                } => format!("{stage}:{line}:{optional}"),
                Install::Torch { lines, index, pre } => {
                    format!("torch:{}:{index}:{pre}", lines.join(","))
                }
                Install::File { path, .. } => fs::read_to_string(path).unwrap(),
                Install::Project(_) => "project".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "priority:Cython==3.0:false",
                "priority:pygobject:true",
                "torch:torch==2.1.0,torchvision:https://download.pytorch.org/whl/cu121:false",
                "six==1.16.0\n--extra-index-url https://x/simple\n",
                "post:Horovod:false",
            ]
        );
        assert!(prepared.names.contains("torch") && prepared.names.contains("horovod"));

        // Without a CUDA version (and not cpu-only) torch stays in the main set.
        spec.cuda_version = None;
        let prepared = prepare(&spec, &NullSink).unwrap();
        assert!(
            !prepared
                .installs
                .iter()
                .any(|i| matches!(i, Install::Torch { .. }))
        );
    }

    struct NullSink;
    impl Reporter for NullSink {
        fn line(&self, _: &str) {}
    }

    #[test]
    fn include_needs_a_base() {
        let (result, _) = run_clean("-r requirements/base.txt\n", None);
        let err = result.unwrap_err().to_string();
        assert!(err.contains("-r requirements/base.txt"), "{err}");
        assert!(err.contains("repository folder"), "{err}");

        let repo = tempfile::tempdir().unwrap();
        let (result, _) = run_clean("-r missing.txt\n", Some(repo.path()));
        assert!(result.unwrap_err().to_string().contains("does not exist"));
        let (result, _) = run_clean("-r\n", Some(repo.path()));
        assert!(result.is_err());
    }

    #[test]
    fn existing_file_urls_stay() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = dir.path().join("a b.whl");
        fs::write(&wheel, "").unwrap();
        let url = format!("file://{}", wheel.display()).replace(' ', "%20");
        assert_eq!(missing_local_file(&format!("pkg @ {url}")), None);
        assert_eq!(
            missing_local_file("file://localhost/nope/x.whl#egg=x"),
            Some(PathBuf::from("/nope/x.whl"))
        );
        assert_eq!(missing_local_file("file://otherhost/x"), None);
        assert_eq!(missing_local_file("six"), None);
        assert_eq!(missing_local_file("file:%"), None);
    }

    #[test]
    fn names() {
        assert_eq!(
            requirement_name("Foo_Bar.baz[x]>=1").as_deref(),
            Some("foo-bar-baz")
        );
        assert_eq!(requirement_name("pip"), Some("pip".into()));
        assert_eq!(requirement_name("git+https://x/y.git"), None);
        assert_eq!(requirement_name("https://x/y.whl"), None);
        assert_eq!(requirement_name("./x"), None);
        assert_eq!(requirement_name("ü"), None);
    }

    #[test]
    fn freeze_filter() {
        let raw = "pip==24.0\nsetuptools==65\nsix==1.16.0\nclearml-agent==1.9\n\
                   -e file:///x\nwheel==0.4\n";
        let requested: BTreeSet<String> = ["setuptools".to_string()].into();
        assert_eq!(
            filter_freeze(raw, &requested),
            ["setuptools==65", "six==1.16.0", "-e file:///x"]
        );
    }

    #[test]
    fn odd_input_does_not_panic() {
        for text in [
            "\\",
            "-",
            "--requirement",
            "-e",
            "file:",
            "é\\\n",
            "\u{0}",
            "-ré",
        ] {
            let _ = run_clean(text, None);
        }
    }
}
