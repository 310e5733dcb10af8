"""Local part: Task.init, a "slurm" hyperparameter section (what the glue's template reads),
execute_remotely(queue). Remote part (in a Slurm job, under `clearml-agent slurm job` and our
agent's `execute`): print a marker and report a scalar through the SDK.

Locally: python slurm_sdk_job.py PROJECT NAME QUEUE N
"""
import json
import os
import sys

from clearml import Task

argv = sys.argv[1:]
project, name, queue, n = argv if len(argv) == 4 else ("?", "?", "?", "0")

task = Task.init(project_name=project, task_name=name)
slurm = task.connect({"cpus": 1}, name="slurm")
args = task.connect({"n": int(n)}, name="General")
print("COMPAT-RESULT: " + json.dumps({"task_id": task.id}), flush=True)
task.execute_remotely(queue_name=queue, exit_process=True)

# --- only in the Slurm job from here on ---
print(f"SLURM-SDK-RAN n={args['n']} job={os.environ.get('SLURM_JOB_ID')}", flush=True)
task.get_logger().report_scalar("loss", "train", value=float(args["n"]) + 0.5, iteration=1)
task.flush(wait_for_uploads=True)
print("SLURM-SDK-DONE", flush=True)
