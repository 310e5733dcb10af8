"""A task body the Python agent runs (clearml-agent execute / daemon).

Under the agent, Task.init attaches to CLEARML_TASK_ID and connect() returns the values stored on
the server (which the test edits through the API before the run), so the output proves the
hyperparameters made the round trip.
"""
import time

from clearml import Task

task = Task.init(project_name="compat agent", task_name="agent task")
params = task.connect({"greeting": "hello", "sleep": 0}, name="General")
print(f"GREETING={params['greeting']} TASK={task.id}")
task.get_logger().report_scalar("agent", "value", value=42.0, iteration=7)
for i in range(int(params["sleep"])):
    print(f"tick {i}", flush=True)
    time.sleep(0.5)
print("AGENT-TASK-DONE")
