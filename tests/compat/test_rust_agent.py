"""Our Rust agent (`clearml-agent daemon`, the binary under test) runs a task that the real
clearml SDK created: it builds the task's environment with uv from PyPI (the SDK recorded
`clearml` as the task's requirement), runs the script, and the SDK inside the task reads a
hyperparameter edited on the server after enqueueing and reports a scalar to our server.

This test needs PyPI, so the agent runs without the harness's blackhole proxy.
"""

from __future__ import annotations

from harness import REPO, SCRIPTS, BackgroundProc, server_binary, unique, wait_for


def _uv():
    """The uv the Rust test suites bootstrap into .cache/test-tools; without it the agent
    finds or bootstraps its own."""
    cached = REPO / ".cache" / "test-tools" / "uv-venv" / "bin" / "uv"
    return str(cached) if cached.exists() else None


def test_rust_daemon_runs_sdk_task_in_a_uv_env(client_env, api, agents):
    queue_name = unique("rust-agent-q")
    queue_id = api.create_queue(queue_name)
    project, name = unique("rust agent"), unique("sdk job")
    run = client_env.run_python(SCRIPTS / "rust_agent_job.py", project, name, queue_name, timeout=180)
    source_id = run.result()["task_id"]
    assert source_id in api.queue_task_ids(queue_id)
    # The UI's flow: clone the task, edit a hyperparameter of the clone on the server, enqueue
    # the clone. The run must see the edited values, not the ones the script set locally.
    api.call("tasks.dequeue", task=source_id)
    task_id = api.call("tasks.clone", task=source_id, new_task_name=name + " clone")["id"]
    api.call("tasks.edit_hyper_params", task=task_id, hyperparams=[
        {"section": "General", "name": "lr", "value": "0.25", "type": "float"},
        {"section": "General", "name": "marker", "value": "from-server", "type": "str"},
    ])
    api.call("tasks.enqueue", task=task_id, queue=queue_id)

    env = {k: v for k, v in client_env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    for k in ("CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"):
        env.pop(k, None)
    worker_id = unique("rust-worker")
    env["CLEARML_WORKER_ID"] = worker_id
    if _uv():
        env["CLEARML_BOOTSTRAP_UV_EXEC"] = _uv()
    env["UV_CACHE_DIR"] = str(REPO / ".cache" / "uv-cache")
    daemon = BackgroundProc([str(server_binary()), "daemon", "--queue", queue_name, "--foreground"],
                            env=env, cwd=client_env.work, log_path=client_env.root / "rust-daemon.log")
    agents.append(daemon)

    wait_for(lambda: api.task(task_id)["status"] in ("completed", "failed", "stopped"), 600,
             what="our agent to run the SDK task to an end")
    task = api.task(task_id)
    log = api.task_log_text(task_id)
    assert task["status"] == "completed", f"{task['status']} / {task.get('status_reason')}\n{log[-4000:]}\n" \
                                          f"{daemon.output()[-4000:]}"
    assert "RUST-AGENT-RAN marker=from-server lr=0.25" in log, log[-4000:]
    assert "RUST-AGENT-DONE" in log
    assert task.get("last_worker") == worker_id

    # The scalar the task reported is on our server.
    metrics = task.get("last_metrics") or {}
    values = [v for variants in metrics.values() for v in variants.values()
              if v.get("metric") == "loss" and v.get("variant") == "train"]
    assert values and abs(values[0]["value"] - 2.5) < 1e-9, metrics
    # The environment the agent built is recorded on the task.
    pip = (task.get("script") or {}).get("requirements", {}).get("pip") or ""
    assert "clearml==" in pip.replace(" ", ""), pip[:2000]
