"""A tiny ClearML REST client for asserting on the server's state.

Deliberately independent of the SDK: it speaks the wire protocol directly
(Basic auth on /auth.login, Bearer afterwards, JSON body, envelope
{"meta": {...}, "data": {...}}), so a test can check what the server stored
rather than what the SDK believes it stored.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Optional

import requests

DEFAULT_TIMEOUT = 15.0


class ApiError(AssertionError):
    """A call that was expected to succeed did not (an AssertionError, so pytest shows it plainly)."""

    def __init__(self, endpoint: str, status: int, envelope: Any, text: str):
        self.endpoint = endpoint
        self.status = status
        self.envelope = envelope
        meta = envelope.get("meta", {}) if isinstance(envelope, dict) else {}
        super().__init__(
            f"{endpoint}: HTTP {status}, result_code={meta.get('result_code')}/"
            f"{meta.get('result_subcode')} {meta.get('result_msg')!r}; body={text[:500]!r}"
        )


@dataclass
class Reply:
    """One HTTP exchange, kept raw so that error-envelope tests can inspect every part."""

    status: int
    text: str
    envelope: Optional[dict]  # None when the body is not a JSON object

    @property
    def meta(self) -> dict:
        return (self.envelope or {}).get("meta") or {}

    @property
    def data(self) -> Any:
        return (self.envelope or {}).get("data")

    @property
    def result_code(self):
        return self.meta.get("result_code")

    @property
    def subcode(self):
        return self.meta.get("result_subcode")

    def __repr__(self) -> str:  # shown by pytest on failure
        return f"Reply(status={self.status}, body={self.text[:400]!r})"


class Api:
    def __init__(self, base_url: str, access_key: str, secret_key: str, timeout: float = DEFAULT_TIMEOUT):
        self.base_url = base_url.rstrip("/")
        self.access_key = access_key
        self.secret_key = secret_key
        self.timeout = timeout
        self.token: Optional[str] = None
        self.http = requests.Session()
        # never let a proxy from the environment see our loopback traffic
        self.http.trust_env = False

    # -- transport -------------------------------------------------------

    def basic_header(self) -> str:
        raw = f"{self.access_key}:{self.secret_key}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    def login(self) -> str:
        r = self.raw("auth.login", None, method="GET", auth=self.basic_header())
        if r.status != 200 or not isinstance(r.data, dict) or not r.data.get("token"):
            raise ApiError("auth.login", r.status, r.envelope, r.text)
        self.token = r.data["token"]
        return self.token

    def raw(
        self,
        endpoint: str,
        body: Any = None,
        *,
        method: str = "POST",
        data: Optional[bytes] = None,
        content_type: Optional[str] = "application/json",
        auth: Any = True,
        version: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Reply:
        """Send one request and return the reply without judging it.

        body: a JSON value to send (ignored when ``data`` is given);
        data: raw bytes to send as-is (garbage, json-lines, ...);
        auth: True = Bearer token (logs in first if needed), False/None = no header,
              a string = that exact Authorization header.
        """
        headers = {}
        if content_type:
            headers["Content-Type"] = content_type
        if auth is True:
            if not self.token:
                self.login()
            headers["Authorization"] = "Bearer " + self.token
        elif isinstance(auth, str):
            headers["Authorization"] = auth
        if data is None and body is not None:
            data = json.dumps(body).encode()
        path = f"/v{version}/{endpoint}" if version else f"/{endpoint}"
        resp = self.http.request(
            method, self.base_url + path, data=data, headers=headers, timeout=timeout or self.timeout
        )
        try:
            env = resp.json()
            if not isinstance(env, dict):
                env = None
        except ValueError:
            env = None
        return Reply(resp.status_code, resp.text, env)

    # -- helpers ---------------------------------------------------------

    def call(self, endpoint: str, **body) -> Any:
        """Call an endpoint that must succeed; return its ``data``."""
        r = self.raw(endpoint, body)
        if r.status != 200 or r.result_code != 200 or not isinstance(r.data, dict):
            raise ApiError(endpoint, r.status, r.envelope, r.text)
        return r.data

    def call_lines(self, endpoint: str, items: list, **kw) -> Any:
        """Send a json-lines batch (as the SDK does for events.add_batch); must succeed."""
        payload = "\n".join(json.dumps(i) for i in items).encode()
        r = self.raw(endpoint, data=payload, content_type="application/json-lines", **kw)
        if r.status != 200 or r.result_code != 200:
            raise ApiError(endpoint, r.status, r.envelope, r.text)
        return r.data

    # common reads

    def task(self, task_id: str) -> dict:
        return self.call("tasks.get_by_id", task=task_id)["task"]

    def queue(self, queue_id: str) -> dict:
        return self.call("queues.get_by_id", queue=queue_id)["queue"]

    def create_queue(self, name: str) -> str:
        return self.call("queues.create", name=name)["id"]

    def queue_task_ids(self, queue_id: str) -> list:
        return [e.get("task") for e in (self.queue(queue_id).get("entries") or [])]

    def task_log(self, task_id: str, batch_size: int = 5000) -> list:
        """All log events of a task, oldest first (events.get_task_log, 2.9+ form)."""
        data = self.call(
            "events.get_task_log", task=task_id, batch_size=batch_size, navigate_earlier=False, order="asc"
        )
        return data.get("events") or []

    def task_log_text(self, task_id: str) -> str:
        return "\n".join(str(e.get("msg", "")) for e in self.task_log(task_id))

    def files_get(self, url: str, token: Any = True, timeout: Optional[float] = None) -> requests.Response:
        headers = {}
        if token is True:
            if not self.token:
                self.login()
            headers["Authorization"] = "Bearer " + self.token
        elif isinstance(token, str):
            headers["Authorization"] = token
        return self.http.get(url, headers=headers, timeout=timeout or self.timeout)
