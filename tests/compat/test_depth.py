"""SDK compatibility in depth (issue 13): datasets without a version, the project views the SDK
and the web UI call, the statistics time series, and the reply-schema guard itself.

Every test here that runs the real clients goes through `client_env`, whose teardown fails the
test when any reply could not be parsed with the client's own response class.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import RESULT_PREFIX, BackgroundProc, server_binary, unique, wait_for

pytestmark = pytest.mark.sdk


def sdk_response_class(endpoint: str, version: str = "2.23"):
    """The SDK's own response class for an endpoint (the version the SDK speaks to us)."""
    import importlib
    import inspect

    service, action = endpoint.split(".", 1)
    module = importlib.import_module(f"clearml.backend_api.services.v{version.replace('.', '_')}.{service}")
    for _, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__name__.endswith("Response") and getattr(cls, "_action", None) == action \
                and getattr(cls, "_service", None) == service:
            return cls
    raise AssertionError(f"the SDK has no response class for {endpoint} v{version}")


def parses(endpoint: str, data: dict):
    """Parse a reply as the SDK does; raise what the SDK would log as 'Failed parsing response'."""
    sdk_response_class(endpoint)(**data)
    return data


# ---------------------------------------------------------------------------------------------
# the guard itself
# ---------------------------------------------------------------------------------------------

def test_reply_guard_catches_a_wrong_type(client_env):
    """The sitecustomize hook must record a reply the SDK cannot parse (the old `deleted: 1`),
    and a good one without error; otherwise the guard over the suite proves nothing."""
    run = client_env.run_python("""
        import json
        from clearml.backend_api.session.callresult import CallResult
        from clearml.backend_api.services.v2_23 import tasks

        class Res:
            status_code = 200
            def __init__(self, data):
                self.data = data
            def json(self):
                return {"meta": {"result_code": 200, "result_subcode": 0, "result_msg": "OK",
                                 "id": "x", "trx": "x", "endpoint": {}}, "data": self.data}

        CallResult.from_result(Res({"deleted": 1}), request_cls=tasks.DeleteRequest)
        CallResult.from_result(Res({"deleted": True}), request_cls=tasks.DeleteRequest)
        print("done")
    """)
    assert "done" in run.output
    entries = [r for r in client_env.replies() if r["endpoint"] == "tasks.delete"]
    assert len(entries) == 2, entries
    assert "error" in entries[0] and "deleted" in entries[0]["error"], entries
    assert "error" not in entries[1], entries
    client_env.reply_log.unlink()  # the deliberate failure must not fail this test's teardown


def test_sdk_task_delete_reply_is_a_boolean(client_env, api):
    project, name = unique("delete reply"), unique("doomed")
    run = client_env.run_python(f"""
        import json
        from clearml import Task
        t = Task.create(project_name={project!r}, task_name={name!r})
        tid = t.id
        ok = bool(t.delete(raise_on_error=True))
        print({RESULT_PREFIX!r} + json.dumps({{"id": tid, "ok": ok}}))
    """)
    result = run.result()
    assert result["ok"] is True
    deletes = [r for r in client_env.replies() if r["endpoint"] == "tasks.delete"]
    assert deletes and not any("error" in r for r in deletes), deletes
    assert api.call("tasks.get_all", id=[result["id"]])["tasks"] == []


# ---------------------------------------------------------------------------------------------
# projections
# ---------------------------------------------------------------------------------------------

def test_nested_projection_returns_the_parent_object(api):
    project = api.call("projects.create", name=unique("projection"))["id"]
    tid = api.call("tasks.create", name="p", type="training", project=project)["id"]
    got = api.call("tasks.get_all", id=[tid], only_fields=["runtime.version", "name", "script.repo"])["tasks"]
    assert got[0]["runtime"] == {}, got  # present but empty: the SDK reads runtime.get("version")
    assert got[0]["name"] == "p" and got[0]["id"] == tid
    api.call("tasks.edit", task=tid, runtime={"version": "1.0.0", "other": 1})
    got = api.call("tasks.get_all", id=[tid], only_fields=["runtime.version"])["tasks"]
    assert got[0]["runtime"] == {"version": "1.0.0"}, got


# ---------------------------------------------------------------------------------------------
# datasets without a version
# ---------------------------------------------------------------------------------------------

