#!/usr/bin/env bash
# Creates the project's virtual environment (PEP 668: never pip into the system's Python) and installs
# cilia into it, editable, with its development tools. Usage: setup-venv.sh PYTHON VENV_DIR
set -euo pipefail
py=${1:-python3}
venv=${2:-.venv}
if ! command -v "$py" >/dev/null; then
  echo "setup: no Python interpreter '$py' (cilia needs Python >= 3.11; make setup PY=/path/to/python3)" >&2
  exit 1
fi
if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $("$py" --version 2>&1) is too old: cilia needs Python >= 3.11 (make setup PY=...)" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  # Debian and Ubuntu ship venv's ensurepip in a package of its own (python3-venv / python3.X-venv).
  if ! "$py" -c 'import ensurepip, venv' 2>/dev/null; then
    ver=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq
      apt-get install -y -qq "python${ver}-venv" >/dev/null || apt-get install -y -qq python3-venv >/dev/null
    else
      echo "setup: $py has no venv module; install it first: sudo apt-get install python${ver}-venv" >&2
      exit 1
    fi
  fi
  rm -rf "$venv"
  "$py" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
