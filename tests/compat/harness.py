"""Helpers for the compatibility suite: our server process, and the real Python clients pointed at it.

The suite starts the Rust binary (`clearml-agent server`) on free loopback ports and drives it
with the official `clearml` SDK and `clearml-agent` from PyPI (pinned in requirements.txt), the
oracle for "behaves like a real ClearML server". Run it with tests/compat/run.sh.

Environment knobs:
  CLEARML_AGENT_BIN             the binary to test (default: <repo>/target/debug/clearml-agent)
  COMPAT_SERVER_READY_TIMEOUT   seconds to wait for debug.ping after a start (default 30)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Callable, Optional

import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from api import Api  # noqa: E402

__all__ = ["Api", "ServerProc", "ClientEnv", "BackgroundProc", "Finished", "SCRIPTS", "unique", "wait_for",
           "start_server", "ALL_SERVERS", "RESULT_PREFIX", "fail_on_bad_replies"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SCRIPTS = HERE / "scripts"
ACCESS_KEY = "COMPATTESTACCESSKEY0123456789"
SECRET_KEY = "compat-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
READY_TIMEOUT = float(os.environ.get("COMPAT_SERVER_READY_TIMEOUT", "30"))
RESULT_PREFIX = "COMPAT-RESULT: "
# An address nothing listens on: every HTTP(S) request that is not to loopback goes here and fails
# at once, so the clients can only ever talk to our server (their update checks and the like die quietly).
BLACKHOLE_PROXY = "http://127.0.0.1:9"


def server_binary() -> Path:
    return Path(os.environ.get("CLEARML_AGENT_BIN") or REPO / "target" / "debug" / "clearml-agent")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    """A name that no other test (or earlier run on the same data dir) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll predicate() until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # keep polling through transient errors, report the last one
            last_exc = exc
        if time.monotonic() > deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}{extra}", pytrace=False)
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# the server under test
# ---------------------------------------------------------------------------------------------

ALL_SERVERS: list = []  # every ServerProc of this session, for the per-test panic/death check


class ServerProc:
    """One `clearml-agent server` process, restartable on the same ports and data dir."""

    def __init__(self, workdir: Path):
        self.binary = server_binary()
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.home = workdir / "server-home"
        self.log_path = workdir / "server.log"
        self.access_key = ACCESS_KEY
        self.secret_key = SECRET_KEY
        self.host = "127.0.0.1"
        self.port: Optional[int] = None
        self.files_port: Optional[int] = None
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.stopped = False  # True once stop() was called: its exit is not a crash
        ALL_SERVERS.append(self)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)

    # URLs -----------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def files_url(self) -> str:
        return f"http://{self.host}:{self.files_port}"

    def api(self) -> Api:
        """A fresh, logged-in API helper."""
        a = Api(self.api_url, self.access_key, self.secret_key)
        a.login()
        return a

    # process control ------------------------------------------------------
    def _argv(self):
        return [
            str(self.binary), "server",
            "--host", self.host,
            "--port", str(self.port),
            "--files-port", str(self.files_port),
            "--data-dir", str(self.data_dir),
            "--access-key", self.access_key,
            "--secret-key", self.secret_key,
        ]

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "TRAINS_"))}
        env["HOME"] = str(self.home)  # so no ~/clearml.conf of the person running the tests is read
        env.setdefault("RUST_BACKTRACE", "1")
        return env

    def start(self, pick_ports: bool = False):
        if not self.binary.is_file() or not os.access(self.binary, os.X_OK):
            pytest.fail(
                f"server binary not found or not executable: {self.binary}\n"
                "Build it first (cargo build -p clearml-agent) or point CLEARML_AGENT_BIN at it.",
                pytrace=False,
            )
        attempts = 3 if pick_ports else 1
        for attempt in range(attempts):
            if pick_ports or self.port is None:
                self.port, self.files_port = free_port(), free_port()
                while self.files_port == self.port:
                    self.files_port = free_port()
            self.starts += 1
            with open(self.log_path, "ab") as log:
                log.write(f"\n===== compat harness: start #{self.starts}: {' '.join(self._argv())}\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self._argv(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    env=self._env(), cwd=str(self.workdir), start_new_session=True,
                )
            problem = self._wait_ready()
            if problem is None:
                self.stopped = False
                return
            port_clash = "in use" in self.log_tail(2000).lower()
            self._kill()
            if not (pick_ports and port_clash and attempt + 1 < attempts):
                pytest.fail(f"{problem}\n--- server log (tail) ---\n{self.log_tail()}", pytrace=False)

    def _wait_ready(self) -> Optional[str]:
        """None when both ports answer; otherwise why not."""
        deadline = time.monotonic() + READY_TIMEOUT
        url = self.api_url + "/debug.ping"
        s = requests.Session()
        s.trust_env = False
        api_ok = False
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                return f"server exited with code {rc} before it became ready ({self.binary})"
            if not api_ok:
                try:
                    api_ok = s.get(url, timeout=2).status_code == 200
                except requests.RequestException:
                    pass
            if api_ok:
                try:
                    with socket.create_connection((self.host, self.files_port), timeout=2):
                        return None
                except OSError:
                    pass
            time.sleep(0.1)
        what = "the files port to accept connections" if api_ok else f"GET {url} to answer 200"
        return f"server did not become ready within {READY_TIMEOUT:.0f}s (waited for {what})"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def crashed(self) -> bool:
        """It was started, not stopped on purpose, and is gone."""
        return self.proc is not None and not self.stopped and self.proc.poll() is not None

    def _kill(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def kill9(self):
        """SIGKILL the server (no chance to flush anything) and reap it; start() it again."""
        assert self.proc is not None
        self.stopped = True
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self):
        """Graceful stop: SIGTERM, then SIGKILL after 10 s."""
        self.stopped = True
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._kill()

    def restart(self, kill: bool = True):
        """kill -9 (or stop gracefully) and start again on the same ports and data dir."""
        if kill:
            self.kill9()
        else:
            self.stop()
        self.start()

    # logs -----------------------------------------------------------------
    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_text(self, since: int = 0) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n: int = 6000) -> str:
        text = self.log_text()
        return text[-n:]


