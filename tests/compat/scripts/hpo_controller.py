"""The HyperParameterOptimizer controller, run locally against our server; its trials run on
the execution queue (our daemon serves it).

    python hpo_controller.py PROJECT QUEUE TRIAL_SCRIPT STRATEGY CONCURRENT X_VALUES
      STRATEGY: grid | random;  X_VALUES: comma-separated values of General/x
"""
import json
import sys
import time

from clearml import Task
from clearml.automation import DiscreteParameterRange, GridSearch, HyperParameterOptimizer, RandomSearch

project, queue, trial_script, strategy, concurrent, values = sys.argv[1:7]
values = [float(v) for v in values.split(",")]

base = Task.create(project_name=project, task_name="hpo base", script=trial_script, packages="")
base.set_parameters({"General/x": 0.0})

controller = Task.init(project_name=project, task_name="hpo controller", task_type=Task.TaskTypes.optimizer,
                       reuse_last_task_id=False)
optimizer = HyperParameterOptimizer(
    base_task_id=base.id,
    hyper_parameters=[DiscreteParameterRange("General/x", values=values)],
    objective_metric_title="objective",
    objective_metric_series="loss",
    objective_metric_sign="min",
    optimizer_class=GridSearch if strategy == "grid" else RandomSearch,
    max_number_of_concurrent_tasks=int(concurrent),
    execution_queue=queue,
    total_max_jobs=len(values),
    # the SDK's defaults poll every 2 min and report every 5 min: stop() waits for the
    # reporter's sleep to end, so with the defaults a short search takes minutes to return
    pool_period_min=0.02,
)
optimizer.set_report_period(0.02)
started = time.monotonic()
optimizer.start()
finished = optimizer.wait(timeout=2.5)
waited = time.monotonic() - started
top = optimizer.get_top_experiments(1)
created = sorted(optimizer.get_optimizer().get_created_jobs_ids())
optimizer.stop()
print("COMPAT-RESULT: " + json.dumps({
    "base_id": base.id,
    "controller_id": controller.id,
    "finished": finished,
    "waited_s": waited,
    "created": created,
    "top": [{"id": t.id, "x": t.get_parameters().get("General/x")} for t in top],
}), flush=True)
controller.close()
