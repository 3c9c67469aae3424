#!/usr/bin/env bash
# Run the demo: a stateful running word count with a local checkpoint.
# Interrupt it (Ctrl-C or kill -9) and run it again: the counts continue.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --demo  # streamkeep alone: no integrations, no test tools
STREAMKEEP_DEMO_COMMAND=./scripts/demo.sh exec .venv/bin/streamkeep demo "$@"
