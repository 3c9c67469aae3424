#!/usr/bin/env bash
# Create .venv and install streamkeep into it.
#   ./scripts/setup.sh            streamkeep with every integration and the test tools
#   ./scripts/setup.sh --servers  the same, plus redis-server (Debian package) when missing and we may use apt
#   ./scripts/setup.sh --demo     streamkeep alone, what `streamkeep demo` needs (no integrations, no test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=full servers=0
for arg in "$@"; do
  case "$arg" in
    --demo) mode=demo ;;
    --servers) servers=1 ;;
    *) echo "setup.sh: unknown option '$arg' (use --demo or --servers)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
full_stamp=.venv/.streamkeep-installed
demo_stamp=.venv/.streamkeep-installed-demo
if [ "$mode" = full ] && ! fresh "$full_stamp"; then
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[all,dev]'
  touch "$full_stamp" "$demo_stamp"
elif [ "$mode" = demo ] && ! fresh "$full_stamp" && { ! fresh "$demo_stamp" || [ -n "$(find streamkeep -newer "$demo_stamp" -print -quit)" ]; }; then
  # A regular (not editable) install: setuptools' editable mode warns about this flat layout;
  # reinstalled whenever the sources are newer than the last install.
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check .
  touch "$demo_stamp"
fi
if [ "$servers" = 1 ] && ! command -v redis-server >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get install -y -q redis-server >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q redis-server >/dev/null; }
  else
    echo "redis-server is missing and apt-get is not available: install Redis 6+ to run the integration tests" >&2
  fi
fi
