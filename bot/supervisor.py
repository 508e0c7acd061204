"""Keeps the bot running, and knows why it stopped: the difference between a job that crashes
the process and a machine that kills it.

`python -m bot run` is this small parent process; the bot itself (`python -m bot serve`)
is its child. Seen from inside, a process killed with SIGKILL and one that a job brought
down (`os._exit` deep in native code, a segfault) look the same: the next start finds the
job `running`. Seen from the parent they differ, and the parent tells the next child:

- the child exited 0 (a clean stop), or with `EXIT_USAGE` (a refused token, a bad config): stop;
- it was killed by SIGKILL, SIGTERM, SIGINT or SIGHUP: that came from outside, and the job
  it was running is not to blame (`--previous-exit killed`);
- any other exit code or signal (SIGSEGV, SIGABRT…): the process crashed while running its
  job, which is blamed (`--previous-exit crashed`) and given up after a few crashes.

The child is started again at once after a kill; after a crash within `healthy_seconds` of
its start it waits twice as long as the last time (1 s, 2 s, … up to `max_delay`).

The child touches `--started-file` once its job queue is rebuilt. A child that dies before
that ran no job, so the next child is told what this one was told: a bot that cannot start
(no network: exit 69; a missing model) never has a job blamed for it.

A new supervisor starts its first child with `killed`: whatever ended the last one came from
outside (a crash would have been seen by that supervisor, which a job cannot bring down).
The child dies with its parent (Linux's parent-death signal), so killing the supervisor
never leaves an orphaned bot running.

    python -m bot.supervisor COMMAND...    (runs COMMAND --previous-exit X, as `run` does)
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

EXIT_USAGE = 2  # the child's way of saying "restarting will not help" (see bot/cli.py)
OUTSIDE_SIGNALS = frozenset({signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
PR_SET_PDEATHSIG = 1


class PreviousExit(enum.StrEnum):
    """How the last process running the job queue ended, as its next start is told."""

    CRASHED = "crashed"  # its running job is blamed
    KILLED = "killed"  # from outside: nobody is blamed
    UNKNOWN = "unknown"  # not supervised: blamed, so a job that crashes every time is still given up


def classify(returncode: int) -> PreviousExit | None:
    """None for an exit that should not be restarted (clean, or a usage error)."""
    if returncode in (0, EXIT_USAGE):
        return None
    if returncode < 0 and -returncode in OUTSIDE_SIGNALS:
        return PreviousExit.KILLED
    return PreviousExit.CRASHED


def _die_with(parent: int) -> Callable[[], None]:
    """What the child runs before it starts: SIGKILL it when the supervisor dies (Linux only)."""
    def arm() -> None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux: the child outlives a killed supervisor
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the supervisor died before the signal was armed
            os._exit(1)
    return arm


def supervise(command: Sequence[str], *, healthy_seconds: float = 30.0, max_delay: float = 60.0,
              stop_grace: float = 30.0) -> int:
    """Run `command --previous-exit X --started-file F` until it stops cleanly; its exit code then.

    The child touches F once its job queue is rebuilt. A child that dies before that ran no job,
    so the next one is told what this one was told (a bot that cannot start after a kill never
    gets the job it would have run blamed)."""
    previous, delay = PreviousExit.KILLED, 0.0
    stop = threading.Event()  # an operator's stop: also ends a back-off wait at once
    child: subprocess.Popen[bytes] | None = None

    def pass_on(signum: int, _frame) -> None:  # an operator's stop goes to the bot
        stop.set()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, pass_on)
    with tempfile.TemporaryDirectory(prefix="imagine-bot-") as folder:
        marker = Path(folder) / "started"
        while not stop.is_set():
            marker.unlink(missing_ok=True)
            began = time.monotonic()
            child = subprocess.Popen([*command, "--previous-exit", previous.value, "--started-file", str(marker)],
                                     preexec_fn=_die_with(os.getpid()))
            if stop.is_set():  # the stop came while it was being started
                child.terminate()
            returncode = _wait(child, stop.is_set, stop_grace)
            outcome = classify(returncode)
            if outcome is None or stop.is_set():
                return max(returncode, 0)
            if marker.exists():  # it ran jobs: how it ended is what the next start must know
                previous = outcome
            crash_loop = outcome == PreviousExit.CRASHED and time.monotonic() - began < healthy_seconds
            delay = min(max(2 * delay, 1.0), max_delay) if crash_loop else 0.0
            log.warning("the bot stopped (%s, exit %s%s); starting it again in %.0f s", outcome.value, returncode,
                        "" if marker.exists() else ", before its queue was up", delay)
            stop.wait(delay)
    return 0


def _wait(child: subprocess.Popen[bytes], stopping: Callable[[], bool], grace: float) -> int:
    """The child's exit code; once a stop was asked for, SIGKILL after `grace` seconds."""
    asked = None
    while True:
        try:
            return child.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            if stopping():
                asked = asked or time.monotonic()
                if time.monotonic() - asked > grace:
                    child.kill()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sys.exit(supervise(sys.argv[1:]))
