#!/usr/bin/env bash
# Runs the whole test suite (lint first) after setting up .venv when needed.
# Any arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh dev
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"
