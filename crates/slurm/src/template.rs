//! Job templates: a bash script with `#SBATCH` lines and `${CLEARML_...}` variables.
//!
//! Every `${CLEARML_...}` in the text is ours (use `$NAME` without braces for environment
//! variables of the job). A variable may carry a default after the first colon,
//! `${CLEARML_TASK.hyperparams.slurm.gpus:1}`. A name we do not know, or a value the task does not
//! have and no default, is an error naming the variable.
//!
//! Values are quoted for the place they land in, so no task field can inject shell: the
//! renderer follows bash's quoting as it reads (plain words, `'...'`, `"..."`, `$'...'`,
//! `$(...)`, backticks, comments and here-documents) and writes each value as a literal of that
//! context. In comment lines (`#SBATCH`, which sbatch reads itself) and here-documents, control
//! characters become spaces so a value can never start a new line there.
//! `${CLEARML_AGENT_EXECUTE}` is the one exception: it is a command we build (each of its words
//! quoted) and it is written as is.

use serde_json::Value;

/// The template used when none is given.
pub const DEFAULT_TEMPLATE: &str = r#"#!/bin/bash
#SBATCH --job-name=clearml-${CLEARML_TASK.id}
#SBATCH --cpus-per-task=${CLEARML_TASK.hyperparams.slurm.cpus:1}
echo "ClearML task ${CLEARML_TASK.id} (${CLEARML_TASK.name}) from queue ${CLEARML_QUEUE_NAME} in Slurm job $SLURM_JOB_ID on $(hostname)"
${CLEARML_AGENT_EXECUTE}
"#;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unknown template variable ${{{0}}}")]
    Unknown(String),
    #[error(
        "template variable ${{{0}}} has no value for this task and no default (write ${{{0}:default}})"
    )]
    Missing(String),
    #[error("unterminated template variable at line {0}: a `${{CLEARML_` without its `}}`")]
    Unterminated(usize),
}

/// What the variables stand for, for one task.
#[derive(Clone, Debug)]
pub struct Vars<'a> {
    /// The task document (`tasks.get_by_id`'s `task`).
    pub task: &'a Value,
    /// The project's name (the task only holds its id).
    pub project_name: Option<String>,
    pub queue_name: String,
    pub queue_id: String,
    pub worker_id: String,
    /// `${CLEARML_AGENT_EXECUTE}`: a ready shell command.
    pub execute: String,
}

enum Lookup {
    Value(String),
    Raw(String),
    Missing,
    Unknown,
}

fn str_at<'v>(v: &'v Value, path: &[&str]) -> Option<&'v Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

impl Vars<'_> {
    fn lookup(&self, name: &str) -> Lookup {
        let val = |o: Option<String>| o.map_or(Lookup::Missing, Lookup::Value);
        match name {
            "CLEARML_QUEUE_NAME" => Lookup::Value(self.queue_name.clone()),
            "CLEARML_QUEUE_ID" => Lookup::Value(self.queue_id.clone()),
            "CLEARML_WORKER_ID" => Lookup::Value(self.worker_id.clone()),
            "CLEARML_AGENT_EXECUTE" => Lookup::Raw(self.execute.clone()),
            "CLEARML_TASK.id" => val(str_at(self.task, &["id"]).and_then(as_text)),
            "CLEARML_TASK.name" => val(str_at(self.task, &["name"]).and_then(as_text)),
            "CLEARML_TASK.project" => val(self.project_name.clone()),
            "CLEARML_TASK.container.image" => {
                let image = str_at(self.task, &["container", "image"])
                    .and_then(as_text)
                    .filter(|s| !s.trim().is_empty())
                    .or_else(|| {
                        str_at(self.task, &["execution", "docker_cmd"])
                            .and_then(Value::as_str)
                            .and_then(|s| s.split_whitespace().next())
                            .map(str::to_string)
                    });
                val(image)
            }
            _ => {
                let Some(rest) = name.strip_prefix("CLEARML_TASK.hyperparams.") else {
                    return Lookup::Unknown;
                };
                let Some((section, param)) = rest.split_once('.') else {
                    return Lookup::Unknown;
                };
                val(str_at(self.task, &["hyperparams", section, param, "value"]).and_then(as_text))
            }
        }
    }
}

