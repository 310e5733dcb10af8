//! `docker run` argument lists as groups: a switch and the values that follow it.
//!
//! A group starts at a token beginning with `-`. A switch written `--name=value` is complete; a
//! switch without `=` also owns the following tokens that do not start with `-` (its values).
//! Tokens before the first switch form a group of their own and are kept as they are.

use regex::Regex;

/// The switch's name without dashes or value: `--network=host` -> `network`, `-e` -> `e`.
/// `--net` is docker's alias of `--network` and is reported as `network`.
pub fn switch_name(token: &str) -> Option<&str> {
    let t = token.trim();
    if !t.starts_with('-') || t == "-" || t == "--" {
        return None;
    }
    if let Some(long) = t.strip_prefix("--") {
        let name = long.split('=').next().unwrap_or(long);
        return Some(if name == "net" { "network" } else { name });
    }
    // Short switches are one letter; `-eA=1` and `-it` are named by their first letter.
    let short = &t[1..];
    short
        .char_indices()
        .nth(1)
        .map_or(Some(short), |(i, _)| Some(&short[..i]))
}

/// The argument list cut into groups (see the module doc).
pub fn groups(args: &[String]) -> Vec<&[String]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=args.len() {
        let boundary = match args.get(i) {
            None => true,
            Some(t) => {
                // A switch starts a new group; so does anything after a `--x=v` switch.
                switch_name(t).is_some()
                    || (switch_name(&args[start]).is_some() && args[start].contains('='))
            }
        };
        if boundary {
            out.push(&args[start..i]);
            start = i;
        }
    }
    out
}

/// The switch names present in `args`.
pub fn switches(args: &[String]) -> Vec<&str> {
    args.iter().filter_map(|t| switch_name(t)).collect()
}

/// Whether any of `names` is given in `args`.
pub fn has_switch(args: &[String], names: &[&str]) -> bool {
    switches(args).iter().any(|s| names.contains(s))
}

/// Keeps only the groups whose switch token matches one of `filters` (regexes tried at the
/// start of the token, as Python's `re.match`). With no filters everything is kept.
pub fn allow_only(args: &[String], filters: &[Regex]) -> Vec<String> {
    if filters.is_empty() {
        return args.to_vec();
    }
    groups(args)
        .into_iter()
        .filter(|g| {
            let head = g[0].trim();
            switch_name(head).is_some()
                && filters
                    .iter()
                    .any(|f| f.find(head).is_some_and(|m| m.start() == 0))
        })
        .flatten()
        .cloned()
        .collect()
}

/// `args` without the groups of the named switches, and the names that were removed.
pub fn strip(args: &[String], names: &[String]) -> (Vec<String>, Vec<String>) {
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for g in groups(args) {
        match switch_name(&g[0]) {
            Some(n) if names.iter().any(|x| x == n) => {
                if !removed.iter().any(|r: &String| r == n) {
                    removed.push(n.to_string());
                }
            }
            _ => kept.extend(g.iter().cloned()),
        }
    }
    (kept, removed)
}

