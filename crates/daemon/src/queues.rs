//! Queue names to ids, the way `--queue` is read: by the one rule of `clearml_api::lookup`
//! (an existing id, else the exact name, else the name ignoring case; several matches are an
//! error); none given means the server's default queue.

use clearml_api::Client;
use serde_json::{Value, json};

use crate::DaemonError;

/// A queue the worker listens to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    pub id: String,
    pub name: String,
}

/// Resolves `names` in order. `create` makes missing queues (`--create-queue`).
pub async fn resolve(
    client: &Client,
    names: &[String],
    create: bool,
) -> Result<Vec<Queue>, DaemonError> {
    if names.is_empty() {
        return Ok(vec![default_queue(client).await?]);
    }
    let mut out: Vec<Queue> = Vec::new();
    for name in names {
        let q = match find(client, name).await? {
            Some(q) => q,
            None if create => {
                let r = client.call("queues.create", json!({"name": name})).await?;
                let id = r
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                Queue {
                    id,
                    name: name.clone(),
                }
            }
            None => {
                return Err(DaemonError::Queue(format!(
                    "queue '{name}' does not exist (use --create-queue to create it{})",
                    suggestions(client, name).await
                )));
            }
        };
        if !out.iter().any(|o| o.id == q.id) {
            out.push(q);
        }
    }
    Ok(out)
}

async fn find(client: &Client, name: &str) -> Result<Option<Queue>, DaemonError> {
    use clearml_api::lookup::{self, LookupError};
    match lookup::queue(client, name).await {
        Ok(f) => Ok(Some(Queue {
            id: f.id,
            name: f.name,
        })),
        Err(LookupError::NotFound { .. }) => Ok(None),
        Err(LookupError::Api(e)) => Err(e.into()),
        Err(e) => Err(DaemonError::Queue(e.to_string())),
    }
}

async fn suggestions(client: &Client, name: &str) -> String {
    let Ok(r) = client
        .call("queues.get_all", json!({"only_fields": ["id", "name"]}))
        .await
    else {
        return String::new();
    };
    let lower = name.to_lowercase();
    let names: Vec<String> = queues_of(&r)
        .into_iter()
        .map(|q| q.name)
        .filter(|n| {
            let n = n.to_lowercase();
            n.contains(&lower) || lower.contains(&n)
        })
        .take(10)
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!("; did you mean: {}?", names.join(", "))
    }
}

async fn default_queue(client: &Client) -> Result<Queue, DaemonError> {
    if let Ok(r) = client.call("queues.get_default", json!({})).await
        && let Some(id) = r.get("id").and_then(Value::as_str)
    {
        return Ok(Queue {
            id: id.to_string(),
            name: r
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("default")
                .to_string(),
        });
    }
    find(client, "default").await?.ok_or_else(|| {
        DaemonError::Queue(
            "no --queue given and the server has no default queue; name one with --queue".into(),
        )
    })
}

fn queues_of(r: &Value) -> Vec<Queue> {
    r.get("queues")
        .and_then(Value::as_array)
        .map(|qs| {
            qs.iter()
                .filter_map(|q| {
                    Some(Queue {
                        id: q.get("id")?.as_str()?.to_string(),
                        name: q
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
