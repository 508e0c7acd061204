#!/usr/bin/env bash
# Runs the whole test suite (lint first) after setting up .venv when needed.
# Any arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh dev
# From apt when missing: redis-server for the GPU-worker tests (tests/helpers/redis_server.py starts
# its own on a free port; the tests use PostgreSQL 15's binaries the same way), and Debian's chromium
# (with its driver and an emoji font) for the web app's browser tests (tests/web/, Playwright).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v chromium >/dev/null 2>&1 || missing+=(chromium chromium-driver)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || missing+=(fonts-noto-color-emoji)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} (apt)" >&2
  as_root=(); [ "$(id -u)" -eq 0 ] || as_root=(sudo)
  "${as_root[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