def start_server(workdir: Path) -> ServerProc:
    srv = ServerProc(workdir)
    srv.start(pick_ports=True)
    return srv


# ---------------------------------------------------------------------------------------------
# the real clients
# ---------------------------------------------------------------------------------------------

def render_clearml_conf(srv: ServerProc, home: Path) -> str:
    """clearml.conf as `clearml-agent init` writes it (api block + agent lines), plus the
    settings that keep the clients offline and the agent fast."""
    return textwrap.dedent(f"""\
        # CLEARML-AGENT configuration file
        api {{
            # Notice: 'host' is the api server (default port 8008), not the web server.
            api_server: {srv.api_url}
            web_server: {srv.api_url}
            files_server: {srv.files_url}
            # Credentials are generated using the webapp, {srv.api_url}/settings
            # Override with os environment: CLEARML_API_ACCESS_KEY / CLEARML_API_SECRET_KEY
            credentials {{"access_key": "{srv.access_key}", "secret_key": "{srv.secret_key}"}}
        }}

        # Set GIT user/pass credentials
        # leave blank for GIT SSH credentials
        agent.git_user=""
        agent.git_pass=""

        # extra_index_url: ["https://clearml.jfrog.io/clearml/api/pypi/public/simple"]
        agent.package_manager.extra_index_url= [

        ]

        # --- added by the compat harness ---
        agent {{
            # the daily update check would go to updates.clear.ml
            disable_agent_update_check: true
            worker_name: "compat"
            venvs_dir: "{home}/.clearml/venvs-builds"
            vcs_cache.path: "{home}/.clearml/vcs-cache"
            venvs_cache.path: "{home}/.clearml/venvs-cache"
            package_manager {{
                type: pip
                # reuse what the harness venv already has (clearml itself) instead of downloading it
                system_site_packages: true
            }}
        }}
        sdk {{
            development {{
                suppress_update_message: true
                # the tests check reuse explicitly; this is the SDK's default window
                task_reuse_time_window_in_hours: 72.0
            }}
            storage.cache.default_base_dir: "{home}/.clearml/cache"
        }}
        """)


_PINNED = {}


