#!/usr/bin/env bash
# A scale-out demo on one machine (docs/scale-out.md): a redis-server on 127.0.0.1, N GPU
# workers (`python -m bot worker`) and the bot with [queue] executor = "celery", all stopped
# together with Ctrl-C. Usage: bash scripts/cluster.sh [N] (default 2).
# Needs DISCORD_TOKEN for the bot; without it, Redis and the workers run alone (the bot
# can be started later with IMAGINE_EXECUTOR=celery IMAGINE_BROKER_URL=<the URL it prints>).
# With several GPUs the workers take them in turn (cuda:0, cuda:1, ...); with one they share it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
workers="${1:-2}"
[[ "$workers" =~ ^[1-9][0-9]?$ ]] || { echo "usage: bash scripts/cluster.sh [number of workers, 1-99]" >&2; exit 2; }
source scripts/ensure-venv.sh ""   # (not this script's arguments)
if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (apt)" >&2
  as_root=(); [[ $(id -u) -eq 0 ]] || as_root=(sudo)
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

port="${REDIS_PORT:-6390}"
logs="data/cluster"
mkdir -p "$logs"
pids=()  # the bot and the workers, stopped before Redis (a worker says goodbye in Redis)
redis_pid=""
stop() {
  trap - EXIT INT TERM
  if ((${#pids[@]})); then
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
  fi
  if [[ -n "$redis_pid" ]]; then
    kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
}
trap stop EXIT INT TERM

if redis-cli -p "$port" ping >/dev/null 2>&1; then
  echo "port $port already has a Redis (REDIS_PORT=... picks another)" >&2; exit 1
fi
# in a session of its own: Ctrl-C reaches the workers, and Redis stays up for their goodbye
setsid redis-server --port "$port" --bind 127.0.0.1 --protected-mode yes --save "" --appendonly no \
  --dir "$logs" >"$logs/redis.log" 2>&1 &
redis_pid=$!
for _ in $(seq 50); do
  redis-cli -p "$port" ping >/dev/null 2>&1 && break
  kill -0 "$redis_pid" 2>/dev/null || { echo "redis-server did not start (is port $port taken? see $logs/redis.log;" \
                                          "REDIS_PORT=... picks another)" >&2; exit 1; }
  sleep 0.1
done
export IMAGINE_BROKER_URL="redis://127.0.0.1:$port/0" IMAGINE_EXECUTOR=celery
gpus=$(.venv/bin/python -c "import torch; print(torch.cuda.device_count())")
for n in $(seq 1 "$workers"); do
  device=cpu; ((gpus == 0)) || device="cuda:$(( (n - 1) % gpus ))"
  OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" .venv/bin/python -m bot worker --device "$device" --models builtin \
    --name "worker$n" >"$logs/worker$n.log" 2>&1 &
  pids+=($!)
done
echo "redis on $IMAGINE_BROKER_URL, $workers workers ($gpus GPUs; logs in $logs/)"
if [[ -z "${DISCORD_TOKEN:-}" ]]; then
  echo "no DISCORD_TOKEN: the bot is not started; Ctrl-C stops Redis and the workers"
  wait "${pids[@]}"
else
  .venv/bin/python -m bot run &
  pids+=($!)
  wait "${pids[-1]}"
fi
