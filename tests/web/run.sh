#!/usr/bin/env bash
# The dashboard's browser test: headless Chromium (Debian's chromium and chromium-driver) driven
# by selenium, against `clearml-agent server`, with the real SDK from the compat suite's venv.
#
#   tests/web/run.sh [pytest args...]
#
# Builds nothing: it tests $CLEARML_AGENT_BIN (default <repo>/target/debug/clearml-agent).
# Its own venv (selenium, pytest) lives in <repo>/.cache/web-venv; screenshots land in
# tests/web/artifacts/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="$repo/.cache/web-venv"
export CLEARML_AGENT_BIN="${CLEARML_AGENT_BIN:-$repo/target/debug/clearml-agent}"

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
# The SDK comes from the compat suite's venv; make it when it is not there yet.
if [ ! -x "$repo/.cache/compat-venv/bin/python" ]; then
    python3 -m venv "$repo/.cache/compat-venv"
    "$repo/.cache/compat-venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        -r "$repo/tests/compat/requirements.txt"
fi

cd "$repo"
set +e
"$venv/bin/python" -m pytest -p no:cacheprovider "$here" "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
    echo "web: pytest collected no tests; counting that as a failure" >&2
    exit 1
fi
exit "$rc"
