"""Discord benchmark: how fast a burst of /imagine is acknowledged, and what it costs in requests.

    .venv/bin/python bench/discord_bench.py [--jobs 50] [--users 10] [--progress-seconds 3] [--outage 0]

The real bot (setup_hook, cogs, the built-in model on this machine's CPU) talks to the
strict fake Discord of tests/helpers/discord_harness.py (it refuses what Discord
refuses, with its windows and rate-limit headers). One job is started and left running,
so the engine is busy; then `--jobs` /imagine interactions from `--users` users arrive
at once. With `--outage S`, every route answers 500 for S seconds once a tenth of the
grids are posted. Printed:

1. Acknowledgement latency (the interaction arriving to its deferral reaching Discord;
   Discord drops interactions not answered within 3 s), p50/p99/max, and the time to
   the "Waiting to start" text a user sees.
2. Requests sent to Discord per job, by kind, once every job has delivered its grid.
3. The busiest second: all requests, and those that count against the bot's global
   rate limit (50/s; interaction callbacks and webhooks do not).
4. Delivery latency: a job finished (its row's finished_at) to its grid accepted by
   Discord, p50/p99/max, and whether every grid was posted exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fake_bot import bot_on_fake_discord  # noqa: E402
from helpers.discord_harness import Recorded, command_payload  # noqa: E402

from bot.config import DiscordSettings  # noqa: E402
from generation.builtin.world import SHAPE_COLOURS, SHAPES  # noqa: E402
from storage import repository as repo  # noqa: E402

GLOBAL_RATE_LIMIT = 50  # requests per second per bot, outside interaction endpoints
COLOURS = list(SHAPE_COLOURS)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def request_kind(record: Recorded) -> str:
    parts = record.path.strip("/").split("/")
    if parts[-1] == "callback":
        return "callback (defer)"
    if parts[0] == "webhooks":
        if record.method == "POST":
            return "followup with files" if record.files else "followup"
        return f"webhook {record.method} " + ("(result)" if record.files else "(text)")
    return f"{parts[0]} {record.method}"


def counts_against_global_limit(record: Recorded) -> bool:
    return not (record.path.startswith("/interactions/") or record.path.startswith("/webhooks/"))


def busiest_second(times: list[float]) -> int:
    times = sorted(times)
    start, most = 0, 0
    for end, moment in enumerate(times):
        while moment - times[start] >= 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


RESULT_FILE = re.compile(r"job-(\d+)\.(png|webp)$")


def grids_posted(requests: list[Recorded]) -> dict[int, list[Recorded]]:
    """The accepted posts of each job's grid, by job id."""
    posted: dict[int, list[Recorded]] = {}
    for record in requests:
        for name in record.files if record.method == "POST" and record.accepted else ():
            if match := RESULT_FILE.search(name):
                posted.setdefault(int(match[1]), []).append(record)
    return posted


