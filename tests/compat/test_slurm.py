"""`clearml-agent slurm` with tasks the real clearml SDK created: three tasks run as three sbatch
jobs on a one-node Slurm cluster this module starts itself (munged, slurmctld and slurmd as root,
slurm.conf in a temp folder, like crates/cli/tests/slurm.rs), each building its environment with
uv from PyPI, and each console holds the template's own lines as well as the task's output.

Skips when Slurm or munge is not installed (.ci/run installs them) or when not root. Needs PyPI
for the task environments, so the glue and its jobs run without the harness's blackhole proxy.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from harness import REPO, SCRIPTS, BackgroundProc, free_port, server_binary, unique, wait_for

TEMPLATE = """#!/bin/bash
#SBATCH --job-name=clearml-${CLEARML_TASK.id}
#SBATCH --cpus-per-task=${CLEARML_TASK.hyperparams.slurm.cpus:1}
echo "SLURM-TEMPLATE-LINE job $SLURM_JOB_ID task ${CLEARML_TASK.name} queue ${CLEARML_QUEUE_NAME}"
${CLEARML_AGENT_EXECUTE}
"""


def _find(program):
    return shutil.which(program) or next(
        (str(Path(d) / program) for d in ("/usr/sbin", "/sbin") if (Path(d) / program).is_file()), None)


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory):
    missing = [p for p in ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel") if not _find(p)]
    if missing:
        pytest.skip(f"Slurm/munge not installed (missing {missing}; apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    d = tmp_path_factory.mktemp("slurm")
    os.chmod(d, 0o700)
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir()
    key = d / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o600)
    sock = d / "munge.sock"
    daemons = [subprocess.Popen(
        [_find("munged"), "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
         f"--log-file={d / 'log/munged.log'}", f"--pid-file={d / 'munged.pid'}",
         f"--seed-file={d / 'munged.seed'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    conf = d / "slurm.conf"
    conf.write_text(f"""ClusterName=compat
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
StateSaveLocation={d / 'state'}
SlurmdSpoolDir={d / 'spool'}/slurmd-%n
SlurmctldPidFile={d / 'slurmctld.pid'}
SlurmdPidFile={d / 'slurmd.pid'}
SlurmctldLogFile={d / 'log/slurmctld.log'}
SlurmdLogFile={d / 'log/slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
""")
    env = dict(os.environ, SLURM_CONF=str(conf))
    try:
        wait_for(sock.exists, 10, what="munged")
        for daemon in ("slurmctld", "slurmd"):
            daemons.append(subprocess.Popen([_find(daemon), "-D", "-f", str(conf)], env=env,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
        wait_for(lambda: subprocess.run(["sinfo", "--noheader", "-o", "%t"], env=env, capture_output=True,
                                        text=True).stdout.strip() == "idle", 60, what="the Slurm node")
        yield conf
    finally:
        subprocess.run(["scancel", "--user=root"], env=env, capture_output=True)
        time.sleep(2)
        for p in reversed(daemons):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _uv():
    cached = REPO / ".cache" / "test-tools" / "uv-venv" / "bin" / "uv"
    return str(cached) if cached.exists() else None


def test_three_sdk_tasks_run_as_three_sbatch_jobs(slurm_conf, client_env, api, agents):
    queue_name = unique("slurm-q")
    queue_id = api.create_queue(queue_name)
    project = unique("slurm sdk")
    tasks = []
    for n in range(3):
        run = client_env.run_python(SCRIPTS / "slurm_sdk_job.py", project, f"sdk job {n}", queue_name, str(n),
                                    timeout=180)
        tasks.append(run.result()["task_id"])
    assert set(tasks) <= set(api.queue_task_ids(queue_id))

    template = client_env.root / "job.sbatch"
    template.write_text(TEMPLATE)
    env = {k: v for k, v in client_env.items() if k.lower() not in ("http_proxy", "https_proxy", "no_proxy")}
    for k in ("CLEARML_AGENT_SKIP_PIP_VENV_INSTALL", "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL"):
        env.pop(k, None)
    env["SLURM_CONF"] = str(slurm_conf)
    env["CLEARML_WORKER_ID"] = unique("slurm-glue")
    if _uv():
        env["CLEARML_BOOTSTRAP_UV_EXEC"] = _uv()
    env["UV_CACHE_DIR"] = str(REPO / ".cache" / "uv-cache")
    glue = BackgroundProc([str(server_binary()), "slurm", "--queue", queue_name, "--template", str(template),
                           "--max-jobs", "3"],
                          env=env, cwd=client_env.work, log_path=client_env.root / "slurm-glue.log")
    agents.append(glue)

    wait_for(lambda: all(api.task(t)["status"] in ("completed", "failed", "stopped") for t in tasks), 900,
             what="the three Slurm jobs to end")
    jobs = set()
    for n, t in enumerate(tasks):
        task = api.task(t)
        log = api.task_log_text(t)
        assert task["status"] == "completed", \
            f"{task['status']} / {task.get('status_reason')}\n{log[-4000:]}\n{glue.output()[-4000:]}"
        job = (task.get("runtime") or {}).get("slurm_job_id")
        assert job and job.isdigit(), task.get("runtime")
        jobs.add(job)
        assert f"SLURM-TEMPLATE-LINE job {job} task sdk job {n} queue {queue_name}" in log, log[-4000:]
        assert f"SLURM-SDK-RAN n={n} job={job}" in log, log[-4000:]
        assert "SLURM-SDK-DONE" in log
        metrics = task.get("last_metrics") or {}
        values = [v["value"] for variants in metrics.values() for v in variants.values()
                  if v.get("metric") == "loss" and v.get("variant") == "train"]
        assert values and abs(values[0] - (n + 0.5)) < 1e-9, metrics
    assert len(jobs) == 3
