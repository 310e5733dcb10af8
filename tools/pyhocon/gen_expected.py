#!/usr/bin/env python3
"""Regenerate the pyhocon oracle files for the HOCON corpus.

For every ``NAME.conf`` in the folders given on the command line this parses the file with the real
pyhocon (``ConfigFactory.parse_file``, substitutions resolved) and writes ``NAME.expected.json``:

    {"ok": <the resolved value as plain JSON>}     or     {"error": "<ExceptionType>: <message>"}

Floats stay floats (``11.0`` is written as ``11.0``), so the Rust side can check that numbers keep
their type.  The environment is pinned (see ``TEST_ENV``) so that ``${?VAR}`` snippets are
deterministic; the Rust harness feeds the same variables to the parser.

Usage:  python gen_expected.py [--check] DIR [DIR ...]
  --check   do not write; exit 1 if any expected file is missing or differs (CI uses this when
            pyhocon is available, to prove the committed oracle is current).
"""
import json
import os
import sys
from collections import OrderedDict

from pyhocon import ConfigFactory, ConfigTree
from pyhocon.config_tree import NoneValue

# Keep in sync with crates/hocon/tests/pyhocon_corpus.rs (TEST_ENV).
TEST_ENV = {
    "HOCON_TEST_USER": "tester",
    "HOCON_TEST_HOME": "/home/tester",
    "HOCON_TEST_PORT": "8008",
    "HOCON_TEST_URL": "https://pypi.example.org/simple",
}
UNSET = ["HOCON_TEST_UNSET"]


def plain(value):
    if isinstance(value, ConfigTree):
        return OrderedDict((k.strip('"'), plain(v)) for k, v in value.items())
    if isinstance(value, dict):
        return OrderedDict((k, plain(v)) for k, v in value.items())
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, NoneValue) or value is None:
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    # Durations (relativedelta/timedelta) and anything exotic: keep a readable marker.
    return {"$unsupported": repr(value)}


def oracle(folder, name):
    # Parse from inside the folder so paths in error messages do not depend on where we run.
    here = os.getcwd()
    os.chdir(folder)
    try:
        tree = ConfigFactory.parse_file(name)
        return {"ok": plain(tree)}
    except Exception as exc:  # the oracle records failures as data
        return {"error": "%s: %s" % (type(exc).__name__, exc)}
    finally:
        os.chdir(here)


def main(argv):
    check = "--check" in argv
    dirs = [a for a in argv if a != "--check"]
    if not dirs:
        print(__doc__)
        return 2
    os.environ.update(TEST_ENV)
    for name in UNSET:
        os.environ.pop(name, None)
    stale = 0
    for d in dirs:
        for name in sorted(os.listdir(d)):
            if not name.endswith(".conf"):
                continue
            src = os.path.join(d, name)
            dst = src[: -len(".conf")] + ".expected.json"
            text = json.dumps(oracle(d, name), indent=2, ensure_ascii=False) + "\n"
            if check:
                try:
                    with open(dst, encoding="utf-8") as f:
                        current = f.read()
                except FileNotFoundError:
                    current = None
                if current != text:
                    print("stale oracle: %s" % dst)
                    stale += 1
            else:
                with open(dst, "w", encoding="utf-8") as f:
                    f.write(text)
    if stale:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