def check_clients(agent_exe: str):
    """The clients must be the pinned ones, installed next to this python (run.sh sees to that)."""
    if _PINNED:
        return
    from importlib import metadata
    for line in (HERE / "requirements.txt").read_text().splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name in ("clearml", "clearml-agent"):
            try:
                have = metadata.version(name)
            except metadata.PackageNotFoundError:
                have = None
            if have != version:
                pytest.fail(f"{name}=={version} is required, found {have} for {sys.executable}; "
                            "run the suite with tests/compat/run.sh", pytrace=False)
            _PINNED[name] = version
    if not os.access(agent_exe, os.X_OK):
        pytest.fail(f"{agent_exe} is missing; run the suite with tests/compat/run.sh", pytrace=False)


class ClientEnv(dict):
    """Environment for running the real SDK / agent against the test server, plus helpers.

    It is a dict of env vars (pass it as env= to subprocess), with:
      .run_python(code_or_path, ...)   run a snippet / script with the harness venv's python
      .agent(*args, ...)               run `clearml-agent ...` to completion
      .start_agent(*args, ...)         start `clearml-agent ...` in the background (a BackgroundProc)
    """

    def __init__(self, srv: ServerProc, root: Path):
        super().__init__()
        self.server = srv
        self.root = root
        self.home = root / "home"
        self.tmp = root / "tmp"
        self.work = root / "work"
        for d in (self.home, self.tmp, self.work):
            d.mkdir(parents=True, exist_ok=True)
        self.config_file = self.home / "clearml.conf"
        self.reply_log = root / "replies.jsonl"
        self.config_file.write_text(render_clearml_conf(srv, self.home))
        self.python = sys.executable  # the harness venv (run.sh runs pytest from it)
        venv_bin = str(Path(sys.executable).parent)
        self.agent_exe = str(Path(venv_bin) / "clearml-agent")
        check_clients(self.agent_exe)

        base = {k: v for k, v in os.environ.items()
                if not k.startswith(("CLEARML_", "TRAINS_", "PYTEST_", "VIRTUAL_ENV"))
                and k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "pythonpath")}
        self.update(base)
        self.update({
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            # where the clients find the server
            "CLEARML_CONFIG_FILE": str(self.config_file),
            "CLEARML_API_HOST": srv.api_url,
            "CLEARML_WEB_HOST": srv.api_url,
            "CLEARML_FILES_HOST": srv.files_url,
            "CLEARML_API_ACCESS_KEY": srv.access_key,
            "CLEARML_API_SECRET_KEY": srv.secret_key,
            # never fall back to the demo server
            "CLEARML_NO_DEFAULT_SERVER": "1",
            # nothing but loopback is reachable (update checks etc. fail at once, never hang)
            "HTTP_PROXY": BLACKHOLE_PROXY, "HTTPS_PROXY": BLACKHOLE_PROXY,
            "http_proxy": BLACKHOLE_PROXY, "https_proxy": BLACKHOLE_PROXY,
            "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
            # Python agent: run the task with this venv's interpreter, build and install nothing
            # (worker.py: SKIP_PYTHON_ENV_INSTALL skips venv creation, pip install and freeze;
            #  SKIP_PIP_VENV_INSTALL=<python> makes that interpreter the task's python)
            "CLEARML_AGENT_SKIP_PIP_VENV_INSTALL": sys.executable,
            "CLEARML_AGENT_SKIP_PYTHON_ENV_INSTALL": "1",
            # poll queues / task status every second instead of every 5 s
            "CLEARML_AGENT_QUEUE_POLL_FREQ_SEC": "1",
            "CLEARML_AGENT_TEMP_STDOUT_FILE_DIR": str(self.tmp),
            # every reply the clients parse is re-parsed with their own response class and the
            # outcome logged here (reply_check/sitecustomize.py); see reply_failures()
            "PYTHONPATH": str(HERE / "reply_check"),
            "COMPAT_REPLY_LOG": str(self.reply_log),
        })

    # -- reply schema check -------------------------------------------------
    def replies(self) -> list:
        """Every (endpoint, version, client[, error]) the clients parsed so far."""
        if not self.reply_log.is_file():
            return []
        out = []
        for line in self.reply_log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def reply_failures(self) -> list:
        return [r for r in self.replies() if r.get("error")]

    # -- running things -----------------------------------------------------
    def stage_script(self, code_or_path) -> Path:
        """Scripts run from the work dir, outside any git checkout: the SDK would otherwise record
        this repository (and its uncommitted diff) on the task, and the agent would try to clone it."""
        if isinstance(code_or_path, Path):
            path = self.work / code_or_path.name
            shutil.copyfile(code_or_path, path)
            return path
        path = self.work / f"snippet_{uuid.uuid4().hex[:8]}.py"
        path.write_text(textwrap.dedent(code_or_path))
        return path

    def run(self, argv, timeout: float = 120, check: bool = True, cwd: Optional[Path] = None) -> "Finished":
        return _run(argv, env=dict(self), timeout=timeout, check=check, cwd=cwd or self.work)

    def run_python(self, code_or_path, *args: str, timeout: float = 120, check: bool = True,
                   cwd: Optional[Path] = None) -> "Finished":
        """Run a Python snippet (str, dedented) or a script (Path) with the harness venv's python."""
        script = self.stage_script(code_or_path)
        return self.run([self.python, str(script), *args], timeout=timeout, check=check, cwd=cwd)

    def agent(self, *args: str, timeout: float = 180, check: bool = True) -> "Finished":
        return self.run([self.agent_exe, *args], timeout=timeout, check=check)

    def start_agent(self, *args: str, name: str = "agent") -> "BackgroundProc":
        log = self.root / f"{name}.log"
        return BackgroundProc([self.agent_exe, *args], env=dict(self), cwd=self.work, log_path=log)


