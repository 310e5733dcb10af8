"""Malformed and invalid requests get the real server's envelope errors: the HTTP status equals
meta.result_code (4xx), meta.result_subcode is an int, meta.result_msg a non-empty string and
data is {} (the SDK turns `data: null` into a crash). Never a 5xx (the clients retry those
forever), never a panic (conftest fails the test if the server log shows one or the server dies).

Subcodes are asserted where the real server's are certain (server-api.md §1.6 and the server's
validators): 400/11 missing field, 400/12 validation, 400/101 unknown task, 400/110 bad status
change, 400/701 unknown queue, 401/20 no credentials, 401/30 bad token, 404 unknown endpoint.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import unique

pytestmark = pytest.mark.errors

NO_SUCH_ID = "0123456789abcdef0123456789abcdef"


def check_error(r, statuses, subcodes=None, endpoint=None):
    """Assert an envelope error; return its meta."""
    statuses = (statuses,) if isinstance(statuses, int) else tuple(statuses)
    assert r.status in statuses, f"expected HTTP {statuses}, got {r!r}"
    assert r.status < 500
    assert r.envelope is not None, f"error body is not a JSON envelope: {r.text[:300]!r}"
    meta = r.meta
    assert meta.get("result_code") == r.status, f"meta.result_code != HTTP status: {meta!r}"
    assert isinstance(meta.get("result_subcode"), int), meta
    assert isinstance(meta.get("result_msg"), str) and meta["result_msg"], meta
    assert isinstance(meta.get("id"), str), meta
    assert r.data == {}, f"data must be {{}} on errors, got {r.data!r}"
    if subcodes is not None:
        subcodes = (subcodes,) if isinstance(subcodes, int) else tuple(subcodes)
        assert meta["result_subcode"] in subcodes, f"subcode {meta['result_subcode']} not in {subcodes}: {meta}"
    if endpoint is not None:
        assert (meta.get("endpoint") or {}).get("name") == endpoint, meta
    return meta


@pytest.fixture(scope="module")
def ids(server):
    api = server.api()
    task = api.call("tasks.create", name=unique("errors task"), type="training")["id"]
    queue = api.create_queue(unique("errors-q"))
    return {"task": task, "queue": queue}


# --- bodies that are not what they should be ------------------------------------------------------

GARBAGE = {
    "not json": b"{this is not json",
    "truncated": b'{"task": "abc',
    "array body": b"[1, 2, 3]",
    "string body": b'"just a string"',
    "number body": b"42",
    "invalid utf-8": b'{"task": "\xff\xfe"}',
    "nul bytes": b'{"task": "\x00"}\x00',
    "deep nesting": b"[" * 200_000,
    "deep object": b'{"a":' * 100_000,
    "huge number": b'{"task": "x", "page_size": 1e400}',
}


@pytest.mark.parametrize("body", list(GARBAGE.values()), ids=list(GARBAGE))
def test_garbage_body(api, body):
    r = api.raw("tasks.get_all", data=body)
    check_error(r, 400)


def test_oversized_garbage_body(api):
    r = api.raw("tasks.get_all", data=b"x" * (20 * 1024 * 1024), timeout=60)
    check_error(r, (400, 413))


# --- missing fields and wrong types ------------------------------------------------------------------

@pytest.mark.parametrize("endpoint,body", [
    ("tasks.get_by_id", {}),
    ("tasks.create", {}),
    ("tasks.create", {"type": "training"}),
    ("tasks.started", {}),
    ("tasks.enqueue", {}),
    ("queues.get_by_id", {}),
    ("queues.create", {}),
    ("projects.get_by_id", {}),
    ("events.get_task_log", {}),
    ("workers.status_report", {}),
], ids=lambda v: v if isinstance(v, str) else (",".join(v) or "{}"))
def test_missing_required_field(api, endpoint, body):
    check_error(api.raw(endpoint, body), 400, (11, 12), endpoint=endpoint)


@pytest.mark.parametrize("endpoint,body", [
    ("tasks.get_by_id", {"task": 12345}),
    ("tasks.get_by_id", {"task": None}),
    ("tasks.get_by_id", {"task": ["a", "b"]}),
    ("tasks.create", {"name": ["x"], "type": "training"}),
    ("tasks.create", {"name": {"x": 1}, "type": "training"}),
    ("tasks.create", {"name": "bad type", "type": "not-a-task-type"}),
    ("tasks.get_all", {"page_size": "ten"}),
    ("tasks.get_all", {"page": {"x": 1}}),
    ("tasks.edit", {"task": "TASK", "force": "yes please"}),
    ("tasks.edit", {"task": "TASK", "hyperparams": "not a dict"}),
    ("queues.get_by_id", {"queue": 7}),
    ("workers.status_report", {"worker": "w", "timestamp": "yesterday"}),
], ids=lambda v: v if isinstance(v, str) else json.dumps(v, sort_keys=True)[:50])
def test_wrong_types(api, ids, endpoint, body):
    body = {k: (ids["task"] if v == "TASK" else v) for k, v in body.items()}
    check_error(api.raw(endpoint, body), 400, (11, 12), endpoint=endpoint)


# --- unknown ids --------------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint,body,subcode", [
    ("tasks.get_by_id", {"task": NO_SUCH_ID}, 101),
    ("tasks.started", {"task": NO_SUCH_ID}, 101),
    ("tasks.stopped", {"task": NO_SUCH_ID}, 101),
    ("tasks.completed", {"task": NO_SUCH_ID}, 101),
    ("tasks.failed", {"task": NO_SUCH_ID}, 101),
    ("tasks.stop", {"task": NO_SUCH_ID}, 101),
    ("tasks.reset", {"task": NO_SUCH_ID}, 101),
    ("tasks.ping", {"task": NO_SUCH_ID}, 101),
    ("tasks.edit", {"task": NO_SUCH_ID, "name": "x y z"}, 101),
    ("tasks.clone", {"task": NO_SUCH_ID}, 101),
    ("tasks.enqueue", {"task": NO_SUCH_ID, "queue": "QUEUE"}, 101),
    ("tasks.set_requirements", {"task": NO_SUCH_ID, "requirements": {"pip": ""}}, 101),
    ("tasks.add_or_update_artifacts", {"task": NO_SUCH_ID, "artifacts": [{"key": "a", "type": "custom"}]}, 101),
    ("events.get_task_log", {"task": NO_SUCH_ID}, 101),
    ("workers.status_report", {"worker": "w-err", "timestamp": 1, "task": NO_SUCH_ID}, 101),
    ("queues.get_by_id", {"queue": NO_SUCH_ID}, 701),
    ("queues.get_by_id", {"queue": "default"}, 701),  # the SDK probes names as ids first
    ("queues.get_next_task", {"queue": NO_SUCH_ID}, 701),
    ("tasks.enqueue", {"task": "TASK", "queue": NO_SUCH_ID}, 701),
    ("projects.get_by_id", {"project": NO_SUCH_ID}, 401),
    ("models.get_by_id", {"model": NO_SUCH_ID}, 201),
], ids=lambda v: v if isinstance(v, str) else (str(v) if isinstance(v, int) else "/".join(sorted(v))))
def test_unknown_ids(api, ids, endpoint, body, subcode):
    body = {k: ids["task"] if v == "TASK" else ids["queue"] if v == "QUEUE" else v for k, v in body.items()}
    check_error(api.raw(endpoint, body), 400, subcode, endpoint=endpoint)


def test_unknown_task_with_version_prefix(api):
    r = api.raw("tasks.get_by_id", {"task": NO_SUCH_ID}, version="2.23")
    check_error(r, 400, 101, endpoint="tasks.get_by_id")


# --- state machine ------------------------------------------------------------------------------------

def test_illegal_status_changes(api):
    t = api.call("tasks.create", name=unique("status task"), type="training")["id"]
    # created -> completed / stopped / failed are not allowed without force
    for ep in ("tasks.completed", "tasks.stopped"):
        check_error(api.raw(ep, {"task": t}), 400, 110, endpoint=ep)
    assert api.task(t)["status"] == "created"
    # with force they are
    api.call("tasks.stopped", task=t, force=True)
    assert api.task(t)["status"] == "stopped"
    # artifacts only on created/in_progress tasks
    check_error(api.raw("tasks.add_or_update_artifacts",
                        {"task": t, "artifacts": [{"key": "a", "type": "custom", "uri": "x"}]}), 400, 110)
    # tasks.edit without force only on created tasks
    check_error(api.raw("tasks.edit", {"task": t, "comment": "x"}), 400, 110)


# --- routing and authentication -----------------------------------------------------------------------

def test_unknown_endpoint(api):
    check_error(api.raw("tasks.no_such_action", {}), 404)
    check_error(api.raw("nosuchservice.get_all", {}), 404)


def test_bad_path(api):
    r = api.raw("not-an-endpoint", {})
    check_error(r, (400, 404))


def test_auth_errors(api, server):
    check_error(api.raw("tasks.get_all", {}, auth=False), 401, 20)
    check_error(api.raw("tasks.get_all", {}, auth="Bearer not.a.jwt"), 401, 30)
    forged = api.token[:-4] + ("AAAA" if not api.token.endswith("AAAA") else "BBBB")
    check_error(api.raw("tasks.get_all", {}, auth="Bearer " + forged), 401, 30)
    check_error(api.raw("auth.login", None, method="GET", auth="Basic " + "Zm9vOmJhcg=="), 401, (21, 22))
    check_error(api.raw("auth.login", None, method="GET", auth="Basic !!!notbase64"), 401, (20, 21, 22))
    check_error(api.raw("auth.login", None, method="GET", auth=False), 401, 20)
    # debug.ping needs no auth
    assert api.raw("debug.ping", {}, auth=False).status == 200


# --- json-lines batches -------------------------------------------------------------------------------

def _log_event(task, msg):
    return {"type": "log", "task": task, "timestamp": int(time.time() * 1000), "level": "info",
            "worker": "compat", "msg": msg}


def _post_lines(api, lines: list) -> object:
    return api.raw("events.add_batch", data="\n".join(lines).encode(), content_type="application/json-lines")


def test_batch_with_bad_line_keeps_the_good_ones(api, ids):
    """One unreadable line must not cost the lines around it (issue 10 item 4; the real server
    refuses the whole batch): the good lines are stored, the bad one is counted in errors_info."""
    for i, bad in enumerate(("{not json", "[1, 2]", '"a string"', "42")):
        marker = unique(f"BADBATCH{i}")
        good = json.dumps(_log_event(ids["task"], f"{marker} good"))
        r = _post_lines(api, [good, bad, good])
        assert r.status == 200, r
        assert r.data["added"] == 2 and r.data["errors"] == 1, r.data
        assert any("#1" in k for k in r.data["errors_info"]), r.data
        assert api.task_log_text(ids["task"]).count(f"{marker} good") == 2


def test_batch_errors(api, ids):
    check_error(_post_lines(api, []), 400, endpoint="events.add_batch")  # empty batch
    bad_type = {**_log_event(ids["task"], "x"), "type": "no_such_event_type"}
    check_error(_post_lines(api, [json.dumps(bad_type)]), 400, endpoint="events.add_batch")
    unknown_task = _log_event(NO_SUCH_ID, "x")
    check_error(_post_lines(api, [json.dumps(unknown_task)]), 400, endpoint="events.add_batch")


def test_batch_good_lines_accepted(api, ids):
    """Positive control, in the SDK's own form (GET, json-lines, extra "method" key, trailing newline)."""
    marker = unique("GOODBATCH")
    events = [{**_log_event(ids["task"], f"{marker} {i}"), "method": "get", "allow_locked": False,
               "model_event": False} for i in range(3)]
    payload = ("\n".join(json.dumps(e) for e in events) + "\n").encode()
    r = api.raw("events.add_batch", data=payload, content_type="application/json-lines", method="GET",
                version="2.23")
    assert r.status == 200, r
    assert r.data.get("added") == 3 and r.data.get("errors") == 0, r.data
    log = api.task_log_text(ids["task"])
    assert all(f"{marker} {i}" in log for i in range(3))


# --- what real clients send that a strict server might reject ---------------------------------------

def test_client_quirks_accepted(api, ids):
    # GET with a JSON body, an unknown "method" key (SDK 2.1.12 adds it to every request), version prefix
    r = api.raw("tasks.get_all", {"id": [ids["task"]], "only_fields": ["id", "status"], "method": "get",
                                  "search_hidden": True}, method="GET", version="2.23")
    assert r.status == 200, r
    assert [t["id"] for t in r.data["tasks"]] == [ids["task"]]
    # regex names as Python's re.escape writes them (escaped space, hyphen, dot)
    name = unique("quirk name. with-space")
    tid = api.call("tasks.create", name=name, type="training")["id"]
    found = api.call("tasks.get_all", name=f"^{re.escape(name)}$", only_fields=["id", "name"])["tasks"]
    assert [t["id"] for t in found] == [tid]
    # unicode survives
    uname = "ünïcödé ☃ 名前 " + unique("u")
    uid = api.call("tasks.create", name=uname, type="training")["id"]
    assert api.task(uid)["name"] == uname


def test_server_still_healthy(api, server):
    assert api.raw("debug.ping", {}, auth=False).status == 200
    assert server.alive()
