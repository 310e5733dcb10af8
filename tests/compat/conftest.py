"""Fixtures for the compatibility suite (helpers live in harness.py).

  server        one `clearml-agent server` per test module (ServerProc: api_url, files_url, keys,
                data_dir, restart(kill=True), api())
  fresh_server  one of the test's own (for tests that kill it)
  api           a logged-in Api helper for `server`
  client_env    env dict + helpers to run the real SDK / agent against `server`
  agents        list to append background agents to; all are stopped after the test
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import ALL_SERVERS, Api, ClientEnv, fail_on_bad_replies, start_server  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server shared by the tests of one module (each test uses its own project/queue names)."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    yield srv
    srv.stop()


@pytest.fixture
def fresh_server(tmp_path_factory):
    """A server of the test's own, for tests that kill it."""
    srv = start_server(tmp_path_factory.mktemp("fresh-server"))
    yield srv
    srv.stop()


@pytest.fixture
def api(server) -> Api:
    return server.api()


@pytest.fixture(autouse=True)
def _watch_servers(request):
    """Per test: revive a module server that died earlier, and fail the test during which
    a server panicked or died unexpectedly (a 4xx is fine; a crash never is)."""
    if "server" in request.fixturenames:
        srv = request.getfixturevalue("server")
        if srv.crashed():
            srv.start(pick_ports=True)
    marks = {id(s): s.log_size() for s in ALL_SERVERS}
    request.node._compat_log_marks = marks
    yield
    problems = []
    for srv in ALL_SERVERS:
        new_log = srv.log_text(marks.get(id(srv), 0))
        if "panicked at" in new_log:
            problems.append(f"the server panicked during this test:\n{new_log[-4000:]}")
        if srv.crashed():
            problems.append(f"the server died during this test (exit {srv.proc.returncode}):\n{new_log[-4000:]}")
    if problems:
        pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and call.when in ("call", "setup"):
        marks = getattr(item, "_compat_log_marks", {})
        for srv in ALL_SERVERS:
            text = srv.log_text(marks.get(id(srv), 0))
            if text.strip():
                report.sections.append((f"server log {srv.api_url} (this test)", text[-8000:]))
        for bg in getattr(item, "_compat_agents", []):
            # without the agent's configuration dump (hundreds of "agent.x = y" lines)
            lines = [ln for ln in bg.output().splitlines()
                     if not re.match(r"^(agent|sdk|api)\.\S+ = |^No tasks in [Qq]ueue", ln)]
            report.sections.append((f"agent output: {' '.join(bg.argv[1:])}", "\n".join(lines)[-8000:]))


@pytest.fixture
def client_env(server, tmp_path) -> ClientEnv:
    """Env (a dict) + helpers for running the real SDK / agent against the module's server."""
    env = ClientEnv(server, tmp_path / "client")
    yield env
    fail_on_bad_replies(env)


@pytest.fixture
def agents(request):
    """Start background agents via agents.append(client_env.start_agent(...)); all are stopped at the end,
    and their output is attached to a failing test's report."""
    started: list = []
    request.node._compat_agents = started
    yield started
    for bg in started:
        bg.stop()
