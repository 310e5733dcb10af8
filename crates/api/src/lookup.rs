//! Finding a task or a queue from what a person typed: an id or a name. The CLI (`task
//! enqueue NAME`, `--queue NAME`) and the daemon (`daemon --queue`, `execute --id`) use this
//! one rule:
//!
//! 1. A key that [looks like an id](looks_like_id) is the id of an existing task or queue
//!    when one has it; ids win over names.
//! 2. Otherwise the key is a name: the tasks or queues whose name is exactly the key, or, when
//!    none is, whose name equals it ignoring ASCII case.
//! 3. Exactly one match is the answer. Several are an error that lists their ids (a name
//!    shared by several tasks is never guessed at: give the id). None is
//!    [`LookupError::NotFound`].
//!
//! Hidden tasks and queues count (the server's `search_hidden`).

use serde_json::{Value, json};

use crate::{ApiError, Client};

/// The task types the server accepts (`tasks.create`'s `type`).
pub const TASK_TYPES: &[&str] = &[
    "training",
    "testing",
    "inference",
    "data_processing",
    "application",
    "monitor",
    "controller",
    "optimizer",
    "service",
    "qc",
    "custom",
];

/// What the Python agent treats as an id rather than a name: 30 or more hex digits and
/// dashes (ClearML ids are 32 hex digits).
pub fn looks_like_id(s: &str) -> bool {
    s.len() >= 30 && s.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// `^name$` with the characters escaped that both the ClearML server (Python `re`/PCRE) and
/// the embedded one (the `regex` crate) treat as special.
pub fn exact_name_pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    out.push('^');
    for c in name.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('$');
    out
}

/// A task or queue found by [`task`] or [`queue`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    pub name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no {kind} has the id or name {key:?}")]
    NotFound { kind: &'static str, key: String },
    #[error("{} {kind}s are named {key:?} ({}); give the id instead", ids.len(), ids.join(", "))]
    Ambiguous {
        kind: &'static str,
        key: String,
        ids: Vec<String>,
    },
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// The task `key` names, by the rule above.
pub async fn task(client: &Client, key: &str) -> Result<Found, LookupError> {
    find(client, Kind::Task, key).await
}

/// The queue `key` names, by the rule above.
pub async fn queue(client: &Client, key: &str) -> Result<Found, LookupError> {
    find(client, Kind::Queue, key).await
}

#[derive(Clone, Copy)]
enum Kind {
    Task,
    Queue,
}

impl Kind {
    fn endpoint(self) -> &'static str {
        match self {
            Kind::Task => "tasks.get_all",
            Kind::Queue => "queues.get_all",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Kind::Task => "tasks",
            Kind::Queue => "queues",
        }
    }
    fn noun(self) -> &'static str {
        match self {
            Kind::Task => "task",
            Kind::Queue => "queue",
        }
    }
}

async fn find(client: &Client, kind: Kind, key: &str) -> Result<Found, LookupError> {
    let key = key.trim();
    if looks_like_id(key) {
        let r = client
            .call(
                kind.endpoint(),
                json!({"id": [key], "only_fields": ["id", "name"], "search_hidden": true}),
            )
            .await?;
        if let Some(f) = found(&r, kind).into_iter().find(|f| f.id == key) {
            return Ok(f);
        }
    }
    let r = client
        .call(
            kind.endpoint(),
            json!({"name": format!("(?i){}", exact_name_pattern(key)),
                   "only_fields": ["id", "name"], "search_hidden": true}),
        )
        .await?;
    let all = found(&r, kind);
    let exact: Vec<Found> = all.iter().filter(|f| f.name == key).cloned().collect();
    let matches = if exact.is_empty() {
        all.into_iter()
            .filter(|f| f.name.eq_ignore_ascii_case(key))
            .collect()
    } else {
        exact
    };
    match <[Found; 1]>::try_from(matches) {
        Ok([one]) => Ok(one),
        Err(v) if v.is_empty() => Err(LookupError::NotFound {
            kind: kind.noun(),
            key: key.to_string(),
        }),
        Err(v) => Err(LookupError::Ambiguous {
            kind: kind.noun(),
            key: key.to_string(),
            ids: v.into_iter().map(|f| f.id).collect(),
        }),
    }
}

fn found(r: &Value, kind: Kind) -> Vec<Found> {
    r.get(kind.key())
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|i| {
                    Some(Found {
                        id: i.get("id")?.as_str()?.to_string(),
                        name: i
                            .get("name")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_recognised() {
        assert!(looks_like_id("0123456789abcdef0123456789abcdef"));
        assert!(looks_like_id("01234567-89ab-cdef-0123-456789abcdef"));
        assert!(!looks_like_id("default"));
        assert!(!looks_like_id("0123456789abcdef0123456789abcdeg"));
    }

    #[test]
    fn names_are_escaped() {
        assert_eq!(exact_name_pattern("a.b (1)"), r"^a\.b \(1\)$");
        assert_eq!(exact_name_pattern("plain-name_2"), "^plain-name_2$");
    }
}