DATASET_SCRIPT = """
import json, os, sys, pathlib
from clearml import Dataset

project, name, work = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
(work / "a").mkdir(parents=True, exist_ok=True)
(work / "a" / "one.txt").write_text("first file")
ds = Dataset.create(dataset_name=name, dataset_project=project)
ds.add_files(str(work / "a"))
ds.upload()
ds.finalize()

(work / "b").mkdir(exist_ok=True)
(work / "b" / "two.txt").write_text("second file")
child = Dataset.create(dataset_name=name + " child", dataset_project=project, parent_datasets=[ds.id])
child.add_files(str(work / "b"))
child.upload()
child.finalize()

got = Dataset.get(dataset_id=ds.id)
copy = pathlib.Path(got.get_local_copy())
child_copy = pathlib.Path(Dataset.get(dataset_project=project, dataset_name=name + " child").get_local_copy())
print(%r + json.dumps({
    "id": ds.id, "child": child.id, "version": got.version,
    "files": sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file()),
    "child_files": sorted(str(p.relative_to(child_copy)) for p in child_copy.rglob("*") if p.is_file()),
    "one": (copy / "one.txt").read_text(),
    "two": (child_copy / "two.txt").read_text(),
}))
""" % RESULT_PREFIX


def test_dataset_create_without_version_and_child(client_env, api):
    project, name = unique("datasets"), unique("ds")
    run = client_env.run_python(DATASET_SCRIPT, project, name, str(client_env.work / "data"), timeout=240)
    r = run.result()
    assert r["version"], r  # the SDK picks 1.0.0 itself when none is given
    assert r["files"] == ["one.txt"] and r["one"] == "first file", r
    assert r["child_files"] == ["one.txt", "two.txt"] and r["two"] == "second file", r
    child = api.task(r["child"])
    assert child["status"] in ("completed", "published"), child["status"]
    assert "Failed parsing" not in run.output
    assert "AttributeError" not in run.output


def test_clearml_data_cli_without_version(client_env):
    project, name = unique("cli datasets"), unique("cli-ds")
    data = client_env.work / "cli-data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from clearml-data")
    exe = client_env.agent_exe.replace("clearml-agent", "clearml-data")
    created = client_env.run([exe, "create", "--project", project, "--name", name], timeout=120)
    m = re.search(r"id=([0-9a-f]{32})", created.output)
    assert m, created.describe()
    ds_id = m.group(1)
    client_env.run([exe, "add", "--id", ds_id, "--files", str(data)], timeout=120)
    closed = client_env.run([exe, "close", "--id", ds_id], timeout=180)
    assert "Dataset closed and finalized" in closed.output or "finalized" in closed.output.lower(), \
        closed.describe()
    target = client_env.work / "copy"
    client_env.run([exe, "get", "--id", ds_id, "--copy", str(target)], timeout=180)
    assert (target / "hello.txt").read_text() == "hello from clearml-data"


# ---------------------------------------------------------------------------------------------
# the project views and bulk archive
# ---------------------------------------------------------------------------------------------

def test_project_views_and_archive_many(client_env, api):
    project = unique("views")
    run = client_env.run_python(f"""
        import json
        from clearml import Task
        from clearml.backend_api.session.client import APIClient

        parent = Task.init(project_name={project!r}, task_name="parent", reuse_last_task_id=False)
        parent.connect({{"lr": 0.1, "batch": 32}})
        parent.get_logger().report_scalar("loss", "train", 0.5, iteration=1)
        parent.get_logger().report_scalar("loss", "val", 0.7, iteration=1)
        parent.flush(wait_for_uploads=True)
        pid, proj = parent.id, parent.project
        parent.close()
        child = Task.create(project_name={project!r}, task_name="child")
        child.set_parent(pid)
        child.set_parameters({{"Args/depth": 3}})

        c = APIClient()
        hp = c.projects.get_hyper_parameters(project=proj)
        mv = c.projects.get_unique_metric_variants(project=proj)
        parents = c.projects.get_task_parents(projects=[proj])
        print({RESULT_PREFIX!r} + json.dumps({{
            "project": proj, "parent": pid, "child": child.id,
            "hp": sorted([p["section"], p["name"]] for p in hp.parameters), "hp_total": hp.total,
            "mv": sorted([m.metric, m.variant] for m in mv.metrics),
            "parents": [[p["id"], p["name"], p["project"]["id"]] for p in parents.parents],
        }}))
    """, timeout=180)
    r = run.result()
    assert ["General", "lr"] in r["hp"] and ["General", "batch"] in r["hp"] and ["Args", "depth"] in r["hp"], r
    assert r["hp_total"] == len(r["hp"])
    assert ["loss", "train"] in r["mv"] and ["loss", "val"] in r["mv"], r
    latest = parses("events.get_task_latest_scalar_values",
                    api.call("events.get_task_latest_scalar_values", task=r["parent"]))
    assert latest["metrics"] == [{"name": "loss", "variants": [
        {"name": "train", "last_value": 0.5, "last_100_value": 0.5},
        {"name": "val", "last_value": 0.7, "last_100_value": 0.7}]}], latest
    assert r["parents"] == [[r["parent"], "parent", r["project"]]], r

    # paging of the hyperparameter list
    page = parses("projects.get_hyper_parameters",
                  api.call("projects.get_hyper_parameters", project=r["project"], page=0, page_size=1))
    assert len(page["parameters"]) == 1 and page["remaining"] == page["total"] - 1

    # archive_many: the web UI's bulk archive; a queued task leaves its queue
    q = api.create_queue(unique("archive-q"))
    api.call("tasks.reset", task=r["child"])
    api.call("tasks.enqueue", task=r["child"], queue=q)
    out = parses("tasks.archive_many", api.call("tasks.archive_many", ids=[r["child"], "0" * 32]))
    assert out["succeeded"] == [{"id": r["child"], "archived": True}], out
    assert out["failed"][0]["id"] == "0" * 32 and out["failed"][0]["error"]["codes"][0] == 400
    child = api.task(r["child"])
    assert "archived" in child["system_tags"] and child["status"] == "created"
    assert r["child"] not in api.queue_task_ids(q)
    # archived tasks' parents are listed under tasks_state=archived only
    assert api.call("projects.get_task_parents", projects=[r["project"]])["parents"] == []
    assert len(api.call("projects.get_task_parents", projects=[r["project"]], tasks_state="archived")["parents"]) == 1
    out = parses("tasks.unarchive_many", api.call("tasks.unarchive_many", ids=[r["child"]]))
    assert out["succeeded"] == [{"id": r["child"], "unarchived": True}], out
    assert "archived" not in api.task(r["child"])["system_tags"]


