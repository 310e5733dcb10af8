"""SDK read side: fetch what an earlier run reported, the way users do in notebooks."""
import json
import sys

from clearml import Task

task = Task.get_task(task_id=sys.argv[1])
out = {
    "id": task.id,
    "name": task.name,
    "status": str(task.get_status()),
    "scalars": task.get_reported_scalars(),
    "console": task.get_reported_console_output(number_of_reports=100),
    "last_scalars": task.get_last_scalar_metrics(),
    "artifacts": {},
}
for name, artifact in task.artifacts.items():
    path = artifact.get_local_copy()
    with open(path, "rb") as f:
        out["artifacts"][name] = f.read().decode("utf-8", "replace")
print("COMPAT-RESULT: " + json.dumps(out))
