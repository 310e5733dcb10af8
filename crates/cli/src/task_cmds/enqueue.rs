//! `task enqueue` and `task abort`.

use super::*;

pub(super) async fn enqueue(
    api: &Api,
    task: &str,
    queue: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let (qid, qname) = match queue {
        Some(q) => resolve_queue(api, q).await?,
        None => {
            let d = api
                .call("queues.get_default", json!({}))
                .await
                .map_err(|e| {
                    explain(
                        e,
                        "no --queue given and the server has no default queue; pass --queue",
                    )
                })?;
            (s(&d, "id").to_string(), s(&d, "name").to_string())
        }
    };
    match api
        .call("tasks.enqueue", json!({"task": id, "queue": qid}))
        .await
    {
        Ok(_) => {
            eprintln!("Task {id} enqueued in {qname}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.codes() == Some((400, 110)) => {
            let status = task_status(api, &id).await.unwrap_or_default();
            bail!(
                "cannot enqueue task {id}: it is {status} (created, stopped and failed tasks can be enqueued)"
            )
        }
        Err(e) => Err(explain(e, &format!("cannot enqueue task {id}"))),
    }
}

pub(super) async fn task_doc(api: &Api, id: &str) -> anyhow::Result<Value> {
    match api.call("tasks.get_by_id", json!({ "task": id })).await {
        Ok(d) => d
            .get("task")
            .cloned()
            .ok_or_else(|| anyhow!("the server returned no task for {id}")),
        Err(e) if e.codes() == Some((400, 101)) => bail!("unknown task id {id}"),
        Err(e) => Err(explain(e, &format!("cannot read task {id}"))),
    }
}

pub(super) async fn task_status(api: &Api, id: &str) -> anyhow::Result<String> {
    let t = api
        .list(
            "tasks.get_all",
            json!({"id": [id], "only_fields": ["id", "status", "status_message"], "search_hidden": true}),
            "tasks",
        )
        .await?;
    t.first()
        .map(|t| s(t, "status").to_string())
        .ok_or_else(|| anyhow!("unknown task id {id}"))
}

pub(super) async fn abort(api: &Api, task: &str) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    match api.call("tasks.stop", json!({ "task": id })).await {
        Ok(_) => {}
        Err(e) if e.codes() == Some((400, 110)) => {
            let status = task_status(api, &id).await.unwrap_or_default();
            bail!("cannot abort task {id}: it is {status}, not queued or running")
        }
        Err(e) => return Err(explain(e, &format!("cannot abort task {id}"))),
    }
    let t = task_doc(api, &id).await?;
    let status = s(&t, "status");
    if status == "stopped" {
        eprintln!("Task {id} stopped");
    } else if s(&t, "status_message").contains("stopping") {
        let worker = s(&t, "last_worker");
        if worker.is_empty() {
            eprintln!("Task {id} is {status}: its worker was asked to stop it");
        } else {
            eprintln!("Task {id} is {status}: worker {worker} was asked to stop it");
        }
    } else {
        eprintln!("Task {id} is {status}");
    }
    Ok(ExitCode::SUCCESS)
}
