"""An HPO trial (the optimizer's base task; our daemon runs its clones): read General/x as the
server holds it, report objective/loss = (x - 2)^2 + 0.5 once. A negative x crashes before
reporting, as a broken trial would. The task records no requirements: the daemon builds an
empty env, and `clearml` comes from the harness venv on PYTHONPATH."""
from clearml import Task

task = Task.init(project_name="compat hpo", task_name="hpo trial")
params = task.connect({"x": 0.0}, name="General")
x = float(params["x"])
if x < 0:
    raise SystemExit(f"HPO-TRIAL-CRASH x={x}")
loss = (x - 2.0) ** 2 + 0.5
task.get_logger().report_scalar("objective", "loss", value=loss, iteration=1)
print(f"HPO-TRIAL x={x} loss={loss}", flush=True)
task.flush(wait_for_uploads=True)
