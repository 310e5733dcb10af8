//! `task logs [--follow]`: the console log, paged, and followed while the task runs.

use super::*;

/// Reads the task log forward from where it left off. `events.get_task_log` pages on
/// `from_timestamp` (exclusive); lines that share the last timestamp are re-read from
/// `last - 1` and the ones already printed skipped, so none is lost or printed twice whether
/// or not the server extends a page to the end of a timestamp (the real server does).
pub(super) struct LogCursor {
    task: String,
    last_ts: Option<i64>,
    seen_at_last: usize,
}

impl LogCursor {
    /// Prints the new lines; returns how many.
    async fn pump(&mut self, api: &Api) -> anyhow::Result<usize> {
        let mut printed = 0;
        let mut strict = false;
        loop {
            let mut body = json!({
                "task": self.task,
                "batch_size": LOG_BATCH,
                "navigate_earlier": false,
                "order": "asc",
            });
            if let Some(ts) = self.last_ts {
                body["from_timestamp"] = json!(if strict { ts } else { ts - 1 });
            }
            let data = match api.call("events.get_task_log", body).await {
                Ok(d) => d,
                Err(e) if e.codes() == Some((404, 0)) => {
                    bail!("the server does not serve task logs (events.get_task_log: {e})")
                }
                Err(e) => return Err(explain(e, "cannot read the task log")),
            };
            let events = data
                .get("events")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if events.is_empty() {
                return Ok(printed);
            }
            let mut skip = if strict { 0 } else { self.seen_at_last };
            let mut new = 0;
            for e in &events {
                let ts = e.get("timestamp").and_then(Value::as_f64).map(|t| t as i64);
                if let (Some(ts), Some(last)) = (ts, self.last_ts) {
                    if ts < last {
                        continue;
                    }
                    if ts == last && skip > 0 {
                        skip -= 1;
                        continue;
                    }
                }
                print_log_line(s(e, "msg"));
                new += 1;
                match ts {
                    Some(t) if Some(t) == self.last_ts => self.seen_at_last += 1,
                    Some(t) => {
                        self.last_ts = Some(t);
                        self.seen_at_last = 1;
                    }
                    None => {}
                }
            }
            printed += new;
            if new == 0 {
                // A whole page of lines already printed: the server cut a run of lines that
                // share one timestamp; step over it.
                if !strict && events.len() >= LOG_BATCH {
                    strict = true;
                    continue;
                }
                return Ok(printed);
            }
            strict = false;
        }
    }
}

pub(super) fn print_log_line(msg: &str) {
    let mut line = crate::term::for_stdout(msg).into_owned();
    if !line.ends_with('\n') {
        line.push('\n');
    }
    // A closed stdout ends the command (exit 0); other write errors are not worth stopping for.
    let _ = crate::term::write_stdout(line.as_bytes());
}

pub(super) async fn logs(api: &Api, task: &str, follow: bool) -> anyhow::Result<ExitCode> {
    let id = resolve_task(api, task).await?;
    let mut cursor = LogCursor {
        task: id.clone(),
        last_ts: None,
        seen_at_last: 0,
    };
    if !follow {
        cursor.pump(api).await?;
        return Ok(ExitCode::SUCCESS);
    }
    loop {
        // Status first, then the lines: every line written before the task ended is printed.
        let status = task_status(api, &id).await?;
        cursor.pump(api).await?;
        if status != "queued" && status != "in_progress" {
            return Ok(
                if matches!(status.as_str(), "completed" | "published" | "closed") {
                    eprintln!("Task {id} {status}");
                    ExitCode::SUCCESS
                } else {
                    eprintln!("Task {id} is {status}");
                    ExitCode::FAILURE
                },
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