/// A word bash reads back as exactly `s`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    if s.chars().any(char::is_control) {
        let mut out = String::from("$'");
        for c in s.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\'' => out.push_str("\\'"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c if c.is_control() => {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("\\x{b:02x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('\'');
        return out;
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn no_controls(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// A value in a comment line, as sbatch reads `#SBATCH` options (it understands both quotes).
fn comment_quote(s: &str) -> String {
    let s = no_controls(s);
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        s
    } else if !s.contains('\'') {
        format!("'{s}'")
    } else {
        format!("\"{}\"", s.replace('"', ""))
    }
}

/// The bash reading context at a point of the template.
#[derive(Clone, Debug, PartialEq)]
enum Ctx {
    /// Plain words; `Sub(depth)` is inside `$(...)` with `depth` extra open parens.
    Plain,
    Sub(u32),
    Backtick,
    Single,
    Double,
    AnsiC,
    Comment,
    Heredoc {
        delim: String,
        quoted: bool,
        tabs: bool,
    },
}

fn escape_for(ctx: &Ctx, v: &str) -> String {
    match ctx {
        Ctx::Plain | Ctx::Sub(_) | Ctx::Backtick => shell_quote(v),
        Ctx::Single => format!("'{}'", shell_quote(v)),
        Ctx::AnsiC => {
            let mut out = String::new();
            for c in v.chars() {
                match c {
                    '\\' | '\'' => {
                        out.push('\\');
                        out.push(c);
                    }
                    c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32 & 0xff)),
                    c => out.push(c),
                }
            }
            out
        }
        Ctx::Double => {
            let mut out = String::new();
            for c in v.chars() {
                if matches!(c, '\\' | '$' | '`' | '"') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
        Ctx::Comment => comment_quote(v),
        Ctx::Heredoc { quoted: true, .. } => no_controls(v),
        Ctx::Heredoc { quoted: false, .. } => {
            let mut out = String::new();
            for c in no_controls(v).chars() {
                if matches!(c, '\\' | '$' | '`') {
                    out.push('\\');
                }
                out.push(c);
            }
            out
        }
    }
}

/// [`escape_for`], then once more for each enclosing backtick substitution: bash reads the
/// text between backticks once for `\\`, `` \` `` and `\$` before parsing it.
fn escape_in(stack: &[Ctx], ctx: &Ctx, v: &str) -> String {
    let mut s = escape_for(ctx, v);
    for _ in stack.iter().filter(|c| **c == Ctx::Backtick) {
        let mut out = String::with_capacity(s.len() + 8);
        for c in s.chars() {
            if matches!(c, '\\' | '`' | '$') {
                out.push('\\');
            }
            out.push(c);
        }
        s = out;
    }
    s
}

/// Renders `template` for one task.
pub fn render(template: &str, vars: &Vars<'_>) -> Result<String, TemplateError> {
    let chars: Vec<char> = template.chars().collect();
    let mut out = String::with_capacity(template.len() + 256);
    let mut stack: Vec<Ctx> = vec![Ctx::Plain];
    let mut pending_heredocs: Vec<Ctx> = Vec::new();
    let mut line = 1usize;
    let mut i = 0usize;
    let word_start = |out: &str| {
        out.chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || ";&|()".contains(c))
    };
    while i < chars.len() {
        let c = chars[i];
        let ctx = stack.last().cloned().unwrap_or(Ctx::Plain);
        // A template variable, in any context.
        if c == '$' && template_var_at(&chars, i) {
            let Some(end) = chars[i..].iter().position(|&c| c == '}').map(|p| i + p) else {
                return Err(TemplateError::Unterminated(line));
            };
            let expr: String = chars[i + 2..end].iter().collect();
            if expr.contains('\n') {
                return Err(TemplateError::Unterminated(line));
            }
            let (name, default) = match expr.split_once(':') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (expr.clone(), None),
            };
            match vars.lookup(&name) {
                Lookup::Raw(cmd) => out.push_str(&cmd),
                Lookup::Value(v) => out.push_str(&escape_in(&stack, &ctx, &v)),
                Lookup::Missing => match default {
                    Some(d) => out.push_str(&escape_in(&stack, &ctx, &d)),
                    None => return Err(TemplateError::Missing(name)),
                },
                Lookup::Unknown => return Err(TemplateError::Unknown(name)),
            }
            i = end + 1;
            continue;
        }
        if c == '\n' {
            line += 1;
        }
        match ctx {
            Ctx::Heredoc {
                ref delim, tabs, ..
            } => {
                // Line-based: the body ends at a line that is exactly the delimiter.
                let at_line_start = out.ends_with('\n');
                if at_line_start {
                    let rest: String = chars[i..].iter().take_while(|&&c| c != '\n').collect();
                    let candidate = if tabs {
                        rest.trim_start_matches('\t')
                    } else {
                        rest.as_str()
                    };
                    if candidate == delim {
                        out.push_str(&rest);
                        i += rest.chars().count();
                        stack.pop();
                        if let Some(next) = pending_heredocs.pop() {
                            // The delimiter's own line end comes next; the next body follows it.
                            stack.push(next);
                        }
                        continue;
                    }
                }
                out.push(c);
                i += 1;
            }
            Ctx::Comment => {
                out.push(c);
                i += 1;
                if c == '\n' {
                    stack.pop();
                    enter_heredocs(&mut stack, &mut pending_heredocs);
                }
            }
            Ctx::Single => {
                out.push(c);
                i += 1;
                if c == '\'' {
                    stack.pop();
                }
            }
            Ctx::AnsiC | Ctx::Double => {
                if c == '\\' {
                    out.push(c);
                    if let Some(&n) = chars.get(i + 1) {
                        out.push(n);
                        if n == '\n' {
                            line += 1;
                        }
                    }
                    i += 2;
                    continue;
                }
                out.push(c);
                i += 1;
                let closing = if ctx == Ctx::AnsiC { '\'' } else { '"' };
                if c == closing {
                    stack.pop();
                } else if ctx == Ctx::Double && c == '$' && chars.get(i) == Some(&'(') {
                    out.push('(');
                    i += 1;
                    stack.push(Ctx::Sub(0));
                } else if ctx == Ctx::Double && c == '`' {
                    stack.push(Ctx::Backtick);
                }
            }
            Ctx::Plain | Ctx::Sub(_) | Ctx::Backtick => {
                let at_word = word_start(&out);
                match c {
                    '\\' => {
                        out.push(c);
                        if let Some(&n) = chars.get(i + 1) {
                            out.push(n);
                            if n == '\n' {
                                line += 1;
                            }
                        }
                        i += 2;
                        continue;
                    }
                    '#' if at_word => stack.push(Ctx::Comment),
                    '\'' => stack.push(Ctx::Single),
                    '"' => stack.push(Ctx::Double),
                    '$' if chars.get(i + 1) == Some(&'\'') => {
                        out.push_str("$'");
                        i += 2;
                        stack.push(Ctx::AnsiC);
                        continue;
                    }
                    '$' if chars.get(i + 1) == Some(&'(') => {
                        out.push_str("$(");
                        i += 2;
                        stack.push(Ctx::Sub(0));
                        continue;
                    }
                    '`' => {
                        if ctx == Ctx::Backtick {
                            stack.pop();
                        } else {
                            stack.push(Ctx::Backtick);
                        }
                    }
                    '(' => {
                        if let Some(Ctx::Sub(d)) = stack.last_mut() {
                            *d += 1;
                        }
                    }
                    ')' => match stack.last_mut() {
                        Some(Ctx::Sub(0)) => {
                            stack.pop();
                        }
                        Some(Ctx::Sub(d)) => *d -= 1,
                        _ => {}
                    },
                    '<' if chars.get(i + 1) == Some(&'<') && chars.get(i + 2) != Some(&'<') => {
                        let (consumed, heredoc) = read_heredoc_op(&chars[i..]);
                        let text: String = chars[i..i + consumed].iter().collect();
                        out.push_str(&text);
                        i += consumed;
                        if let Some(h) = heredoc {
                            pending_heredocs.insert(0, h);
                        }
                        continue;
                    }
                    '\n' => {
                        out.push(c);
                        i += 1;
                        enter_heredocs(&mut stack, &mut pending_heredocs);
                        continue;
                    }
                    _ => {}
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// `${CLEARML_` starts here.
fn template_var_at(chars: &[char], i: usize) -> bool {
    const START: &str = "${CLEARML_";
    START
        .chars()
        .enumerate()
        .all(|(k, c)| chars.get(i + k) == Some(&c))
}

/// At a line end, the here-documents opened on that line begin (first one first).
fn enter_heredocs(stack: &mut Vec<Ctx>, pending: &mut Vec<Ctx>) {
    if let Some(first) = pending.pop() {
        stack.push(first);
    }
}

/// Reads `<<[-] WORD` from the start of `chars`: how many chars, and the body's context.
fn read_heredoc_op(chars: &[char]) -> (usize, Option<Ctx>) {
    let mut i = 2;
    let tabs = chars.get(i) == Some(&'-');
    if tabs {
        i += 1;
    }
    while chars.get(i).is_some_and(|c| *c == ' ' || *c == '\t') {
        i += 1;
    }
    let mut delim = String::new();
    let mut quoted = false;
    while let Some(&c) = chars.get(i) {
        match c {
            '\'' | '"' => {
                quoted = true;
                i += 1;
                while let Some(&d) = chars.get(i) {
                    i += 1;
                    if d == c {
                        break;
                    }
                    delim.push(d);
                }
            }
            '\\' => {
                quoted = true;
                if let Some(&n) = chars.get(i + 1) {
                    delim.push(n);
                }
                i += 2;
            }
            c if c.is_whitespace() || ";&|<>()".contains(c) => break,
            c => {
                delim.push(c);
                i += 1;
            }
        }
    }
    if delim.is_empty() {
        return (i, None);
    }
    (
        i,
        Some(Ctx::Heredoc {
            delim,
            quoted,
            tabs,
        }),
    )
}

/// The `#!` interpreter of a script (words), `/bin/bash` when it has none.
pub fn interpreter(script: &str) -> Vec<String> {
    script
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| vec!["/bin/bash".to_string()])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;
    use std::process::Command;

    fn task() -> Value {
        json!({
            "id": "t1",
            "name": "it's a $(touch pwned) `touch pwned2` \"x\" \\ ; rm -rf ~\nsecond line",
            "hyperparams": {"slurm": {"gpus": {"section": "slurm", "name": "gpus", "value": "2"}}},
            "container": {"image": ""},
            "execution": {"docker_cmd": "nvidia/cuda:12 --ipc=host"},
        })
    }

    fn vars(task: &Value) -> Vars<'_> {
        Vars {
            task,
            project_name: Some("proj".into()),
            queue_name: "q".into(),
            queue_id: "qid".into(),
            worker_id: "w:slurm".into(),
            execute: "echo EXECUTE".into(),
        }
    }

    /// Runs `script` in bash and returns its stdout.
    fn bash(script: &str, dir: &std::path::Path) -> String {
        let out = Command::new("bash")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    #[test]
    fn values_are_literal_in_every_quoting_context() {
        let t = task();
        let name = t["name"].as_str().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        for tpl in [
            "printf '%s' ${CLEARML_TASK.name}",
            "printf '%s' \"${CLEARML_TASK.name}\"",
            "printf '%s' \"a $(printf '%s' ${CLEARML_TASK.name})\" | tail -c +3",
            "printf '%s' '${CLEARML_TASK.name}'",
            "x=${CLEARML_TASK.name}; printf '%s' \"$x\"",
            "x=`printf '%s' ${CLEARML_TASK.name}`; printf '%s' \"$x\"",
            "printf '%s' \"`printf '%s' ${CLEARML_TASK.name}`\"",
            "printf '%s' \"$(printf '%s' \"${CLEARML_TASK.name}\")\"",
            "printf '%s' $'${CLEARML_TASK.name}'",
        ] {
            let script = render(tpl, &vars(&t)).unwrap();
            let got = bash(&script, dir.path());
            // Backticks and $(...) strip trailing newlines only; the value has none at the end.
            assert_eq!(got, name, "template {tpl:?} rendered as {script:?}");
            assert!(!dir.path().join("pwned").exists(), "{script}");
            assert!(!dir.path().join("pwned2").exists(), "{script}");
        }
        // In here-documents and comments a value stays on its line.
        let script = render(
            "cat <<EOF\n${CLEARML_TASK.name}\nEOF\n# ${CLEARML_TASK.name}\ncat <<'E2'\n${CLEARML_TASK.name}\nE2\necho end",
            &vars(&t),
        )
        .unwrap();
        let got = bash(&script, dir.path());
        let flat = name.replace('\n', " ");
        assert_eq!(got, format!("{flat}\n{flat}\nend\n"), "{script}");
        assert!(!dir.path().join("pwned").exists());
    }

    #[test]
    fn variables_defaults_and_errors() {
        let t = task();
        let v = vars(&t);
        let r = |s: &str| render(s, &v);
        assert_eq!(r("${CLEARML_TASK.id}").unwrap(), "t1");
        assert_eq!(r("${CLEARML_TASK.project}").unwrap(), "proj");
        assert_eq!(r("${CLEARML_TASK.hyperparams.slurm.gpus:1}").unwrap(), "2");
        assert_eq!(r("${CLEARML_TASK.hyperparams.slurm.cpus:4}").unwrap(), "4");
        assert_eq!(
            r("#SBATCH --x=${CLEARML_TASK.container.image}").unwrap(),
            "#SBATCH --x=nvidia/cuda:12"
        );
        assert_eq!(
            r("${CLEARML_QUEUE_NAME}/${CLEARML_QUEUE_ID}/${CLEARML_WORKER_ID}").unwrap(),
            "q/qid/w:slurm"
        );
        assert_eq!(r("${CLEARML_AGENT_EXECUTE}").unwrap(), "echo EXECUTE");
        // Bash's own variables are left alone.
        assert_eq!(
            r("echo ${HOME} $SLURM_JOB_ID").unwrap(),
            "echo ${HOME} $SLURM_JOB_ID"
        );
        assert_eq!(
            r("echo ${CLEARML_TASK.hyperparams.slurm.cpus}").unwrap_err(),
            TemplateError::Missing("CLEARML_TASK.hyperparams.slurm.cpus".into())
        );
        let e = r("#SBATCH --gres=${CLEARML_GPUS}").unwrap_err();
        assert_eq!(e, TemplateError::Unknown("CLEARML_GPUS".into()));
        assert!(e.to_string().contains("${CLEARML_GPUS}"), "{e}");
        assert_eq!(
            r("a\n${CLEARML_TASK.id").unwrap_err(),
            TemplateError::Unterminated(2)
        );
    }

    #[test]
    fn comment_values_are_one_sbatch_option() {
        let t = json!({"id": "t", "name": "a 'b'\nc"});
        let s = render("#SBATCH --job-name=${CLEARML_TASK.name}\necho", &vars(&t)).unwrap();
        assert_eq!(s, "#SBATCH --job-name=\"a 'b' c\"\necho");
    }

    #[test]
    fn default_template_renders() {
        let t = task();
        let s = render(DEFAULT_TEMPLATE, &vars(&t)).unwrap();
        assert!(s.contains("#SBATCH --cpus-per-task=1\n"), "{s}");
        assert!(s.contains("\necho EXECUTE\n"), "{s}");
        assert_eq!(interpreter(&s), vec!["/bin/bash"]);
    }
}
