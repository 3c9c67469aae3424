#!/usr/bin/env bash
# Run the whole test suite (unit, property, integration with real servers, fault injection),
# then ruff and mypy. Sets up .venv and redis-server first.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh --servers
# the dashboard's browser test (tests/integration/test_dashboard_browser.py) drives headless Chromium
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium chromium-driver >/dev/null; }
  else
    echo "chromium and chromedriver are missing and apt-get is not available: the dashboard browser test will fail" >&2
  fi
fi
.venv/bin/ruff check streamkeep tests bench examples
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
