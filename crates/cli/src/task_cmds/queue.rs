//! `queue list` and `queue create`.

use super::*;

pub(super) async fn list_queues(api: &Api, as_json: bool) -> anyhow::Result<ExitCode> {
    let queues = api.list("queues.get_all", json!({}), "queues").await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&queues)?);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |q: &Value, key: &str| -> Vec<String> {
        q.get(key)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let rows: Vec<Vec<String>> = queues
        .iter()
        .map(|q| {
            let mut name = s(q, "name").to_string();
            if list(q, "system_tags").iter().any(|t| t == "default") {
                name.push_str(" (default)");
            }
            let entries = q
                .get("entries")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            vec![
                name,
                s(q, "id").to_string(),
                entries.to_string(),
                list(q, "tags").join(","),
            ]
        })
        .collect();
    print_table(&["NAME", "ID", "QUEUED", "TAGS"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn create_queue(
    api: &Api,
    name: &str,
    tags: &[String],
) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "name": name });
    if !tags.is_empty() {
        body["tags"] = json!(tags);
    }
    match api.call("queues.create", body).await {
        Ok(d) => {
            let id = s(&d, "id");
            eprintln!("Queue {name} created");
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.codes() == Some((400, 801)) => bail!("queue {name} already exists"),
        Err(e) => Err(explain(e, &format!("cannot create queue {name}"))),
    }
}
