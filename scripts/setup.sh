#!/usr/bin/env bash
# Create .venv and install helpdesk-connector into it (idempotent).
# torch is pinned to the 2.13.0 CPU wheel first; a plain "torch" would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
EXTRAS=${1:-}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".${EXTRAS:+[$EXTRAS]}"
