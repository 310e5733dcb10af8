"""Local part: Task.init, set_base_docker(image, arguments, setup script), execute_remotely(queue).
Remote part (under our Rust agent in docker mode, inside the image): print what the container
gives the task, report a scalar.

Locally: python rust_docker_job.py PROJECT NAME QUEUE IMAGE
"""
import json
import os
import sys

from clearml import Task

argv = sys.argv[1:]
project, name, queue, image = argv if len(argv) == 4 else ("?", "?", "?", "?")

task = Task.init(project_name=project, task_name=name)
task.set_base_docker(
    docker_image=image,
    docker_arguments="-e GREETING=from-sdk-arguments",
    docker_setup_bash_script=["echo SDK-SETUP-SCRIPT-RAN"],
)
print("COMPAT-RESULT: " + json.dumps({"task_id": task.id}), flush=True)
task.execute_remotely(queue_name=queue, exit_process=True)

# --- only under the agent from here on ---
print(f"RUST-DOCKER-RAN image={os.environ.get('CLEARML_DOCKER_IMAGE')} "
      f"greeting={os.environ.get('GREETING')} in_container={os.path.exists('/.dockerenv')}", flush=True)
task.get_logger().report_scalar("loss", "train", value=1.5, iteration=1)
task.flush(wait_for_uploads=True)
print("RUST-DOCKER-DONE", flush=True)
