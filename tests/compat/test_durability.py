"""kill -9 during a burst of writes: everything the server acknowledged (answered 200) survives.

Writers create tasks, enqueue them and add log lines through the API, recording only what was
acknowledged. The server is SIGKILLed while they are still writing, restarted on the same data
dir and ports, and every acknowledged task, queue entry and log line must be there. Requests in
flight at the kill may go either way; the test does not look at them.
"""

from __future__ import annotations

import threading
import time

import pytest
import requests

from api import Api, ApiError
from harness import unique

pytestmark = pytest.mark.durability

WRITERS = 4
LINES_PER_TASK = 5
MIN_BURST_SECONDS = 1.5  # kill once the writers have run this long...
MIN_ACKED_TASKS = 40  # ...and this many tasks were acknowledged...
MAX_BURST_SECONDS = 20  # ...or after this long at most


class Burst:
    def __init__(self, srv, token: str, queue_id: str, prefix: str):
        self.srv, self.token, self.queue_id, self.prefix = srv, token, queue_id, prefix
        self.lock = threading.Lock()
        self.tasks: list = []  # acknowledged tasks.create
        self.queued: list = []  # acknowledged tasks.enqueue
        self.lines: dict = {}  # task -> acknowledged log lines
        self.unexpected: list = []  # non-200 answers while the server was up
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.threads = [threading.Thread(target=self.write, args=(n,), daemon=True) for n in range(WRITERS)]

    def write(self, n: int):
        api = Api(self.srv.api_url, self.srv.access_key, self.srv.secret_key, timeout=10)
        api.token = self.token
        i = 0
        while not self.stop.is_set():
            i += 1
            try:
                tid = api.call("tasks.create", name=f"{self.prefix} w{n} #{i}", type="training")["id"]
                with self.lock:
                    self.tasks.append(tid)
                api.call("tasks.enqueue", task=tid, queue=self.queue_id)
                with self.lock:
                    self.queued.append(tid)
                msgs = [f"{self.prefix} w{n} #{i} line {k}" for k in range(LINES_PER_TASK)]
                now = int(time.time() * 1000)
                api.call_lines("events.add_batch", [
                    {"type": "log", "task": tid, "timestamp": now + k, "level": "info", "worker": "burst", "msg": m}
                    for k, m in enumerate(msgs)
                ])
                with self.lock:
                    self.lines[tid] = msgs
            except requests.RequestException:
                if not self.killed.is_set():
                    with self.lock:
                        self.unexpected.append(f"writer {n}: connection failed before the kill")
                return
            except ApiError as exc:
                if not self.killed.is_set():
                    with self.lock:
                        self.unexpected.append(str(exc))
                return


def _chunks(seq, n):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def test_acknowledged_writes_survive_kill9(fresh_server):
    srv = fresh_server
    api = srv.api()
    queue_id = api.create_queue(unique("durable-q"))
    burst = Burst(srv, api.token, queue_id, unique("burst"))
    for t in burst.threads:
        t.start()
    t0 = time.monotonic()
    while not burst.unexpected:
        elapsed = time.monotonic() - t0
        if elapsed >= MAX_BURST_SECONDS or (elapsed >= MIN_BURST_SECONDS and len(burst.tasks) >= MIN_ACKED_TASKS):
            break
        time.sleep(0.05)
    assert not burst.unexpected, burst.unexpected[:5]
    assert all(t.is_alive() for t in burst.threads), "the writers must still be writing at the kill"
    burst.killed.set()
    srv.kill9()  # mid-burst
    burst.stop.set()
    for t in burst.threads:
        t.join(timeout=30)
    with burst.lock:
        tasks, queued, lines = list(burst.tasks), list(burst.queued), dict(burst.lines)
    assert len(tasks) >= 10, f"too few writes acknowledged before the kill ({len(tasks)}): server too slow?"
    print(f"acknowledged before the kill: {len(tasks)} tasks, {len(queued)} queue entries, "
          f"{sum(map(len, lines.values()))} log lines")

    srv.start()  # same ports, same data dir

    # the token issued before the kill is still valid (persistent signing secret): clients keep
    # their token across a server restart, and a 401 costs them a failed call (server-api.md §2.4)
    after = Api(srv.api_url, srv.access_key, srv.secret_key)
    after.token = api.token
    found = {}
    for chunk in _chunks(tasks, 200):
        for t in after.call("tasks.get_all", id=chunk, only_fields=["id", "status"], page_size=500,
                            search_hidden=True)["tasks"]:
            found[t["id"]] = t.get("status")
    missing = [t for t in tasks if t not in found]
    assert not missing, f"{len(missing)} of {len(tasks)} acknowledged tasks lost, e.g. {missing[:3]}"

    entries = set(after.queue_task_ids(queue_id))
    lost_entries = [t for t in queued if t not in entries]
    assert not lost_entries, f"{len(lost_entries)} of {len(queued)} acknowledged queue entries lost"
    not_queued = [t for t in queued if found.get(t) != "queued"]
    assert not not_queued, f"acknowledged enqueues whose task is not 'queued': {not_queued[:3]}"

    lost_lines = []
    for tid, msgs in lines.items():
        text = after.task_log_text(tid)
        lost_lines += [m for m in msgs if m not in text]
    assert not lost_lines, f"{len(lost_lines)} acknowledged log lines lost, e.g. {lost_lines[:3]}"

    # and the restarted server takes new writes
    tid = after.call("tasks.create", name=unique("after restart"), type="training")["id"]
    assert after.task(tid)["status"] == "created"


def test_graceful_restart_keeps_state_and_credentials(fresh_server):
    srv = fresh_server
    api = srv.api()
    queue_name = unique("graceful-q")
    queue_id = api.create_queue(queue_name)
    tid = api.call("tasks.create", name=unique("graceful"), type="training")["id"]
    api.call("tasks.enqueue", task=tid, queue=queue_id)
    srv.restart(kill=False)
    again = srv.api()  # the same key/secret still log in
    assert again.task(tid)["status"] == "queued"
    assert again.queue_task_ids(queue_id) == [tid]
    # queues keep their names (the agent resolves --queue by name)
    assert [q["id"] for q in again.call("queues.get_all", name=f"^{queue_name}$")["queues"]] == [queue_id]
    # the pop is still atomic and FIFO after a restart
    entry = again.call("queues.get_next_task", queue=queue_id).get("entry") or {}
    assert entry.get("task") == tid
    assert again.call("queues.get_next_task", queue=queue_id).get("entry") in (None, {})
