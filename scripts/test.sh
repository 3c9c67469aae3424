#!/usr/bin/env bash
# Run the whole test suite (unit, property, integration with real servers, fault injection),
# then ruff and mypy. Sets up .venv and redis-server first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --servers
.venv/bin/ruff check streamkeep tests bench examples
.venv/bin/mypy
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
