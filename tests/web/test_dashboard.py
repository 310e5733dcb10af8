"""The dashboard in a real browser: headless Chromium driven over WebDriver (selenium).

One `clearml-agent server` (with --web-port) per module; the real SDK (clearml 2.1.12, from the
compat suite's venv) runs a small training script against it and prints its results link. The
browser then opens exactly that link: a wrong secret sees nothing of the task, the right pair
sees the console line, a chart of the reported scalar, the queues page, and can clone and enqueue.
Screenshots go to tests/web/artifacts/ (ignored by git). Run with tests/web/run.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
import requests
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARTIFACTS = HERE / "artifacts"
BIN = Path(os.environ.get("CLEARML_AGENT_BIN") or REPO / "target" / "debug" / "clearml-agent")
SDK_PYTHON = Path(os.environ.get("WEB_SDK_PYTHON") or REPO / ".cache" / "compat-venv" / "bin" / "python")
ACCESS_KEY = "WEBTESTACCESSKEY0123456789ABCD"
SECRET_KEY = "web-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"
CONSOLE_LINE = "dashboard-check: hello from the training loop"
BLACKHOLE_PROXY = "http://127.0.0.1:9"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root: Path):
        self.root = root
        self.port, self.files_port, self.web_port = free_port(), free_port(), free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.files = f"http://127.0.0.1:{self.files_port}"
        self.web = f"http://127.0.0.1:{self.web_port}"
        self.log = open(root / "server.log", "wb")
        self.proc = subprocess.Popen(
            [str(BIN), "server", "--host", "127.0.0.1", "--port", str(self.port),
             "--files-port", str(self.files_port), "--web-port", str(self.web_port),
             "--data-dir", str(root / "data"), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(root)})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.web + "/", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert self.proc.poll() is None, self.output()
            time.sleep(0.2)
        pytest.fail("the dashboard did not come up: " + self.output())

    def output(self) -> str:
        return (self.root / "server.log").read_text(errors="replace")

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not BIN.exists():
        pytest.fail(f"{BIN} is missing: cargo build -p clearml-agent")
    srv = Server(tmp_path_factory.mktemp("web-server"))
    yield srv
    srv.stop()


SDK_SCRIPT = textwrap.dedent(f"""\
    import math
    from clearml import Task
    task = Task.init(project_name="dashboard", task_name="browser check <b>bold?</b>")
    task.connect({{"lr": 0.01, "epochs": 20}})
    print("{CONSOLE_LINE}")
    logger = task.get_logger()
    for i in range(50):
        logger.report_scalar("loss", "train", value=1.0 / (i + 1), iteration=i)
        logger.report_scalar("loss", "validation", value=1.3 / (i + 1) + 0.02, iteration=i)
        logger.report_scalar("accuracy", "validation", value=1 - 0.5 / (i + 1), iteration=i)
    logger.report_scatter2d("curve", "sin", iteration=0, mode="lines",
                            scatter=[(x / 10, math.sin(x / 10)) for x in range(60)])
    import numpy as np
    ramp = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (48, 1))
    logger.report_image("samples", "ramp", iteration=0, image=np.stack([ramp, ramp[::-1], ramp], axis=-1))
    task.upload_artifact("summary", artifact_object={{"best_loss": 0.02}})
    task.close()
    """)


@pytest.fixture(scope="module")
def sdk_run(server, tmp_path_factory):
    """Runs the real SDK against the server; returns (results link, task id)."""
    if not SDK_PYTHON.exists():
        pytest.fail(f"{SDK_PYTHON} is missing: run tests/compat/run.sh once to make the compat venv")
    home = tmp_path_factory.mktemp("sdk-home")
    (home / "clearml.conf").write_text(textwrap.dedent(f"""\
        api {{
            api_server: {server.api}
            web_server: {server.web}
            files_server: {server.files}
            credentials {{"access_key": "{ACCESS_KEY}", "secret_key": "{SECRET_KEY}"}}
        }}
        sdk.development.suppress_update_message: true
        """))
    script = home / "train.py"
    script.write_text(SDK_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLEARML_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({
        "HOME": str(home), "CLEARML_CONFIG_FILE": str(home / "clearml.conf"),
        "CLEARML_NO_DEFAULT_SERVER": "1", "PYTHONUNBUFFERED": "1",
        "HTTP_PROXY": BLACKHOLE_PROXY, "HTTPS_PROXY": BLACKHOLE_PROXY,
        "http_proxy": BLACKHOLE_PROXY, "https_proxy": BLACKHOLE_PROXY,
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    })
    out = subprocess.run([str(SDK_PYTHON), str(script)], cwd=home, env=env, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    m = re.search(r"ClearML results page: (\S+)", text)
    assert m, f"the SDK printed no results link:\n{text}"
    link = m.group(1)
    assert link.startswith(server.web + "/projects/"), link
    tid = re.search(r"/(?:experiments|tasks)/([0-9a-f]+)/output/log$", link)
    assert tid, link
    return link, tid.group(1)


@pytest.fixture
def browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not (chromium and driver_path):
        pytest.fail("chromium and chromium-driver are needed (apt-get install -y chromium chromium-driver)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1360,1000", "--no-proxy-server"):
        opts.add_argument(arg)
    drv = webdriver.Chrome(service=Service(executable_path=driver_path), options=opts)
    drv.set_page_load_timeout(30)
    yield drv
    drv.quit()


def shot(drv, name: str):
    ARTIFACTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / f"{name}.png"))


def full_shot(drv, name: str):
    """A screenshot of the whole page height (up to 3000 px)."""
    height = drv.execute_script("return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight)")
    drv.set_window_size(1360, min(max(height + 40, 600), 3000))
    shot(drv, name)
    drv.set_window_size(1360, 1000)


def follow(drv, element):
    """Clicks a link or a submit button and waits until the next page replaced this one.

    The old page carries a marker in its `window`; a new document has none. (Waiting for the old
    <html> element to go stale races with chromedriver while the navigation is under way: it can
    answer "Node with given id does not belong to the document" instead of "stale element".)
    """
    drv.execute_script("window.__clearmlLeaving = true;")
    element.click()

    def arrived(d):
        try:
            return d.execute_script(
                "return window.__clearmlLeaving === undefined && document.readyState === 'complete';"
            )
        except WebDriverException:
            return False  # mid-navigation: ask again

    WebDriverWait(drv, 15).until(arrived)


def sign_in(drv, secret: str):
    drv.find_element(By.NAME, "access_key").send_keys(ACCESS_KEY)
    drv.find_element(By.NAME, "secret_key").send_keys(secret)
    follow(drv, drv.find_element(By.CSS_SELECTOR, "form button[type=submit]"))


def test_a_wrong_secret_sees_nothing(server, sdk_run, browser):
    link, tid = sdk_run
    browser.get(link)
    assert browser.find_elements(By.NAME, "secret_key"), "the link should ask to sign in first"
    sign_in(browser, SECRET_KEY + "x")
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "signin-error"))
    shot(browser, "wrong-secret")
    for url in (link, server.web + "/workers-and-queues/queues", server.web + "/projects"):
        browser.get(url)
        body = browser.find_element(By.TAG_NAME, "body").text
        assert CONSOLE_LINE not in body and "browser check" not in body and tid not in body
        assert browser.find_elements(By.NAME, "secret_key")
    assert not [c for c in browser.get_cookies() if c["name"] == "clearml_web_session"]


def test_the_sdk_link_shows_console_scalars_and_queues(server, sdk_run, browser):
    link, tid = sdk_run
    browser.get(link)
    sign_in(browser, SECRET_KEY)
    # Back on the page the SDK linked to: the console, with the line the script printed.
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.ID, "console"))
    assert browser.current_url == link
    cookie = [c for c in browser.get_cookies() if c["name"] == "clearml_web_session"][0]
    assert cookie["httpOnly"] and cookie.get("sameSite") == "Lax"
    assert CONSOLE_LINE in browser.find_element(By.ID, "console").text
    # The name is shown as text, not markup.
    assert browser.find_element(By.ID, "task-name").text == "browser check <b>bold?</b>"
    full_shot(browser, "console")

    follow(browser, browser.find_element(By.LINK_TEXT, "Scalars"))
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "figure.chart svg"))
    assert browser.current_url == link.replace("/output/log", "/output/metrics/scalar")
    loss = browser.find_element(By.CSS_SELECTOR, "figure[data-metric='loss'] svg")
    assert len(loss.find_elements(By.CSS_SELECTOR, "polyline")) == 2  # train and validation
    assert "validation" in loss.text and "train" in loss.text
    full_shot(browser, "scalars")

    follow(browser, browser.find_element(By.LINK_TEXT, "Plots"))
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "figure.chart"))
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg polyline")
    full_shot(browser, "plots")

    follow(browser, browser.find_element(By.LINK_TEXT, "Debug images"))
    img = browser.find_element(By.CSS_SELECTOR, "figure.img img")
    assert img.get_attribute("src").startswith(server.web + "/files/")
    WebDriverWait(browser, 10).until(
        lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == 64)
    shot(browser, "debug-images")

    follow(browser, browser.find_element(By.LINK_TEXT, "Configuration"))
    assert "epochs" in browser.find_element(By.TAG_NAME, "main").text
    follow(browser, browser.find_element(By.LINK_TEXT, "Artifacts"))
    dl = browser.find_element(By.PARTIAL_LINK_TEXT, "summary")
    href = dl.get_attribute("href")
    assert href.startswith(server.web + "/files/"), href
    # The download works with the browser's session (and not without one).
    assert requests.get(href, timeout=10).status_code == 401
    got = requests.get(href, timeout=10, headers={"Cookie": f"clearml_web_session={cookie['value']}"})
    assert got.status_code == 200 and "best_loss" in got.text

    follow(browser, browser.find_element(By.LINK_TEXT, "Execution"))
    full_shot(browser, "task")

    # Clone the task, enqueue the clone, and find it on the queues page.
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action$='/clone'] button"))
    WebDriverWait(browser, 10).until(lambda d: "Cloned" in d.find_element(By.TAG_NAME, "body").text)
    clone_url = browser.current_url
    assert tid not in clone_url
    Select(browser.find_element(By.NAME, "queue")).select_by_visible_text("default")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form[action$='/enqueue'] button"))
    WebDriverWait(browser, 10).until(lambda d: "Enqueued" in d.find_element(By.TAG_NAME, "body").text)
    assert browser.find_element(By.CSS_SELECTOR, "#task-status .status").text == "queued"
    follow(browser, browser.find_element(By.LINK_TEXT, "Queues"))
    assert browser.current_url == server.web + "/workers-and-queues/queues"
    table = browser.find_element(By.CSS_SELECTOR, "table.queues")
    assert "Clone Of browser check" in table.text
    assert table.find_element(By.CSS_SELECTOR, "td.qlen").text == "1"
    full_shot(browser, "queues")

    browser.get(server.web + "/workers-and-queues/workers")
    assert browser.find_element(By.TAG_NAME, "h1").text == "Workers"
    browser.get(server.web + "/projects")
    assert "dashboard" in browser.find_element(By.TAG_NAME, "main").text
    full_shot(browser, "projects")

    # The project's task list, filtered by status and by name.
    follow(browser, browser.find_element(By.LINK_TEXT, "dashboard"))
    rows = lambda: [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.tasks tbody tr")]  # noqa: E731
    assert len(rows()) == 2
    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("completed")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert len(rows()) == 1 and "completed" in rows()[0] and "Clone Of" not in rows()[0]
    full_shot(browser, "task-list")
    Select(browser.find_element(By.NAME, "status")).select_by_visible_text("any")
    name = browser.find_element(By.NAME, "name")
    name.clear()
    name.send_keys("clone of")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form.filters button"))
    assert len(rows()) == 1 and "Clone Of" in rows()[0] and "queued" in rows()[0]


def test_the_console_tails_a_running_task(server, browser):
    """Lines a running task reports after the page loaded appear without a reload."""
    api = requests.Session()
    token = api.post(f"{server.api}/auth.login", auth=(ACCESS_KEY, SECRET_KEY), timeout=10).json()["data"]["token"]
    api.headers["Authorization"] = f"Bearer {token}"

    def call(endpoint, **body):
        r = api.post(f"{server.api}/{endpoint}", json=body, timeout=10).json()
        assert r["meta"]["result_code"] == 200, r
        return r["data"]

    tid = call("tasks.create", name="tail me", type="training")["id"]
    call("tasks.started", task=tid)
    call("events.add", type="log", task=tid, msg="first line, before the page", level="info")
    browser.get(server.web + "/")
    sign_in(browser, SECRET_KEY)
    browser.get(f"{server.web}/projects/*/experiments/{tid}/output/log")
    console = browser.find_element(By.ID, "console")
    assert "first line, before the page" in console.text
    assert console.get_attribute("data-live") == "1"
    call("events.add", type="log", task=tid, msg="second line, <b>after</b> the page\nand a third", level="info")
    WebDriverWait(browser, 15).until(lambda d: "and a third" in d.find_element(By.ID, "console").text)
    assert "second line, <b>after</b> the page" in console.text  # text, not markup
    call("tasks.stopped", task=tid, force=True)
    WebDriverWait(browser, 15).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "#task-status .status").text == "stopped")
    # The page then reloads itself: no more Abort button, and no more tailing.
    WebDriverWait(browser, 15).until(lambda d: not d.find_elements(By.CSS_SELECTOR, "form[action$='/abort']"))
    assert browser.find_element(By.ID, "console").get_attribute("data-live") == "0"
    assert "and a third" in browser.find_element(By.ID, "console").text
    full_shot(browser, "live-tail")


def test_start_up_lines_and_the_one_time_link(server, browser):
    out = server.output()
    m = re.search(r"Dashboard: (http://\S+) .*one-time link: (http://\S+/signin/\S+?)\)?$", out, re.M)
    assert m, out
    assert m.group(1) == server.web
    assert f"web_server: {server.web}" in out
    link = m.group(2)
    browser.get(link)
    assert browser.current_url == server.web + "/projects"
    assert browser.find_element(By.TAG_NAME, "h1").text == "Projects"
    browser.delete_all_cookies()
    browser.get(link)
    assert browser.find_elements(By.NAME, "secret_key"), "the link works once"
    browser.get(server.web + "/projects")
    assert browser.find_elements(By.NAME, "secret_key")
