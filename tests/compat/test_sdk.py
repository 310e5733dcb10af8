"""The real clearml SDK (2.1.12) against our server: the flows a user's training script goes through.

Every check that can be made on the server's side is made through the REST API directly
(api.py), not through the SDK, so a server that merely keeps the SDK quiet does not pass.
"""

from __future__ import annotations

import hashlib
import http.client
import math
from types import SimpleNamespace
from urllib.parse import urlparse

import pytest

from harness import SCRIPTS, ClientEnv, fail_on_bad_replies, unique

pytestmark = pytest.mark.sdk


def _metrics(task: dict) -> dict:
    """last_metrics as {(metric, variant): entry} (the server keys them by md5 hashes)."""
    out = {}
    for variants in (task.get("last_metrics") or {}).values():
        for entry in variants.values():
            out[(entry.get("metric"), entry.get("variant"))] = entry
    return out


@pytest.fixture(scope="module")
def sdk_client(server, tmp_path_factory) -> ClientEnv:
    env = ClientEnv(server, tmp_path_factory.mktemp("sdk-client"))
    yield env
    fail_on_bad_replies(env)


@pytest.fixture(scope="module")
def reported(server, sdk_client):
    """One run of scripts/sdk_report.py with an artifact; several tests inspect what it left behind.
    Names contain spaces on purpose: the artifact path, the regex name lookup and the files server
    URL decoding all have to cope with them (the SDK percent-encodes the stored URI)."""
    project = unique("compat sdk")
    name = unique("report task")
    marker = unique("MARK")
    content = "".join(f"artifact line {i} {marker}\n" for i in range(200))
    payload = sdk_client.work / "payload file.txt"
    payload.write_text(content)
    run = sdk_client.run_python(
        SCRIPTS / "sdk_report.py", "--project", project, "--name", name, "--marker", marker,
        "--artifact-file", str(payload), timeout=180,
    )
    res = run.result()
    return SimpleNamespace(project=project, name=name, marker=marker, content=content,
                           task_id=res["task_id"], last_scalars=res["last_scalars"], run=run)


# --- Task.init + console + report_scalar + upload_artifact + close ------------------------------

def test_task_init_creates_task_in_project(reported, api):
    task = api.task(reported.task_id)
    assert task["id"] == reported.task_id
    assert task["name"] == reported.name
    assert task["type"] == "training"
    assert "development" in (task.get("system_tags") or [])
    project = api.call("projects.get_by_id", project=task["project"])["project"]
    assert project["name"] == reported.project
    # tasks.edit(script=...) from the SDK: the entry point is the script it ran
    assert (task.get("script") or {}).get("entry_point") == "sdk_report.py"
    # argparse arguments are stored as hyperparameters, section "Args", values as strings
    args = (task.get("hyperparams") or {}).get("Args") or {}
    assert args.get("marker", {}).get("value") == reported.marker
    assert args["marker"].get("section") == "Args" and args["marker"].get("name") == "marker"


def test_task_close_marks_completed(reported, api):
    task = api.task(reported.task_id)
    # Task.close() sends tasks.completed(force=false) from in_progress
    assert task["status"] == "completed", task.get("status_reason")
    assert task.get("started") and task.get("completed") and task.get("last_update")


def test_scalars_kept_as_last_metrics(reported, api):
    task = api.task(reported.task_id)
    assert task.get("last_iteration") == 2
    entry = _metrics(task).get(("loss", "train"))
    assert entry, f"no loss/train in last_metrics: {task.get('last_metrics')!r}"
    assert math.isclose(entry["value"], 1 / 3, rel_tol=1e-6)
    assert math.isclose(entry["min_value"], 1 / 3, rel_tol=1e-6)
    assert math.isclose(entry["max_value"], 1.0, rel_tol=1e-6)
    # what the SDK itself read back before close (get_last_scalar_metrics)
    assert reported.last_scalars["loss"]["train"]["max"] == pytest.approx(1.0)
    assert reported.last_scalars["loss"]["train"]["last"] == pytest.approx(1 / 3)


def test_scalars_via_histogram_endpoint(reported, api):
    data = api.call("events.scalar_metrics_iter_histogram", task=reported.task_id, key="iter")
    series = data["loss"]["train"]
    assert list(series["x"]) == [0, 1, 2]
    assert series["y"] == pytest.approx([1.0, 0.5, 1 / 3])


