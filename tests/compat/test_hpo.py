"""The real SDK's HyperParameterOptimizer with `execution_queue` set: its trials run on our
daemon (`clearml-agent daemon`, the binary under test), one at a time in plain mode and
several at once with `--services-mode`, and the optimizer finds the best trial.

Each trial is a clone of a tiny base task with no requirements (the daemon builds an empty env
with uv; `clearml` comes from the harness venv on PYTHONPATH). One grid value makes its trial
crash before it reports, so a trial without the objective is among the optimizer's children:
`get_top_experiments` asks `tasks.get_all` ordered by `last_metrics.<md5>.<md5>.value`, and the
real server puts documents without that value last even when ascending.

The daemon needs PyPI only to bootstrap uv and to seed the venv when the uv cache is cold.
"""

from __future__ import annotations

import sysconfig
from datetime import datetime

import pytest

from harness import HERE, REPO, SCRIPTS, BackgroundProc, server_binary, unique

_BOOTSTRAPPED_UV: list = []  # a uv the daemon of an earlier test here installed, for the next one


def _uv():
    """The uv the Rust test suites bootstrap into .cache/test-tools, else one an earlier test
    here got; without either the daemon bootstraps its own (about 10 s)."""
    cached = REPO / ".cache" / "test-tools" / "uv-venv" / "bin" / "uv"
    if cached.exists():
        return str(cached)
    return next((str(p) for p in _BOOTSTRAPPED_UV if p.exists()), None)


def _start_daemon(client_env, queue_name: str, worker_id: str, *extra: str) -> BackgroundProc:
    env = {k: v for k, v in client_env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    for k in ("CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"):
        env.pop(k, None)
    env["CLEARML_WORKER_ID"] = worker_id
    if _uv():
        env["CLEARML_BOOTSTRAP_UV_EXEC"] = _uv()
    env["UV_CACHE_DIR"] = str(REPO / ".cache" / "uv-cache")
    # the trials' env has no packages: they import clearml from the harness venv (and keep the
    # reply-schema check of reply_check/ first, so their replies are checked too)
    env["PYTHONPATH"] = f"{HERE / 'reply_check'}:{sysconfig.get_paths()['purelib']}"
    _BOOTSTRAPPED_UV.append(client_env.home / ".clearml" / "tools" / "uv-venv" / "bin" / "uv")
    return BackgroundProc([str(server_binary()), "daemon", "--queue", queue_name, "--foreground", *extra],
                          env=env, cwd=client_env.work, log_path=client_env.root / "rust-daemon.log")


def _when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.mark.parametrize("mode,strategy,concurrent,values", [
    ("plain", "grid", 1, [3.0, -1.0, 2.0]),
    ("services", "random", 3, [0.0, 2.0, -1.0, 3.0]),
])
def test_optimizer_runs_trials_on_our_daemon_and_finds_the_best(client_env, api, agents, mode, strategy,
                                                                   concurrent, values):
    with open(client_env.config_file, "a") as f:
        # The SDK's default subprocess reporter makes every process's exit wait ~10 s here, for
        # the controller and for each trial alike; with it in a thread they exit at once.
        f.write("\nsdk.development.report_use_subprocess: false\n")
        # our daemon's default (the harness's pip is for the Python agent): no pip upgrade
        f.write("agent.package_manager.type: uv\n")
    queue_name = unique(f"hpo-{mode}-q")
    queue_id = api.create_queue(queue_name)
    worker_id = unique(f"hpo-{mode}-worker")
    extra = ("--services-mode", str(concurrent)) if mode == "services" else ()
    daemon = _start_daemon(client_env, queue_name, worker_id, *extra)
    agents.append(daemon)

    trial = client_env.stage_script(SCRIPTS / "hpo_trial.py")
    project = unique(f"hpo {mode}")
    run = client_env.run_python(SCRIPTS / "hpo_controller.py", project, queue_name, str(trial), strategy,
                                str(concurrent), ",".join(str(v) for v in values), timeout=200)
    res = run.result()
    assert res["finished"], f"the optimizer did not finish:\n{run.describe()}\n{daemon.output()[-4000:]}"

    # Every trial the optimizer created ran on our daemon, as a child of the controller.
    assert len(res["created"]) == len(values), res
    trials = {t: api.task(t) for t in res["created"]}
    xs = {}
    for task_id, task in trials.items():
        log = api.task_log_text(task_id)
        assert task.get("parent") == res["controller_id"], task.get("parent")
        assert (task.get("last_worker") or "").startswith(worker_id), (task.get("last_worker"), worker_id)
        x = float(task["hyperparams"]["General"]["x"]["value"])
        xs[task_id] = x
        if x < 0:
            assert task["status"] == "failed", (task["status"], log[-3000:])
            assert "HPO-TRIAL-CRASH" in log
            assert not task.get("last_metrics")
        else:
            assert task["status"] == "completed", (task["status"], log[-3000:], daemon.output()[-3000:])
            assert f"HPO-TRIAL x={x}" in log, log[-3000:]
    assert sorted(xs.values()) == sorted(values)

    # The best trial by the values the trials reported (read from the server, not the SDK).
    reported = {}
    for task_id, task in trials.items():
        for variants in (task.get("last_metrics") or {}).values():
            for v in variants.values():
                if v.get("metric") == "objective" and v.get("variant") == "loss":
                    reported[task_id] = v["value"]
    assert set(reported) == {t for t, x in xs.items() if x >= 0}, reported
    for task_id, loss in reported.items():
        assert abs(loss - ((xs[task_id] - 2.0) ** 2 + 0.5)) < 1e-9
    best = min(reported, key=reported.get)
    assert res["top"] and res["top"][0]["id"] == best, (res["top"], reported)
    assert float(res["top"][0]["x"]) == 2.0

    # Plain: one trial at a time. Services mode: some ran at the same time.
    spans = sorted((_when(t["started"]), _when(t.get("completed") or t["last_update"]))
                   for t in trials.values() if t.get("started"))
    overlaps = sum(1 for (_, end), (start, _) in zip(spans, spans[1:]) if start < end)
    if mode == "plain":
        assert overlaps == 0, spans
    else:
        assert overlaps >= 1, spans
    assert api.queue_task_ids(queue_id) == []
