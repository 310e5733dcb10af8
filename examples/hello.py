"""The example task: prints a few lines and, when the clearml SDK is installed, reports a scalar."""
import math

for i in range(5):
    print(f"step {i}: loss={math.exp(-i):.4f}")

try:
    from clearml import Task

    task = Task.current_task()
    if task is not None:
        task.get_logger().report_scalar("loss", "train", value=math.exp(-5), iteration=5)
except ImportError:
    pass
print("done")
