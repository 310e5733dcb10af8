//! What a task asks to run, read from its `script` section (the task document of
//! `tasks.get_by_id`). Tolerant of missing fields and of the shapes different SDK versions
//! write; a field of the wrong type is an error that names it, never a panic.

use serde_json::Value;

/// How to run the entry point.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Interpreter {
    Python,
    Shell(String),
}

/// The `script` section, normalised.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionInfo {
    pub repository: Option<String>,
    pub branch: Option<String>,
    pub commit: Option<String>,
    pub tag: Option<String>,
    pub entry_point: Option<String>,
    pub working_dir: Option<String>,
    /// A git diff or a literal script, as the SDK stored it.
    pub diff: Option<String>,
    /// `script.binary`, e.g. `python3.10` or `bash`.
    pub binary: Option<String>,
    /// `script.requirements.pip` as text (the SDK stores a string; some writers a list).
    pub pip_requirements: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("task {task}: field {field}: {message}")]
pub struct TaskError {
    pub task: String,
    pub field: String,
    pub message: String,
}

impl ExecutionInfo {
    pub fn from_task(task: &Value) -> Result<ExecutionInfo, TaskError> {
        let id = task
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let script = match task.get("script") {
            None | Some(Value::Null) => return Ok(ExecutionInfo::default()),
            Some(Value::Object(m)) => m,
            Some(_) => {
                return Err(TaskError {
                    task: id,
                    field: "script".into(),
                    message: "expected an object".into(),
                });
            }
        };
        let text = |field: &str| -> Result<Option<String>, TaskError> {
            match script.get(field) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(TaskError {
                    task: id.clone(),
                    field: format!("script.{field}"),
                    message: format!("expected a string, found {other}"),
                }),
            }
        };
        let mut info = ExecutionInfo {
            repository: text("repository")?.map(|s| s.trim().to_string()),
            branch: text("branch")?.map(|s| s.trim().to_string()),
            commit: text("version_num")?.map(|s| s.trim().to_string()),
            tag: text("tag")?.map(|s| s.trim().to_string()),
            entry_point: text("entry_point")?,
            working_dir: text("working_dir")?,
            diff: text("diff")?,
            binary: text("binary")?.map(|s| s.trim().to_string()),
            pip_requirements: None,
        };
        info.pip_requirements = match script.get("requirements").and_then(|r| r.get("pip")) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Array(lines)) => Some(
                lines
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ),
            Some(other) => {
                return Err(TaskError {
                    task: id,
                    field: "script.requirements.pip".into(),
                    message: format!("expected text or a list of lines, found {other}"),
                });
            }
        }
        .filter(|s| !s.trim().is_empty());
        // An entry point written "script.py:subdir" carries its working dir, as the Python
        // agent accepts when working_dir is empty.
        if info.working_dir.is_none()
            && let Some(ep) = info.entry_point.clone()
            && let Some((e, wd)) = ep.rsplit_once(':')
            && !e.is_empty()
            && !wd.contains(' ')
            && !e.starts_with("-m ")
            && !e.starts_with("-c ")
        {
            info.entry_point = Some(e.to_string());
            info.working_dir = Some(wd.to_string());
        }
        Ok(info)
    }

    /// `python` for `python3.10`, `/usr/bin/python3`, or nothing; `bash`/`sh`/`zsh` run
    /// the entry point as a shell script.
    pub fn interpreter(&self) -> Interpreter {
        let name = self
            .binary
            .as_deref()
            .map(|b| b.rsplit('/').next().unwrap_or(b))
            .unwrap_or("python");
        match name {
            "bash" | "sh" | "zsh" => Interpreter::Shell(self.binary.clone().unwrap_or_default()),
            _ => Interpreter::Python,
        }
    }

    /// A diff that `git apply` takes, as opposed to a literal script to write out.
    pub fn diff_is_patch(&self) -> bool {
        self.diff.as_deref().is_some_and(clearml_vcs::is_git_diff)
    }

    /// The Python agent skips the Python environment for a task with no repository, no
    /// requirements and a non-Python binary (a shell task).
    pub fn needs_python_env(&self) -> bool {
        self.repository.is_some()
            || self.pip_requirements.is_some()
            || self.interpreter() == Interpreter::Python
    }

    /// The working dir relative to the repository root; `.` when unset.
    pub fn working_dir_or_root(&self) -> &str {
        self.working_dir
            .as_deref()
            .map(str::trim)
            .filter(|w| !w.is_empty())
            .unwrap_or(".")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_typical_sdk_script() {
        let t = json!({"id": "t1", "script": {
            "repository": "https://github.com/a/b.git", "branch": "main", "version_num": "abc",
            "entry_point": "train.py", "working_dir": ".", "binary": "python3.10",
            "diff": "diff --git a/x b/x\n", "requirements": {"pip": "six==1.16.0\n"}
        }});
        let i = ExecutionInfo::from_task(&t).unwrap();
        assert_eq!(i.repository.as_deref(), Some("https://github.com/a/b.git"));
        assert_eq!(i.commit.as_deref(), Some("abc"));
        assert_eq!(i.pip_requirements.as_deref(), Some("six==1.16.0\n"));
        assert_eq!(i.interpreter(), Interpreter::Python);
        assert!(i.needs_python_env());
    }

    #[test]
    fn entry_point_may_carry_the_working_dir() {
        let t = json!({"script": {"entry_point": "run.py:src/app", "working_dir": ""}});
        let i = ExecutionInfo::from_task(&t).unwrap();
        assert_eq!(i.entry_point.as_deref(), Some("run.py"));
        assert_eq!(i.working_dir_or_root(), "src/app");
        let t = json!({"script": {"entry_point": "-m pkg.mod", "working_dir": "x"}});
        let i = ExecutionInfo::from_task(&t).unwrap();
        assert_eq!(i.entry_point.as_deref(), Some("-m pkg.mod"));
    }

    #[test]
    fn shell_tasks_need_no_python() {
        let t = json!({"script": {"binary": "/bin/bash", "entry_point": "run.sh"}});
        let i = ExecutionInfo::from_task(&t).unwrap();
        assert_eq!(i.interpreter(), Interpreter::Shell("/bin/bash".into()));
        assert!(!i.needs_python_env());
    }

    #[test]
    fn wrong_types_are_named_errors() {
        let e = ExecutionInfo::from_task(&json!({"id": "t", "script": {"branch": 5}})).unwrap_err();
        assert!(e.to_string().contains("script.branch"), "{e}");
        let e =
            ExecutionInfo::from_task(&json!({"script": {"requirements": {"pip": 5}}})).unwrap_err();
        assert!(e.to_string().contains("requirements.pip"), "{e}");
        assert_eq!(
            ExecutionInfo::from_task(&json!({})).unwrap(),
            ExecutionInfo::default()
        );
        let i = ExecutionInfo::from_task(&json!({"script": {"requirements": {"pip": ["a", "b"]}}}))
            .unwrap();
        assert_eq!(i.pip_requirements.as_deref(), Some("a\nb"));
    }
}
