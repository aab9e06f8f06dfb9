#!/usr/bin/env bash
# Set up everything the test suite needs (venv, Request Tracker for the integration suite) and run it.
# scripts/test.sh [--fast] [pytest options]: --fast leaves out the tests marked integration or slow.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh test
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    bash .ci/install-rt.sh
else
    echo "not root or no apt-get: Request Tracker not installed, its integration tests will be skipped" >&2
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if [ "${1:-}" = "--fast" ]; then
    # the fast suite: neither the integration tests (real RT, real model) nor the slow ones
    shift
    set -- -m "not integration and not slow" "$@"
fi
exec .venv/bin/python -m pytest "$@"