class Finished:
    def __init__(self, argv, returncode, stdout, stderr, elapsed):
        self.argv, self.returncode, self.stdout, self.stderr, self.elapsed = argv, returncode, stdout, stderr, elapsed

    @property
    def output(self) -> str:
        return self.stdout + "\n" + self.stderr

    def results(self) -> list:
        """Every `COMPAT-RESULT: {json}` line a snippet printed, parsed."""
        return [json.loads(line[len(RESULT_PREFIX):]) for line in self.stdout.splitlines()
                if line.startswith(RESULT_PREFIX)]

    def result(self) -> dict:
        res = self.results()
        assert res, f"no {RESULT_PREFIX!r} line in the output of {self.argv}:\n{self.describe()}"
        return res[-1]

    def describe(self, limit: int = 6000) -> str:
        return (f"$ {' '.join(map(str, self.argv))}\nexit {self.returncode} after {self.elapsed:.1f}s\n"
                f"--- stdout ---\n{self.stdout[-limit:]}\n--- stderr ---\n{self.stderr[-limit:]}")


def _kill_group(proc: subprocess.Popen, sig=signal.SIGKILL):
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _run(argv, env, timeout, check, cwd) -> Finished:
    t0 = time.monotonic()
    proc = subprocess.Popen([str(a) for a in argv], env=env, cwd=str(cwd), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        fin = Finished(argv, None, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                       time.monotonic() - t0)
        pytest.fail(f"timed out after {timeout}s:\n{fin.describe()}", pytrace=False)
    # a client may leave children behind (the agent spawns the task): never let them outlive the call
    _kill_group(proc)
    fin = Finished(argv, proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                   time.monotonic() - t0)
    if check and fin.returncode != 0:
        pytest.fail(f"client command failed:\n{fin.describe()}", pytrace=False)
    return fin


class BackgroundProc:
    """A long-running client (agent daemon) with its output in a file; always cleaned up."""

    def __init__(self, argv, env, cwd, log_path: Path):
        self.argv = [str(a) for a in argv]
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(self.argv, env=env, cwd=str(cwd), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 20) -> Optional[int]:
        """SIGINT (the agent unregisters on it), then SIGKILL of the whole group after `grace` s."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.proc)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        return self.proc.returncode


def fail_on_bad_replies(env: ClientEnv):
    """The reply-schema guard: every reply the real clients got during the test must parse with
    their own response class for that endpoint and version (see reply_check/sitecustomize.py)."""
    bad = env.reply_failures()
    if bad:
        seen = {}
        for r in bad:
            seen.setdefault((r["endpoint"], r.get("version"), r.get("client")), r["error"])
        lines = [f"{e} (v{v}, {c}): {err}" for (e, v, c), err in sorted(seen.items())]
        pytest.fail("replies the client could not parse with its own response class:\n" + "\n".join(lines),
                    pytrace=False)