# ---------------------------------------------------------------------------------------------
# statistics
# ---------------------------------------------------------------------------------------------

def test_queue_metrics_after_tasks_waited(client_env, api):
    q = api.create_queue(unique("metrics-q"))
    project = api.call("projects.create", name=unique("queue metrics"))["id"]
    ids = [api.call("tasks.create", name=f"wait {i}", type="training", project=project)["id"] for i in range(3)]
    start = time.time()
    for tid in ids:
        api.call("tasks.enqueue", task=tid, queue=q)
    time.sleep(2.5)
    popped = api.call("queues.get_next_task", queue=q)
    assert popped["entry"]["task"] == ids[0]
    run = client_env.run_python(f"""
        import json, time
        from clearml.backend_api.session.client import APIClient
        c = APIClient()
        now = time.time()
        m = c.queues.get_queue_metrics(from_date={start - 5}, to_date=now + 1, interval=1, queue_ids=[{q!r}])
        total = c.queues.get_queue_metrics(from_date={start - 5}, to_date=now + 1, interval=1)
        print({RESULT_PREFIX!r} + json.dumps({{
            "queues": [[x.queue, x.dates, x.avg_waiting_times, x.queue_lengths] for x in m.queues],
            "total": [x.queue for x in total.queues],
        }}))
    """)
    r = run.result()
    assert len(r["queues"]) == 1, r
    queue, dates, waits, lengths = r["queues"][0]
    assert queue == q and len(dates) == len(waits) == len(lengths) >= 2, r
    assert dates == sorted(dates) and all(d > 1e12 for d in dates), dates  # epoch milliseconds
    assert max(lengths) == 3, r
    assert lengths[-1] == 2, r  # after the pop
    assert max(waits) >= 2.0, r  # the entries had waited 2.5 s when the first one was taken
    assert r["total"] == ["total"], r