async def run(jobs: int, users: int, progress_seconds: float, outage: float) -> None:
    with tempfile.TemporaryDirectory() as folder:
        bot, server = await bot_on_fake_discord(
            folder, discord=DiscordSettings(sync_guild_id=None, progress_edit_seconds=progress_seconds,
                                            redelivery_seconds=10))
        wall_minus_monotonic = time.time() - time.monotonic()
        fake_seconds: list[float] = []  # the fake shares the bot's event loop: its checks delay the bot too
        respond = server._respond

        def timed_respond(*args):
            started = time.perf_counter()
            try:
                return respond(*args)
            finally:
                fake_seconds.append(time.perf_counter() - started)
        server._respond = timed_respond

        def imagine(prompt: str, user_id: int) -> tuple[str, float]:
            payload = command_payload("imagine", {"prompt": prompt}, user_id)
            sent = time.monotonic()
            server.interaction_created(payload["token"], payload["id"], payload["type"])
            bot._connection.parsers["INTERACTION_CREATE"](payload)
            return payload["token"], sent

        def of(token: str) -> list[Recorded]:
            return [r for r in server.requests if f"/{token}" in r.path]

        busy, _ = imagine("a red circle on a white background", 1)
        await server.wait_for(lambda: any("%)" in (r.content or "") for r in of(busy)), timeout=300)

        first_request = len(server.requests)
        burst = [imagine(f"a {COLOURS[i % len(COLOURS)]} {SHAPES[i % len(SHAPES)]} --seed {i}", 100 + i % users)
                 for i in range(jobs)]
        burst_started = burst[0][1]

        def first(token: str, predicate) -> Recorded | None:
            return next((r for r in of(token) if predicate(r)), None)

        await server.wait_for(lambda: all(first(t, lambda r: r.path.endswith("/callback")) for t, _ in burst), 60)
        acks = [(first(t, lambda r: r.path.endswith("/callback")).at - sent) * 1000 for t, sent in burst]
        await server.wait_for(lambda: all(first(t, lambda r: "Waiting" in (r.content or "")) for t, _ in burst), 60)
        waiting = [(first(t, lambda r: "Waiting" in (r.content or "")).at - sent) * 1000 for t, sent in burst]
        if outage:
            await server.wait_for(lambda: len(grids_posted(server.requests)) > jobs // 10, 60 * 60)
            server.fail(500, seconds=outage)
            outage_started = time.monotonic()
        await server.wait_for(lambda: len(grids_posted(server.requests)) == jobs + 1, 60 * 60)
        finished = time.monotonic()
        async with bot.sessionmaker() as session:
            finished_at = {job_id: (await repo.get_job(session, job_id=job_id)).finished_at
                           for job_id in grids_posted(server.requests)}
        await asyncio.sleep(2 * progress_seconds)  # anything still on its way
        await bot.close()
        await server.close()

    sent = server.requests[first_request:]
    print(f"burst: {jobs} /imagine from {users} users while a job runs; progress edits at most every "
          f"{progress_seconds:g} s; all {jobs} grids delivered {finished - burst_started:.1f} s after the burst")
    print(f"acknowledgement (deferral) latency: p50 {percentile(acks, 0.5):.1f} ms, "
          f"p99 {percentile(acks, 0.99):.1f} ms, max {max(acks):.1f} ms (Discord's limit: 3000 ms)")
    print(f"'Waiting to start' shown after: p50 {percentile(waiting, 0.5):.1f} ms, "
          f"p99 {percentile(waiting, 0.99):.1f} ms, mean {statistics.mean(waiting):.1f} ms")
    per_job = [len(of(token)) for token, _ in burst]
    print(f"requests to Discord per job: mean {statistics.mean(per_job):.2f}, min {min(per_job)}, max {max(per_job)}"
          f" ({len(sent)} requests in all, {len(sent) / jobs:.2f} per job counting the busy job's tail)")
    for kind, count in sorted(Counter(request_kind(r) for token, _ in burst for r in of(token)).items()):
        print(f"  {kind:28s} {count / jobs:5.2f} per job")
    limited = [r.at for r in sent if counts_against_global_limit(r)]
    print(f"the fake Discord's own work (rules, schemas, buckets; on the bot's event loop): mean "
          f"{statistics.mean(fake_seconds) * 1000:.1f} ms per request")
    print(f"busiest second: {busiest_second([r.at for r in sent])} requests, {busiest_second(limited)} of them "
          f"under the global rate limit ({GLOBAL_RATE_LIMIT}/s)")
    posted = grids_posted(server.requests)
    latency = [posted[job_id][0].at + wall_minus_monotonic - at.replace(tzinfo=at.tzinfo or UTC).timestamp()
               for job_id, at in finished_at.items()]
    twice = sorted(job_id for job_id, posts in posted.items() if len(posts) > 1)
    refused = [r for r in server.requests if r.status is not None and r.status >= 400]
    if outage:
        print(f"outage: every route answered 500 for {outage:g} s from {outage_started - burst_started:.1f} s after "
              f"the burst; {len(refused)} requests refused")
    print(f"delivery latency (job finished -> grid accepted): p50 {percentile(latency, 0.5) * 1000:.0f} ms, "
          f"p99 {percentile(latency, 0.99) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms; "
          f"{len(posted)} of {jobs + 1} grids posted, {len(twice)} more than once {twice or ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--users", type=int, default=10, help="the burst's users (each may queue 10 fast jobs)")
    parser.add_argument("--progress-seconds", type=float, default=3.0)
    parser.add_argument("--outage", type=float, default=0.0, help="seconds of 500 on every route, mid-run")
    args = parser.parse_args()
    asyncio.run(run(args.jobs, args.users, args.progress_seconds, args.outage))


if __name__ == "__main__":
    main()
