"""The real Python clearml-agent (3.0.3) against our server: execute, daemon, abort.

The agent is told (harness.ClientEnv) to run tasks with the harness venv's interpreter and to build
and install nothing (CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL=1 + CLEARML_AGENT_SKIP_PIP_VENV_INSTALL=
<python>), so a task starts in about a second and needs no network.
"""

from __future__ import annotations

import time

import pytest

from harness import SCRIPTS, unique, wait_for

pytestmark = pytest.mark.agent


def _param(section: str, name: str, value, type_: str = "str") -> dict:
    return {"section": section, "name": name, "value": str(value), "type": type_, "description": ""}


def _create_with_sdk(client_env, project: str, name: str) -> str:
    """Task.create(script=...) as `clearml-task` / users do: a literal script, no repository."""
    script = client_env.stage_script(SCRIPTS / "agent_task.py")
    run = client_env.run_python(f"""
        import json
        from clearml import Task
        t = Task.create(project_name={project!r}, task_name={name!r}, script={str(script)!r},
                        packages=["clearml"], add_task_init_call=False)
        print("COMPAT-RESULT: " + json.dumps({{"task_id": t.id}}))
    """)
    return run.result()["task_id"]


def _enqueue_with_execute_remotely(client_env, api, queue_name: str, sleep: int, marker: str) -> str:
    """scripts/remote_job.py: Task.init + connect + execute_remotely(queue) (completed -> stopped(force)
    -> enqueue). Returns the task id, checked to be queued."""
    project, name = unique("compat daemon"), unique("remote job")
    run = client_env.run_python(SCRIPTS / "remote_job.py", project, name, queue_name, str(sleep), marker,
                                timeout=180)
    task_id = run.result()["task_id"]
    task = api.task(task_id)
    assert task["status"] == "queued", f"after execute_remotely: {task['status']} ({task.get('status_reason')})"
    assert "development" not in (task.get("system_tags") or []), "enqueue removes the development tag"
    return task_id


def _status(api, task_id):
    t = api.task(task_id)
    return t["status"], t.get("status_message") or "", t.get("status_reason") or ""


def test_execute_runs_sdk_created_task(client_env, api):
    task_id = _create_with_sdk(client_env, unique("compat execute"), unique("execute me"))
    task = api.task(task_id)
    assert task["status"] == "created"
    script = task.get("script") or {}
    assert script.get("entry_point") == "agent_task.py"
    assert "GREETING=" in (script.get("diff") or ""), "a script outside a repo is stored whole in script.diff"
    # edit a parameter through the API (status created: no force needed); the run must see it
    api.call("tasks.edit", task=task_id,
             hyperparams={"General": {"greeting": _param("General", "greeting", "bonjour"),
                                      "sleep": _param("General", "sleep", 0, "int")}})

    run = client_env.agent("execute", "--id", task_id, timeout=240)

    status, message, reason = _status(api, task_id)
    assert status == "completed", f"{status} / {reason} / {message}\n{run.describe()}"
    log = api.task_log_text(task_id)
    # the agent ships the task's stdout as log events
    assert f"GREETING=bonjour TASK={task_id}" in log, log[-3000:]
    assert "AGENT-TASK-DONE" in log
    # the task process itself (SDK under the agent) reported a scalar
    metrics = {(e["metric"], e["variant"]): e for v in (api.task(task_id).get("last_metrics") or {}).values()
               for e in v.values()}
    assert metrics[("agent", "value")]["value"] == pytest.approx(42.0)


def test_execute_unknown_task_fails_cleanly(client_env):
    missing = "0123456789abcdef0123456789abcdef"
    run = client_env.agent("execute", "--id", missing, timeout=120, check=False)
    # tasks.get_by_id must answer 400/101 with data {}: the agent then reports the id as not found
    assert run.returncode != 0, run.describe()
    assert f"Could not find task id={missing}" in run.output, run.describe()


