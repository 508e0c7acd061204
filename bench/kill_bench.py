"""Kill -9 benchmark: what 20 SIGKILLs at random moments cost a run of 50 jobs, over several seeds.

    .venv/bin/python bench/kill_bench.py [--seeds 1 2 3] [--kills 20] [--jobs 50] [--users 5]

Each seed is one run of tests/helpers/kill_run.py: 50 jobs of 5 users plus a job that
crashes the bot every time, under `python -m bot.supervisor`, SIGKILLed `--kills` times at
random moments plus 4 times aimed at the first migration, a submission, a picture's write
and a record, then run to the end. Printed per seed: jobs done exactly once out of 50, kills,
orphan and temp files left in the store, files not 0644, SQLite's integrity check, the
poison job's end and crashes, crashes blamed on innocent jobs, the histogram of how many
times each done job was started, and the run's wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from helpers.kill_run import kill_run  # noqa: E402


async def main(seeds: list[int], kills: int, jobs: int, users: int) -> None:
    total: Counter[int] = Counter()
    perfect = 0
    for seed in seeds:
        with tempfile.TemporaryDirectory() as folder:
            report = await kill_run(Path(folder) / "run", seed=seed, kills=kills, users=users, jobs=jobs)
        total.update(report.attempts)
        clean = (report.done_once == jobs and report.poison == ("failed", 3) and report.blamed == 0
                 and not (report.temp_files or report.orphans or report.unreadable) and report.integrity == "ok")
        perfect += clean
        histogram = ", ".join(f"{n}x: {count}" for n, count in sorted(report.attempts.items()))
        print(f"seed {seed}: {report.done_once}/{jobs} done exactly once, {report.kills} kills, "
              f"{report.orphans} orphans, {report.temp_files} temp files, {report.unreadable} files not 0644, "
              f"integrity {report.integrity}; poison job {report.poison[0] if report.poison else '-'} after "
              f"{report.poison[1] if report.poison else 0} crashes, {report.blamed} crashes blamed on others; "
              f"starts per job {histogram}; {report.seconds:.0f} s")
    histogram = ", ".join(f"{n}x: {count}" for n, count in sorted(total.items()))
    print(f"{perfect} of {len(seeds)} runs lost nothing and blamed no innocent job; starts per done job over all "
          f"runs: {histogram}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--users", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.seeds, args.kills, args.jobs, args.users))
