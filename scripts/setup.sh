#!/usr/bin/env bash
# Create .venv and install streamkeep with every integration and the test tools.
# Also installs redis-server (Debian package) when missing and we may use apt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.streamkeep-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[all,dev]'
  touch "$stamp"
fi
if [ "${1:-}" = "--servers" ] && ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
  else
    echo "redis-server is missing and apt-get is not available: install Redis 6+ to run the integration tests" >&2
  fi
fi
