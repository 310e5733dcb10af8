"""Loaded by every Python process the compat suite starts (PYTHONPATH): checks each reply our
server gives the real clients against the client's own typed response class.

The SDK (clearml) and the Python agent (clearml_agent) parse a reply with the response class of
the endpoint and version they speak (`clearml/backend_api/services/v2_*`); when that fails they
only log "Failed parsing response" and carry on with a half-read reply. Here every parse is
repeated and its outcome appended as one JSON line to $COMPAT_REPLY_LOG; the suite's
`client_env` fixture fails the test on any failure. Only the endpoint, version and error text
are written, never the body.
"""

import importlib.abc
import importlib.machinery
import json
import os
import sys

_TARGETS = ("clearml.backend_api.session.callresult", "clearml_agent.backend_api.session.callresult")


def _record(entry):
    path = os.environ.get("COMPAT_REPLY_LOG")
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError:
        pass


def _patch(module):
    cls = getattr(module, "CallResult", None)
    get_response_cls = getattr(module, "get_response_cls", None)
    if cls is None or get_response_cls is None:
        return
    original = cls.__dict__["from_result"].__func__

    def from_result(klass, *args, **kwargs):
        result = original(klass, *args, **kwargs)
        try:
            request_cls = kwargs.get("request_cls") or (args[1] if len(args) > 1 else None)
            response_cls = get_response_cls(request_cls) if request_cls else None
            data = getattr(result, "response_data", None)
            meta = getattr(result, "meta", None)
            code = getattr(meta, "result_code", None)
            if response_cls is None or code != 200 or not isinstance(data, dict):
                return result
            entry = {
                "endpoint": f"{request_cls._service}.{request_cls._action}",
                "version": getattr(request_cls, "_version", None),
                "client": module.__name__.split(".")[0],
            }
            try:
                response_cls(**data)
            except Exception as e:  # exactly what the client's own parse would hit
                entry["error"] = f"{type(e).__name__}: {e}"
            _record(entry)
        except Exception:
            pass
        return result

    cls.from_result = classmethod(from_result)


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self.inner = inner

    def create_module(self, spec):
        return self.inner.create_module(spec)

    def exec_module(self, module):
        self.inner.exec_module(module)
        _patch(module)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in _TARGETS:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


if os.environ.get("COMPAT_REPLY_LOG"):
    sys.meta_path.insert(0, _Finder())
