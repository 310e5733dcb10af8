#!/usr/bin/env bash
# The compatibility suite: the real Python clearml SDK and clearml-agent (pinned in
# requirements.txt) against our embedded server.
#
#   tests/compat/run.sh [pytest args...]
#
# Builds nothing: it tests $CLEARML_AGENT_BIN (default <repo>/target/debug/clearml-agent).
# The venv lives in <repo>/.cache/compat-venv and is created on first use.
# Exit code: pytest's, except that "no tests collected" (5) is a failure too (1).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.cache/compat-venv"
export CLEARML_AGENT_BIN="${CLEARML_AGENT_BIN:-$repo/target/debug/clearml-agent}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

if [ ! -x "$CLEARML_AGENT_BIN" ]; then
    echo "compat: server binary not found: $CLEARML_AGENT_BIN (build it: cargo build -p clearml-agent)" >&2
    echo "compat: the tests will run and fail with that message" >&2
fi

cd "$repo"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider "$here" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "compat: pytest collected no tests; counting that as a failure" >&2
    exit 1
fi
exit "$rc"
