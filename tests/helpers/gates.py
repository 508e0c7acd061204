"""Jobs held at their start until a test (or a script) lets them go: a queue that fills up
meanwhile, a page that is up before its job moves."""

from __future__ import annotations

import threading
from typing import Any


def hold_jobs_at_start(runner: Any, *, opened: bool = False, timeout: float = 120.0) -> threading.Event:
    """Wrap `runner.make_work` (bot/jobs.py) so that each job waits, in the executor's thread, for
    the returned event (set: the jobs run at once; cleared: they wait, at most `timeout` seconds)."""
    gate = threading.Event()
    if opened:
        gate.set()
    make_work = runner.make_work

    def held(job):
        work = make_work(job)

        def run(report, token):
            gate.wait(timeout=timeout)
            return work(report, token)
        return run
    runner.make_work = held
    return gate
