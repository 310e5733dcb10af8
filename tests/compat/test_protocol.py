"""Protocol details the clients rely on without saying so (server-api.md §1, §2, §5): token claims,
the success envelope, and the queue/dequeue answers the agent branches on."""

from __future__ import annotations

import base64
import json
import time

import pytest

from harness import unique

pytestmark = pytest.mark.protocol


def _claims(token: str) -> dict:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_login_token_claims(api):
    """Clients decode the JWT unverified: no api_version -> SDK falls back to 2.2/2.9 code paths;
    feature_set other than "basic" -> enterprise calls; exp within 12 h -> the agent logs in before every call."""
    claims = _claims(api.token)
    assert claims.get("api_version") == "2.31"
    assert claims.get("feature_set") == "basic"
    assert isinstance(claims.get("server_version"), str) and claims["server_version"]
    identity = claims.get("identity") or {}
    assert isinstance(identity.get("user"), str) and isinstance(identity.get("company"), str)
    exp = claims.get("exp")
    assert exp is None or exp - time.time() > 24 * 3600, "tokens must live well beyond the agent's 12 h threshold"


def test_success_envelope(api):
    r = api.raw("tasks.get_all", {"only_fields": ["id"], "page_size": 1}, version="2.23")
    assert r.status == 200
    meta = r.meta
    assert meta["result_code"] == 200 and meta["result_subcode"] == 0
    assert isinstance(meta["result_msg"], str)
    assert meta["endpoint"]["name"] == "tasks.get_all"
    assert str(meta["endpoint"]["requested_version"]) == "2.23"
    assert isinstance(r.data.get("tasks"), list)
    # bearer token on auth.login refreshes it (the SDK does that with CLEARML_AUTH_TOKEN)
    r = api.raw("auth.login", None, method="GET")
    assert r.status == 200 and r.data.get("token")


def test_queue_fifo_pop_keeps_status(api):
    queue_id = api.create_queue(unique("fifo-q"))
    t1 = api.call("tasks.create", name=unique("fifo one"), type="training")["id"]
    t2 = api.call("tasks.create", name=unique("fifo two"), type="training")["id"]
    api.call("tasks.enqueue", task=t1, queue=queue_id)
    api.call("tasks.enqueue", task=t2, queue=queue_id)
    assert api.queue_task_ids(queue_id) == [t1, t2]
    assert api.call("queues.get_next_task", queue=queue_id)["entry"]["task"] == t1
    # the pop does not change the status: the agent sets in_progress itself (tasks.started force)
    assert api.task(t1)["status"] == "queued"
    assert api.call("queues.get_next_task", queue=queue_id)["entry"]["task"] == t2
    assert not api.call("queues.get_next_task", queue=queue_id).get("entry")


def test_dequeue_updated_counts(api):
    """`clearml-agent execute` reads data.updated of tasks.dequeue (raw JSON) to decide whether it
    dequeued the task (then tasks.started force)."""
    queue_id = api.create_queue(unique("dequeue-q"))
    queued = api.call("tasks.create", name=unique("dequeue me"), type="training")["id"]
    api.call("tasks.enqueue", task=queued, queue=queue_id)
    res = api.call("tasks.dequeue", task=queued, new_status="in_progress")
    assert res.get("updated") == 1, res
    assert api.task(queued)["status"] == "in_progress"
    assert queued not in api.queue_task_ids(queue_id)
    created = api.call("tasks.create", name=unique("never queued"), type="training")["id"]
    res = api.call("tasks.dequeue", task=created, new_status="in_progress")
    assert res.get("updated") == 0, res
    assert api.task(created)["status"] == "created"


def test_runtime_properties_not_an_empty_object(api):
    """workers.get_runtime_properties is enterprise-only. The daemon calls it once at start:
    a 200 with {} crashes it (KeyError 'runtime_properties'); a 404 or a list is fine."""
    r = api.raw("workers.get_runtime_properties", {"worker": "compat-w"})
    if r.status == 200:
        assert isinstance(r.data.get("runtime_properties"), list), r
    else:
        assert r.status == 404 and r.data == {}, r


def test_status_report_sets_last_worker(api):
    task = api.call("tasks.create", name=unique("reported"), type="training")["id"]
    api.call("tasks.started", task=task)
    worker = unique("compat-reporter")
    api.call("workers.register", worker=worker, queues=[])
    api.call("workers.status_report", worker=worker, timestamp=int(time.time() * 1000), task=task,
             machine_stats=None, tags=None, is_daemon=True)
    assert api.task(task).get("last_worker") == worker
    workers = {w["id"]: w for w in api.call("workers.get_all", last_seen=0)["workers"]}
    assert worker in workers
    assert (workers[worker].get("task") or {}).get("id") == task
    api.call("workers.unregister", worker=worker, queues=[])
    assert worker not in {w["id"] for w in api.call("workers.get_all", last_seen=0)["workers"]}