def test_worker_stats_after_daemon_reported(client_env, api, agents):
    queue_name = unique("stats-q")
    api.create_queue(queue_name)
    worker_id = unique("stats-worker")
    env = dict(client_env)
    env["CLEARML_WORKER_ID"] = worker_id
    env["CLEARML_AGENT_STATUS_REPORT_FREQ_SEC"] = "1"
    start = time.time()
    daemon = BackgroundProc([str(server_binary()), "daemon", "--queue", queue_name, "--foreground"],
                            env=env, cwd=client_env.work, log_path=client_env.root / "stats-daemon.log")
    agents.append(daemon)

    def stats():
        data = api.call("workers.get_stats", worker_ids=[worker_id], from_date=start - 10,
                        to_date=time.time() + 10, interval=1,
                        items=[{"key": "cpu_usage", "aggregation": "avg"},
                               {"key": "memory_used", "aggregation": "max"}])
        workers = data["workers"]
        return data if workers and {m["metric"] for m in workers[0]["metrics"]} >= {"cpu_usage", "memory_used"} \
            and any(v > 0 for m in workers[0]["metrics"] if m["metric"] == "memory_used"
                    for s in m["stats"] for v in s["values"]) else None

    data = wait_for(stats, 60, what="the daemon's machine stats in workers.get_stats")
    daemon.stop()
    run = client_env.run_python(f"""
        import json, time
        from clearml.backend_api.session.client import APIClient
        from clearml.backend_api.services import workers
        c = APIClient()
        now = time.time()
        s = c.workers.get_stats(worker_ids=[{worker_id!r}], from_date={start - 10}, to_date=now + 10, interval=1,
                                items=[workers.StatItem(key="cpu_usage")], split_by_variant=True)
        a = c.workers.get_activity_report(from_date={start - 10}, to_date=now + 10, interval=1)
        k = c.workers.get_metric_keys(worker_ids=[{worker_id!r}])
        print({RESULT_PREFIX!r} + json.dumps({{
            "variants": sorted(m.variant for m in s.workers[0].metrics),
            "active": sum(a.active.counts), "total": max(a.total.counts),
            "keys": sorted(k for c in k.categories for k in c.metric_keys),
        }}))
    """)
    r = run.result()
    assert r["variants"] and all(v.isdigit() for v in r["variants"]), r  # one per core
    assert r["total"] >= 1, r
    assert "cpu_usage" in r["keys"] and "memory_used" in r["keys"], r
    m = data["workers"][0]["metrics"]
    assert all(len(x["dates"]) == len(x["stats"][0]["values"]) for x in m)


def test_web_ui_bulk_and_listing_endpoints(client_env, api):
    """The endpoints the web UI calls on its task and project pages (they answered 404)."""
    project_name = unique("bulk")
    project = api.call("projects.create", name=project_name)["id"]
    q = api.create_queue(unique("bulk-q"))
    ids = [api.call("tasks.create", name=f"bulk {i}", type="training", project=project,
                    tags=[f"t{i}"], system_tags=["s"])["id"] for i in range(3)]
    api.call("tasks.edit_hyper_params", task=ids[0], hyperparams=[
        {"section": "Args", "name": "lr", "value": "0.1"}])
    api.call("tasks.edit_hyper_params", task=ids[1], hyperparams=[
        {"section": "Args", "name": "lr", "value": "0.2"}])

    out = parses("tasks.enqueue_many", api.call("tasks.enqueue_many", ids=ids + ["0" * 32], queue=q))
    assert sorted(s["id"] for s in out["succeeded"]) == sorted(ids) and len(out["failed"]) == 1, out
    assert api.queue_task_ids(q) == ids
    assert parses("queues.move_task_forward",
                  api.call("queues.move_task_forward", queue=q, task=ids[2], count=1))["position"] == 1
    assert api.queue_task_ids(q) == [ids[0], ids[2], ids[1]]
    api.call("queues.move_task_backward", queue=q, task=ids[0], count=5)
    assert api.queue_task_ids(q) == [ids[2], ids[1], ids[0]]
    out = parses("tasks.dequeue_many", api.call("tasks.dequeue_many", ids=ids))
    assert len(out["succeeded"]) == 3 and api.queue_task_ids(q) == []

    values = parses("projects.get_hyperparam_values",
                    api.call("projects.get_hyperparam_values", projects=[project], section="Args", name="lr"))
    assert values == {"total": 2, "values": ["0.1", "0.2"]}, values
    tags = parses("projects.get_task_tags", api.call("projects.get_task_tags", projects=[project],
                                                     include_system=True))
    assert tags["tags"] == ["t0", "t1", "t2"] and "s" in tags["system_tags"], tags
    assert {"t0", "t1", "t2"} <= set(parses("organization.get_tags", api.call("organization.get_tags"))["tags"])

    assert parses("tasks.archive", api.call("tasks.archive", tasks=[ids[0]]))["archived"] == 1
    check = parses("projects.validate_delete", api.call("projects.validate_delete", project=project))
    assert check == {"tasks": 3, "non_archived_tasks": 2, "models": 0, "non_archived_models": 0}, check

    # the same through the SDK's own client, so the reply guard parses them as the SDK does
    client_env.run_python(f"""
        from clearml.backend_api.session.client import APIClient
        c = APIClient()
        c.tasks.stop_many(ids={ids!r}, force=True)
        c.tasks.reset_many(ids={ids[1:]!r}, force=True)
        c.tasks.publish_many(ids=[{ids[1]!r}], force=True)
        c.projects.get_task_tags(projects=[{project!r}])
        r = c.tasks.delete_many(ids={ids!r}, force=True)
        assert len(r.succeeded) == 3, r.failed
    """)
    assert [r for r in client_env.replies() if r["endpoint"] == "tasks.delete_many"], client_env.replies()
    assert api.call("tasks.get_all", id=ids)["tasks"] == []