def test_console_and_text_via_task_log(reported, api):
    events = api.task_log(reported.task_id)
    text = "\n".join(e.get("msg", "") for e in events)
    assert f"console line {reported.marker}" in text  # print() captured by the SDK
    assert f"report_text {reported.marker}" in text  # logger.report_text
    # a lone surrogate (an undecodable file name byte) arrives as U+FFFD, with its batch
    assert f"undecodable file_\ufffd.txt {reported.marker}" in text
    assert all(e.get("task") == reported.task_id for e in events)
    assert all(e.get("type") == "log" for e in events)
    # asc order: timestamps never go backwards
    stamps = [e.get("timestamp") for e in events]
    assert stamps == sorted(stamps)


def test_artifact_registered_and_downloadable(reported, api, server):
    task = api.task(reported.task_id)
    artifacts = (task.get("execution") or {}).get("artifacts")
    assert isinstance(artifacts, list), f"execution.artifacts must be a list: {artifacts!r}"
    art = {a["key"]: a for a in artifacts}.get("data_file")
    assert art, f"no data_file artifact: {artifacts!r}"
    body = reported.content.encode()
    assert art["uri"].startswith(server.files_url + "/"), art["uri"]
    assert art.get("hash") == hashlib.sha256(body).hexdigest()
    assert art.get("content_size") == len(body)
    r = api.files_get(art["uri"])  # with the API token as Bearer, as the SDK does
    assert r.status_code == 200, r.text[:300]
    assert r.content == body


def test_files_server_refuses_without_token_and_escapes(reported, api, server):
    art = {a["key"]: a for a in api.task(reported.task_id)["execution"]["artifacts"]}["data_file"]
    r = api.files_get(art["uri"], token=False)
    assert r.status_code in (401, 403), f"download without a token: HTTP {r.status_code}"
    r = api.files_get(art["uri"], token="Bearer not-a-token")
    assert r.status_code in (401, 403), f"download with a bad token: HTTP {r.status_code}"
    # no path may leave the files root (http.client sends the path exactly as written)
    host = urlparse(server.files_url)
    for path in ("/../server-home/x", "/%2e%2e/%2e%2e/etc/passwd", "/..%2f..%2fetc/passwd", "/a/../../etc/passwd"):
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=10)
        conn.request("GET", path, headers={"Authorization": "Bearer " + api.token})
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        assert resp.status in (400, 403, 404), f"GET {path}: HTTP {resp.status}"
        assert b"root:" not in data


def test_sdk_reads_back_what_it_reported(reported, sdk_client):
    run = sdk_client.run_python(SCRIPTS / "sdk_read_back.py", reported.task_id, timeout=120)
    res = run.result()
    assert res["id"] == reported.task_id
    assert res["status"] == "completed"
    assert res["scalars"]["loss"]["train"]["y"] == pytest.approx([1.0, 0.5, 1 / 3])
    console = "\n".join(res["console"])
    assert f"console line {reported.marker}" in console
    assert res["last_scalars"]["loss"]["train"]["min"] == pytest.approx(1 / 3)
    assert res["artifacts"].get("data_file") == reported.content


# --- Task.get_task --------------------------------------------------------------------------------

def test_get_task_by_project_and_name(reported, sdk_client):
    run = sdk_client.run_python(f"""
        import json
        from clearml import Task
        t = Task.get_task(project_name={reported.project!r}, task_name={reported.name!r})
        print("COMPAT-RESULT: " + json.dumps({{"id": t.id if t else None}}))
    """)
    assert run.result()["id"] == reported.task_id


def test_get_task_picks_newest_of_same_name(sdk_client, api):
    project, name = unique("compat get"), unique("same name")
    run = sdk_client.run_python(f"""
        import json, time
        from clearml import Task
        first = Task.create(project_name={project!r}, task_name={name!r})
        time.sleep(1.5)  # the SDK compares last_update in whole seconds
        second = Task.create(project_name={project!r}, task_name={name!r})
        got = Task.get_task(project_name={project!r}, task_name={name!r})
        print("COMPAT-RESULT: " + json.dumps({{"first": first.id, "second": second.id, "got": got.id}}))
    """)
    res = run.result()
    assert res["first"] != res["second"]
    assert res["got"] == res["second"]
    # both exist server-side under that exact name (regex ^name$ lookup must not over-match)
    proj = api.call("projects.get_all", name=f"^{project}$")["projects"]
    assert len(proj) == 1
    found = api.call("tasks.get_all", project=[proj[0]["id"]], only_fields=["id", "name"])["tasks"]
    assert sorted(t["id"] for t in found) == sorted([res["first"], res["second"]])


# --- Task.clone + Task.enqueue --------------------------------------------------------------------

