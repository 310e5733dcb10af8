//! `worker list` (and `list`).

use super::*;

pub(super) async fn list_workers(api: &Api, as_json: bool) -> anyhow::Result<ExitCode> {
    let workers = api
        .list("workers.get_all", json!({"last_seen": 0}), "workers")
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&workers)?);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let queues: Vec<String> = w
                .get("queues")
                .and_then(Value::as_array)
                .map(|qs| {
                    qs.iter()
                        .map(|q| {
                            let n = s(q, "name");
                            if n.is_empty() { s(q, "id") } else { n }.to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let task = match (s(w, "task.id"), s(w, "task.name")) {
                ("", _) => String::new(),
                (id, "") => id.to_string(),
                (id, name) => format!("{id} ({name})"),
            };
            vec![
                s(w, "id").to_string(),
                queues.join(","),
                task,
                when(w, "last_activity_time"),
            ]
        })
        .collect();
    print_table(&["WORKER", "QUEUES", "TASK", "LAST ACTIVITY"], &rows);
    Ok(ExitCode::SUCCESS)
}
