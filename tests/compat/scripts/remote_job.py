"""Local part: Task.init, connect parameters, execute_remotely(queue) -> the process exits.
Remote part (under the agent daemon): prints, optionally runs long (the abort test).

Locally: python remote_job.py PROJECT NAME QUEUE SLEEP MARKER
Under the agent there are no arguments: connect() returns the values stored on the task.
"""
import json
import sys
import time

from clearml import Task

argv = sys.argv[1:]
project, name, queue, sleep, marker = argv if len(argv) == 5 else ("?", "?", "?", "0", "")

task = Task.init(project_name=project, task_name=name)
params = task.connect({"sleep": int(sleep), "marker": marker}, name="General")
print("COMPAT-RESULT: " + json.dumps({"task_id": task.id}), flush=True)
task.execute_remotely(queue_name=queue, exit_process=True)

# --- only under the agent from here on ---
print(f"REMOTE-RAN {params['marker']}", flush=True)
for i in range(int(params["sleep"])):
    print(f"tick {i} {params['marker']}", flush=True)
    time.sleep(0.5)
print(f"REMOTE-DONE {params['marker']}", flush=True)
