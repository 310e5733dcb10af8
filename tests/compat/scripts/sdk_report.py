"""SDK, development mode: Task.init, console text, scalars, report_text, an artifact, close.

Prints `COMPAT-RESULT: {"task_id": ..., "last_scalars": ...}` for the test to read.
"""
import argparse
import json
import os

from clearml import Task

parser = argparse.ArgumentParser()
parser.add_argument("--project", required=True)
parser.add_argument("--name", required=True)
parser.add_argument("--marker", required=True, help="a unique string put into every console/text line")
parser.add_argument("--metric", default="loss")
parser.add_argument("--artifact-file", default="")
parser.add_argument("--new-task", action="store_true", help="Task.init(reuse_last_task_id=False)")
args = parser.parse_args()

task = Task.init(project_name=args.project, task_name=args.name, reuse_last_task_id=not args.new_task)
print(f"console line {args.marker}")
logger = task.get_logger()
for i in range(3):
    logger.report_scalar(args.metric, "train", value=1.0 / (i + 1), iteration=i)
logger.report_text(f"report_text {args.marker}")
# A file name byte that does not decode: Python's json sends it as a lone surrogate (\udcff),
# which must not cost the batch it travels in.
undecodable = os.fsdecode(b"file_\xff.txt")
logger.report_text(f"undecodable {undecodable} {args.marker}")
if args.artifact_file:
    task.upload_artifact("data_file", artifact_object=args.artifact_file, wait_on_upload=True)
task.flush(wait_for_uploads=True)
# reloads the task and reads last_metrics (KeyError if min_value/max_value are missing)
last = task.get_last_scalar_metrics()
print("COMPAT-RESULT: " + json.dumps({"task_id": task.id, "last_scalars": last}))
task.close()
