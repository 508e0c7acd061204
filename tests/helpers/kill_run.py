"""Kill -9 at random moments: a run of jobs from several users under a supervisor, SIGKILLed
again and again, then checked for what a machine that misbehaves must never cost.

Used by tests/bot/test_kill_run.py (one seed) and bench/kill_bench.py (several). The
victim is tests/helpers/crash_worker.py under `python -m bot.supervisor`, as `python -m bot
run` runs the bot. Each kill is SIGKILL, to the supervisor (its child dies with it; a new
supervisor is started) or to the child (the supervisor restarts it), at a seeded random
moment after the start, or aimed at a point the worker announces (`CRASH_AIM`): the first
migration, a submission, a picture's write, a record.

With a `cluster` (helpers/cluster.py), the bot runs its jobs on the cluster's two GPU
workers (`[queue] executor = "celery"`), and each random kill picks its victim among the bot
and the workers: a worker killed is started again at once (it loads the model meanwhile).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from helpers.cluster import LEASE_SECONDS, Cluster

ROOT = Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "helpers" / "crash_worker.py"
AIMS = ("migration", "submit", "write", "record")
WORKERS = ("w1", "w2")


@dataclass
class KillRunReport:
    jobs: int  # the jobs the plan asked for, the poison job included
    done_once: int  # finished with exactly one set of recorded pictures
    kills: int
    temp_files: int  # left in the store at the end
    orphans: int  # files in the store no row records, and recorded files that are missing
    unreadable: int  # files others cannot read (not 0644)
    integrity: str  # SQLite's integrity_check
    attempts: Counter[int] = field(default_factory=Counter)  # how many times each done job was started
    poison: tuple[str, int] | None = None  # the poison job's state and crashes blamed on it
    blamed: int = 0  # crashes blamed on jobs that are not poison (must be 0)
    seconds: float = 0.0


def make_plan(users: int, jobs: int, *, poison: bool) -> list[dict]:
    """Submissions of 1 to 3 jobs, users taking turns, `jobs` in all, then the poison job."""
    plan, made, user = [], 0, 0
    while made < jobs:
        count = min(1 + made % 3, jobs - made)
        plan.append({"user": 1 + user % users, "count": count})
        made, user = made + count, user + 1
    if poison:
        plan.append({"user": users + 1, "count": 1, "poison": True})
    return plan


class Victim:
    """One supervisor (and the worker under it), with its output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: asyncio.Queue[str] = asyncio.Queue()
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, folder: Path, aim: str = "", remote: list[str] = ()) -> Victim:
        """`remote`: crash_worker's options for running the jobs on GPU workers."""
        env = {**os.environ, "CRASH_AIM": aim, "PYTHONUNBUFFERED": "1"}
        with (folder / "supervisor.log").open("ab") as log:  # what the supervisor and the worker said
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.supervisor", sys.executable, str(WORKER), str(folder / "bot.db"),
                str(folder / "images"), str(folder / "plan.json"), *remote, cwd=ROOT, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=log)
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            await self.lines.put(line.decode().strip())

    async def wait_for_line(self, prefix: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = await asyncio.wait_for(self.lines.get(), left)
            except TimeoutError:
                return False
            if line.startswith(prefix):
                return True
        return False

    def worker_pid(self) -> int | None:
        """The supervisor's child, if it has one now."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    async def stop(self) -> None:
        await self.process.wait()
        await self.reader


async def kill_run(folder: Path, *, seed: int, kills: int = 20, users: int = 5, jobs: int = 50,
                   poison: bool = True, aims: tuple[str, ...] = AIMS, timeout: float = 600,
                   cluster: Cluster | None = None) -> KillRunReport:
    """Run the plan to the end under `kills` SIGKILLs at random moments plus one aimed at each of `aims`
    (on the bot or, with a `cluster`, on it and its workers); what was left, as a report."""
    rng = random.Random(seed)
    remote = [] if cluster is None else ["--broker", cluster.url, "--lease", str(LEASE_SECONDS)]
    targets = ["bot"] if cluster is None else ["bot", *WORKERS]
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    plan = make_plan(users, jobs, poison=poison)
    (folder / "plan.json").write_text(json.dumps(plan))
    # the migration can only be hit at the first start, a submission only early; the others somewhere in the
    # first half, while there is still work to write and record
    schedule = ["random"] * kills
    for aim in aims:
        if aim not in ("migration", "submit"):
            schedule.insert(rng.randrange(len(schedule) // 2 + 1), aim)
    schedule = [aim for aim in ("migration", "submit") if aim in aims] + schedule

    victim: Victim | None = None
    done_kills = 0
    for what in schedule:
        if victim is not None and what != "random":  # an aim is set at the start: stop this one first (SIGTERM)
            victim.process.send_signal(signal.SIGTERM)
            await victim.stop()
            victim = None
        if victim is None:
            victim = await Victim.start(folder, "" if what == "random" else what, remote)
        if what == "random":
            await asyncio.sleep(rng.uniform(0.0, 2.5))  # start-up, migration and reconciliation included
            target = rng.choice(targets)
            if cluster is not None and target != "bot":  # a GPU worker, wherever it is (even loading)
                await asyncio.to_thread(cluster.kill, target)
                cluster.start_worker(target, wait=False)
                done_kills += 1
                continue
            child = victim.worker_pid()
            if child is not None and rng.random() < 0.5:  # the bot alone: its supervisor starts it again
                os.kill(child, signal.SIGKILL)
                done_kills += 1
                continue
        elif not await victim.wait_for_line(f"aim {what}", 60):
            raise AssertionError(f"the worker never reached the aimed point {what!r}")
        victim.process.send_signal(signal.SIGKILL)  # the supervisor: the worker dies with it
        await victim.stop()
        victim, done_kills = None, done_kills + 1

    if victim is None:
        victim = await Victim.start(folder, "", remote)
    try:
        await until_finished(folder / "bot.db", sum(s["count"] for s in plan), timeout)
    finally:
        victim.process.send_signal(signal.SIGTERM)
        await victim.stop()
    return report_of(folder, plan, done_kills, time.monotonic() - started)


async def until_finished(db_path: Path, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(db_path) as db:
            states = [state for (state,) in db.execute("SELECT state FROM jobs")]
        if len(states) == expected and all(s in ("done", "failed", "cancelled") for s in states):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"the jobs did not finish within {timeout:g} s")


def report_of(folder: Path, plan: list[dict], kills: int, seconds: float = 0.0) -> KillRunReport:
    store = folder / "images"
    with sqlite3.connect(folder / "bot.db") as db:
        jobs = db.execute("SELECT id, prompt, state, attempts, crashes FROM jobs").fetchall()
        images = db.execute("SELECT job_id, \"index\", path FROM images").fetchall()
        integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    by_job = Counter(job_id for job_id, _, _ in images)
    indexes = {job_id: sorted(index for j, index, _ in images if j == job_id) for job_id in by_job}
    files = {p.resolve() for p in store.rglob("*") if p.is_file()}
    recorded = {Path(path).resolve() for _, _, path in images}
    normal = [job for job in jobs if "poison" not in job[1]]
    poisoned = [job for job in jobs if "poison" in job[1]]
    return KillRunReport(
        jobs=sum(s["count"] for s in plan),
        done_once=sum(1 for job_id, _, state, _, _ in normal
                      if state == "done" and indexes.get(job_id) == [0, 1, 2, 3]),
        kills=kills,
        temp_files=sum(1 for p in files if p.name.endswith(".tmp")),
        orphans=len(files ^ recorded),
        unreadable=sum(1 for p in files if p.stat().st_mode & 0o777 != 0o644),
        integrity=integrity,
        attempts=Counter(attempts for _, _, state, attempts, _ in normal if state == "done"),
        poison=(poisoned[0][2], poisoned[0][4]) if poisoned else None,
        blamed=sum(crashes for *_, crashes in normal),
        seconds=seconds,
    )
