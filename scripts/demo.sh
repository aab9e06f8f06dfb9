#!/usr/bin/env bash
# Set up helpdesk-connector and run the demo: a sandbox helpdesk on 127.0.0.1, SQLite state,
# a model fine-tuned on the project's sample tickets, and one routing pass shown in the output.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/helpdesk-connector demo "$@"