def test_clone_and_enqueue_by_queue_name(reported, sdk_client, api):
    queue_name = unique("compat-q")
    queue_id = api.create_queue(queue_name)
    clone_name = unique("clone of report")
    run = sdk_client.run_python(f"""
        import json
        from clearml import Task
        src = Task.get_task(task_id={reported.task_id!r})
        clone = Task.clone(source_task=src, name={clone_name!r})
        Task.enqueue(clone, queue_name={queue_name!r})
        try:
            Task.enqueue(clone, queue_name="no such queue {reported.marker}")
            unknown = "no error"
        except Exception as exc:
            unknown = type(exc).__name__
        print("COMPAT-RESULT: " + json.dumps({{"clone": clone.id, "unknown_queue": unknown}}))
    """)
    res = run.result()
    clone_id = res["clone"]
    assert clone_id != reported.task_id
    # the SDK resolves a queue name by probing queues.get_by_id (expects 400/701) then queues.get_all
    assert res["unknown_queue"] != "no error", "Task.enqueue to a queue that does not exist must raise"

    clone = api.task(clone_id)
    src = api.task(reported.task_id)
    assert clone["name"] == clone_name
    assert clone["status"] == "queued"
    assert clone.get("parent") == reported.task_id
    assert (clone.get("execution") or {}).get("queue") == queue_id
    assert "development" not in (clone.get("system_tags") or [])
    # a clone copies the recipe (script, hyperparams), not the results
    assert clone["script"]["entry_point"] == src["script"]["entry_point"]
    assert clone["hyperparams"]["Args"]["marker"]["value"] == reported.marker
    assert not _metrics(clone)
    assert not (clone.get("execution") or {}).get("artifacts")
    assert clone["project"] == src["project"]
    # the queue holds it; the source is untouched
    assert clone_id in api.queue_task_ids(queue_id)
    assert src["status"] == "completed"


# --- the same script twice: task reuse (tasks.reset) ---------------------------------------------

def test_rerun_reuses_task_and_resets_it(sdk_client, api):
    """Task.init in the same project/name within sdk.development.task_reuse_time_window_in_hours reuses
    the previous task (id cached in ~/.clearml) when that task is still a development task with no
    artifacts, no output models, and is not published/closed/archived: tasks.reset + tasks.edit."""
    project, name = unique("compat reuse"), unique("rerun")
    m1, m2 = unique("RUN1"), unique("RUN2")
    script = SCRIPTS / "sdk_report.py"
    first = sdk_client.run_python(script, "--project", project, "--name", name, "--marker", m1,
                                  "--metric", "first_metric", timeout=180).result()["task_id"]
    second = sdk_client.run_python(script, "--project", project, "--name", name, "--marker", m2,
                                   "--metric", "second_metric", timeout=180).result()["task_id"]
    assert second == first, "the second run of the same script must reuse the task"

    task = api.task(first)
    assert task["status"] == "completed"
    assert "development" in (task.get("system_tags") or [])
    # reset cleared the first run's results: metrics, and (as the real server does) its events
    assert set(_metrics(task)) == {("second_metric", "train")}
    hist = api.call("events.scalar_metrics_iter_histogram", task=first, key="iter")
    assert "first_metric" not in hist and "second_metric" in hist
    log = api.task_log_text(first)
    assert m2 in log
    assert m1 not in log, "tasks.reset must delete the task's earlier log events"
    # only one task with that name exists
    proj = api.call("projects.get_all", name=f"^{project}$")["projects"][0]["id"]
    assert len(api.call("tasks.get_all", project=[proj], only_fields=["id"])["tasks"]) == 1


def test_rerun_after_artifacts_creates_new_task(sdk_client, api):
    """Real SDK rule: a task that has artifacts is not reused; the next run creates a new task.
    A server that loses execution.artifacts (or returns them in the wrong shape) fails this."""
    project, name = unique("compat reuse art"), unique("rerun art")
    payload = sdk_client.work / "a.txt"
    payload.write_text("x" * 100)
    script = SCRIPTS / "sdk_report.py"
    with_art = sdk_client.run_python(script, "--project", project, "--name", name, "--marker", unique("A"),
                                     "--artifact-file", str(payload), timeout=180).result()["task_id"]
    after = sdk_client.run_python(script, "--project", project, "--name", name, "--marker", unique("B"),
                                  timeout=180).result()["task_id"]
    assert after != with_art
    # the first task keeps its artifact and status
    first = api.task(with_art)
    assert first["status"] == "completed"
    assert [a["key"] for a in first["execution"]["artifacts"]] == ["data_file"]
