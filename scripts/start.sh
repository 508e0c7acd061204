#!/usr/bin/env bash
# Runs the bot with its embedded defaults (SQLite, in-process queue, built-in model).
# Needs DISCORD_TOKEN in the environment; any arguments go to `python -m bot run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh ""   # (not the bot's arguments)
exec .venv/bin/python -m bot run "$@"
