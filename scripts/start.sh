#!/usr/bin/env bash
# Runs the bot with its embedded defaults (SQLite, in-process queue, built-in model) and the
# web app beside it (http://127.0.0.1:8080, [web] in config.toml). Without DISCORD_TOKEN in
# the environment, the web app alone, for one local user. Any arguments go to `python -m bot run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/ensure-venv.sh ""   # (not the bot's arguments)
exec .venv/bin/python -m bot run "$@"
