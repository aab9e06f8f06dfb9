#!/usr/bin/env bash
# Set up everything the test suite needs (venv, Request Tracker for the integration suite) and run it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    bash .ci/install-rt.sh
else
    echo "not root or no apt-get: Request Tracker not installed, its integration tests will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m pytest "$@"
