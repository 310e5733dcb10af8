"""Local part: Task.init, connect hyperparameters, execute_remotely(queue): the task is queued.
Remote part (under our Rust agent, in the environment it built with uv): read the
hyperparameters as the server holds them (the test edits one after enqueueing), report a scalar.

Locally: python rust_agent_job.py PROJECT NAME QUEUE
"""
import json
import sys

from clearml import Task

argv = sys.argv[1:]
project, name, queue = argv if len(argv) == 3 else ("?", "?", "?")

task = Task.init(project_name=project, task_name=name)
params = task.connect({"lr": 0.5, "marker": "local"}, name="General")
print("COMPAT-RESULT: " + json.dumps({"task_id": task.id}), flush=True)
task.execute_remotely(queue_name=queue, exit_process=True)

# --- only under the agent from here on ---
print(f"RUST-AGENT-RAN marker={params['marker']} lr={params['lr']}", flush=True)
task.get_logger().report_scalar("loss", "train", value=float(params["lr"]) * 10, iteration=3)
task.flush(wait_for_uploads=True)
print("RUST-AGENT-DONE", flush=True)