/// Expands `$NAME` and `${NAME}` with `lookup`; unknown names are left as written.
pub fn expand_vars(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let (name, consumed) = if let Some(inner) = after.strip_prefix('{') {
            match inner.find('}') {
                Some(end) => (&inner[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        match valid.then(|| lookup(name)).flatten() {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[pos..pos + 1 + consumed]),
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// Expands variables in the values of `-e`/`--env` groups only (`-e K=$V` -> `-e K=value`).
pub fn expand_env_values(args: &[String], lookup: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    for g in groups(args) {
        let is_env = matches!(switch_name(&g[0]), Some("e" | "env"));
        for (i, t) in g.iter().enumerate() {
            let value_token = i > 0 || t.contains('=');
            if is_env && value_token {
                match t.split_once('=') {
                    Some((k, v)) => out.push(format!("{k}={}", expand_vars(v, lookup))),
                    None => out.push(t.clone()),
                }
            } else {
                out.push(t.clone());
            }
        }
    }
    out
}

/// Merges the agent's extra arguments with the task's (clearml-agent's rule). With
/// `extra_precedes` the extra arguments come first, and the task loses the protected switches
/// that the extra arguments also give; otherwise the task's come first and the extra
/// arguments lose them.
pub fn merge(
    task: &[String],
    extra: &[String],
    protected: &[String],
    extra_precedes: bool,
) -> Vec<String> {
    let (first, second) = if extra_precedes {
        (extra, task)
    } else {
        (task, extra)
    };
    let taken: Vec<String> = switches(first)
        .into_iter()
        .filter(|s| protected.iter().any(|p| p == s))
        .map(str::to_string)
        .collect();
    let (second, _) = strip(second, &taken);
    first
        .iter()
        .chain(second.iter())
        .filter(|a| !a.is_empty())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn groups_keep_values_with_their_switch() {
        let a = v(&[
            "--ipc=host",
            "-e",
            "A=1",
            "B=2",
            "--privileged",
            "-v",
            "/a:/b",
        ]);
        let g: Vec<Vec<String>> = groups(&a).into_iter().map(|g| g.to_vec()).collect();
        assert_eq!(
            g,
            vec![
                v(&["--ipc=host"]),
                v(&["-e", "A=1", "B=2"]),
                v(&["--privileged"]),
                v(&["-v", "/a:/b"])
            ]
        );
        assert_eq!(switch_name("--net=x"), Some("network"));
        assert_eq!(switch_name("value"), None);
        assert_eq!(switch_name("-eA=1"), Some("e"));
        assert_eq!(switch_name("-it"), Some("i"));
    }

    #[test]
    fn filters_are_an_allowlist_of_switches() {
        let f = vec![Regex::new("^-e$").unwrap(), Regex::new("^--env").unwrap()];
        let a = v(&["-e", "A=1", "--privileged", "-v", "/:/host", "--env=B=2"]);
        assert_eq!(allow_only(&a, &f), v(&["-e", "A=1", "--env=B=2"]));
        assert_eq!(allow_only(&a, &[]), a);
    }

    #[test]
    fn strip_removes_switch_and_value_and_names_it() {
        let a = v(&["--entrypoint", "/bin/evil", "-e", "A=1", "--entrypoint=/x"]);
        let (kept, removed) = strip(&a, &v(&["entrypoint"]));
        assert_eq!(kept, v(&["-e", "A=1"]));
        assert_eq!(removed, v(&["entrypoint"]));
    }

    #[test]
    fn vars_expand_and_unknown_ones_stay() {
        let look = |n: &str| (n == "HOME").then(|| "/home/u".to_string());
        assert_eq!(
            expand_vars("$HOME/x:${HOME}/y", &look),
            "/home/u/x:/home/u/y"
        );
        assert_eq!(
            expand_vars("$NOPE and $ and ${x", &look),
            "$NOPE and $ and ${x"
        );
        let a = v(&["-e", "H=$HOME", "-v", "$HOME:/h", "--env=Z=${HOME}"]);
        assert_eq!(
            expand_env_values(&a, &look),
            v(&["-e", "H=/home/u", "-v", "$HOME:/h", "--env=Z=/home/u"])
        );
    }

    #[test]
    fn protected_switches_follow_precedence() {
        let p = v(&["privileged", "security-opt", "network", "ipc"]);
        let task = v(&["--network", "bridge", "--ipc=private", "-e", "T=1"]);
        let extra = v(&["--network=host", "-e", "X=1"]);
        assert_eq!(
            merge(&task, &extra, &p, true),
            v(&["--network=host", "-e", "X=1", "--ipc=private", "-e", "T=1"])
        );
        assert_eq!(
            merge(&task, &extra, &p, false),
            v(&[
                "--network",
                "bridge",
                "--ipc=private",
                "-e",
                "T=1",
                "-e",
                "X=1"
            ])
        );
    }
}
