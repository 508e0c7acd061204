#!/usr/bin/env bash
# Runs the whole test suite (lint first) after setting up .venv when needed.
# Any arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh dev
# redis-server for the GPU-worker tests (tests/helpers/redis_server.py starts its own on a
# free port): from apt when missing; the tests use PostgreSQL 15's binaries the same way.
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt)" >&2
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq redis-server >/dev/null
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
