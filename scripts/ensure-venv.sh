#!/usr/bin/env bash
# Creates .venv/ when missing and installs the project into it. Sourced by the
# scripts that run the bot and the tests, so a fresh clone needs no step by hand.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

python_bin="${PYTHON:-}"
if [ -z "$python_bin" ]; then
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      python_bin="$candidate"; break
    fi
  done
fi
[ -n "$python_bin" ] || { echo "error: Python 3.11 or newer is needed" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $python_bin" >&2
  "$python_bin" -m venv .venv
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first: a torch already in the venv (a CUDA build on a GPU box) is kept;
# otherwise the pinned build, which on a CPU machine is the local CPU wheel.
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "installing torch 2.13.0" >&2
  "${pip[@]}" install "torch==2.13.0"
fi

stamp=".venv/.installed-$( (cat pyproject.toml; echo "${1:-}") | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "installing the project and its dependencies into .venv" >&2
  "${pip[@]}" install -e ".${1:+[$1]}"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
