#!/usr/bin/env bash
# A scale-out demo on one machine (docs/scale-out.md): a redis-server on 127.0.0.1, N GPU
# workers (`python -m bot worker`) and the bot with [queue] executor = "celery", all stopped
# together with Ctrl-C. Usage: bash scripts/cluster.sh [N] (default 2).
# Needs DISCORD_TOKEN for the bot; without it, Redis and the workers run alone (the bot
# can be started later with IMAGINE_EXECUTOR=celery IMAGINE_BROKER_URL=<the URL it prints>).
# On one GPU the workers share it (--device cuda); with several, give each its own device.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
workers="${1:-2}"
[[ "$workers" =~ ^[1-9][0-9]?$ ]] || { echo "usage: bash scripts/cluster.sh [number of workers, 1-99]" >&2; exit 2; }
source scripts/ensure-venv.sh ""   # (not this script's arguments)
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt)" >&2
  as_root=(); [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq redis-server >/dev/null
fi

port="${REDIS_PORT:-6390}"
logs="data/cluster"
mkdir -p "$logs"
pids=()  # the bot and the workers, stopped before Redis (a worker says goodbye in Redis)
redis_pid=""
stop() {
  trap - EXIT INT TERM
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
  [[ -z "$redis_pid" ]] || { kill -TERM "$redis_pid" 2>/dev/null; wait "$redis_pid" 2>/dev/null || true; }
}
trap stop EXIT INT TERM

redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save "" --appendonly no \
  --dir "$logs" >"$logs/redis.log" 2>&1 &
redis_pid=$!
export IMAGINE_BROKER_URL="redis://127.0.0.1:$port/0" IMAGINE_EXECUTOR=celery
device=$(.venv/bin/python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
for n in $(seq 1 "$workers"); do
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" .venv/bin/python -m bot worker --device "$device" --models builtin \
    --name "worker$n" >"$logs/worker$n.log" 2>&1 &
  pids+=($!)
done
echo "redis on $IMAGINE_BROKER_URL, $workers workers on $device (logs in $logs/)"
if [[ -z "${DISCORD_TOKEN:-}" ]]; then
  echo "no DISCORD_TOKEN: the bot is not started; Ctrl-C stops Redis and the workers"
  wait
else
  .venv/bin/python -m bot run &
  pids+=($!)
  wait "${pids[-1]}"
fi