def test_daemon_picks_enqueued_task_and_completes_it(client_env, api, agents):
    queue_name = unique("compat-daemon-q")
    queue_id = api.create_queue(queue_name)
    marker = unique("DAEMON")
    task_id = _enqueue_with_execute_remotely(client_env, api, queue_name, sleep=0, marker=marker)
    assert task_id in api.queue_task_ids(queue_id)

    worker_id = unique("compat-worker")
    client_env["CLEARML_WORKER_ID"] = worker_id
    daemon = client_env.start_agent("daemon", "--queue", queue_name, "--foreground", name="daemon")
    agents.append(daemon)

    # the daemon registers itself as a worker listening to the queue
    def registered():
        for w in api.call("workers.get_all", last_seen=0).get("workers") or []:
            if w.get("id") == worker_id:
                return w
        return None
    worker = wait_for(registered, 60, what=f"worker {worker_id} in workers.get_all")
    queues = [q.get("id") if isinstance(q, dict) else q for q in (worker.get("queues") or [])]
    assert queue_id in queues, worker

    wait_for(lambda: _status(api, task_id)[0] in ("completed", "failed", "stopped"), 180,
             what="the daemon to run the task to an end")
    status, message, reason = _status(api, task_id)
    assert status == "completed", f"{status} / {reason} / {message}\n{api.task_log_text(task_id)[-3000:]}"
    assert task_id not in api.queue_task_ids(queue_id), "get_next_task must pop the entry"
    log = api.task_log_text(task_id)
    assert f"REMOTE-RAN {marker}" in log and f"REMOTE-DONE {marker}" in log, log[-3000:]
    task = api.task(task_id)
    assert task.get("last_worker") == worker_id

    # SIGINT: the agent unregisters (workers.unregister) on its way out
    daemon.stop()
    wait_for(lambda: registered() is None, 30, what=f"worker {worker_id} to be gone after unregister")


def test_abort_running_task_via_api(client_env, api, agents):
    queue_name = unique("compat-abort-q")
    api.create_queue(queue_name)
    marker = unique("ABORT")
    task_id = _enqueue_with_execute_remotely(client_env, api, queue_name, sleep=600, marker=marker)

    client_env["CLEARML_WORKER_ID"] = unique("compat-abort-worker")
    daemon = client_env.start_agent("daemon", "--queue", queue_name, "--foreground", name="daemon")
    agents.append(daemon)

    def running():
        status, message, reason = _status(api, task_id)
        if status in ("completed", "failed", "stopped", "published", "closed"):
            pytest.fail(f"the task ended before it could be aborted: {status} / {reason} / {message}\n"
                        f"{api.task_log_text(task_id)[-3000:]}", pytrace=False)
        return f"tick 2 {marker}" in api.task_log_text(task_id)
    wait_for(running, 120, what="the task to be running")
    assert _status(api, task_id)[0] == "in_progress"

    # what the web UI's "Abort" does: tasks.stop. A worker runs the task, so the real server only
    # flags it (status_message "stopping") and leaves the stopping to the agent.
    api.call("tasks.stop", task=task_id)
    status, message, _ = _status(api, task_id)
    assert (status, message) == ("in_progress", "stopping"), (status, message)

    wait_for(lambda: _status(api, task_id)[0] != "in_progress", 60, what="the agent to stop the task")
    status, message, reason = _status(api, task_id)
    assert status == "stopped", f"{status} / {reason} / {message}"
    log = api.task_log_text(task_id)
    assert f"REMOTE-DONE {marker}" not in log, "the task process must have been killed"
    assert "aborted" in log.lower(), log[-3000:]  # "Process aborted by user" from the agent
    # and the daemon survives, ready for the next task
    time.sleep(2)
    assert daemon.alive(), daemon.output()[-4000:]


def test_stop_without_worker_stops_at_once(api):
    """tasks.stop on a task no worker runs (here: queued) stops it immediately and dequeues it."""
    queue_id = api.create_queue(unique("compat-stop-q"))
    task_id = api.call("tasks.create", name=unique("stop me"), type="training")["id"]
    api.call("tasks.enqueue", task=task_id, queue=queue_id)
    assert task_id in api.queue_task_ids(queue_id)
    api.call("tasks.stop", task=task_id)
    assert api.task(task_id)["status"] == "stopped"
    assert task_id not in api.queue_task_ids(queue_id)
