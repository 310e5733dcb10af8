"""Our Rust agent in docker mode (`clearml-agent daemon --docker`) runs a task that the real
clearml SDK created with `task.set_base_docker(image, arguments, setup script)`: the container is
the local test image (scripts/test-image), the environment (the SDK from PyPI) is built inside it,
and the SDK in the container reports a scalar to our server.

Needs docker and PyPI; the proxy's CA reaches the container through agent.extra_docker_arguments,
as a user behind a corporate proxy would pass it.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from harness import REPO, SCRIPTS, BackgroundProc, server_binary, unique, wait_for

IMAGE = "clearml-agent-test/python:bookworm"


def _docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    if subprocess.run(["docker", "version"], capture_output=True).returncode != 0:
        return False
    return subprocess.run([str(REPO / "scripts" / "test-image"), IMAGE], capture_output=True).returncode == 0


def test_rust_daemon_docker_mode_runs_sdk_task_with_base_docker(client_env, api, agents):
    if not _docker_ready():
        pytest.skip("docker or the test image is not available")
    queue_name = unique("rust-docker-q")
    queue_id = api.create_queue(queue_name)
    project, name = unique("rust docker"), unique("sdk docker job")
    run = client_env.run_python(SCRIPTS / "rust_docker_job.py", project, name, queue_name, IMAGE, timeout=180)
    task_id = run.result()["task_id"]
    container = api.task(task_id).get("container") or {}
    assert container.get("image") == IMAGE, container

    cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
    with open(client_env.config_file, "a") as f:
        f.write(
            "\nagent.extra_docker_arguments: [\"-v\", \"%s:/etc/clearml-ca.pem:ro\", "
            "\"-e\", \"SSL_CERT_FILE=/etc/clearml-ca.pem\", \"-e\", \"PIP_CERT=/etc/clearml-ca.pem\", "
            "\"-e\", \"REQUESTS_CA_BUNDLE=/etc/clearml-ca.pem\"]\n" % cert
        )
    env = {k: v for k, v in client_env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    for k in ("CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"):
        env.pop(k, None)
    worker_id = unique("rust-docker-worker")
    env["CLEARML_WORKER_ID"] = worker_id
    uv = REPO / ".cache" / "test-tools" / "uv-venv" / "bin" / "uv"
    if uv.exists():
        env["CLEARML_BOOTSTRAP_UV_EXEC"] = str(uv)
    env["UV_CACHE_DIR"] = str(REPO / ".cache" / "uv-cache")
    daemon = BackgroundProc([str(server_binary()), "daemon", "--queue", queue_name, "--foreground", "--docker"],
                            env=env, cwd=client_env.work, log_path=client_env.root / "rust-docker-daemon.log")
    agents.append(daemon)

    wait_for(lambda: api.task(task_id)["status"] in ("completed", "failed", "stopped"), 600,
             what="our agent to run the SDK task in docker to an end")
    task = api.task(task_id)
    log = api.task_log_text(task_id)
    assert task["status"] == "completed", f"{task['status']} / {task.get('status_reason')}\n{log[-4000:]}\n" \
                                          f"{daemon.output()[-4000:]}"
    assert f"RUST-DOCKER-RAN image={IMAGE} greeting=from-sdk-arguments in_container=True" in log, log[-4000:]
    assert "SDK-SETUP-SCRIPT-RAN" in log, log[-4000:]
    assert "RUST-DOCKER-DONE" in log
    assert api.secret_key not in log
    metrics = task.get("last_metrics") or {}
    values = [v for variants in metrics.values() for v in variants.values()
              if v.get("metric") == "loss" and v.get("variant") == "train"]
    assert values and abs(values[0]["value"] - 1.5) < 1e-9, metrics
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=clearml-task-id={task_id}"],
                         capture_output=True, text=True)
    assert out.stdout.strip() == "", out.stdout
