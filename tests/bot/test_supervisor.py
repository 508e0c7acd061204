"""The supervisor restarts the bot and tells it how its last run ended: what decides blame."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bot.supervisor import PreviousExit, classify

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(("returncode", "outcome"), [
    (0, None), (2, None),  # a clean stop, or a usage error that a restart would not fix
    (-signal.SIGKILL, PreviousExit.KILLED), (-signal.SIGTERM, PreviousExit.KILLED),
    (1, PreviousExit.CRASHED), (3, PreviousExit.CRASHED), (69, PreviousExit.CRASHED),
    (-signal.SIGSEGV, PreviousExit.CRASHED), (-signal.SIGABRT, PreviousExit.CRASHED),
])
def test_how_an_exit_is_read(returncode, outcome):
    assert classify(returncode) is outcome


def supervised(tmp_path: Path, script: str, timeout: float = 60) -> list[str]:
    """Run `script` under the supervisor; each run appends the --previous-exit it was given to runs.txt."""
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(script))
    code = ("import sys; from bot.supervisor import supervise; "
            f"sys.exit(supervise([sys.executable, {str(child)!r}], max_delay=0.01))")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=timeout, check=True)
    return (tmp_path / "runs.txt").read_text().split()


def test_a_crash_is_told_to_the_next_run_but_a_crash_before_the_queue_is_up_changes_nothing(tmp_path):
    runs = supervised(tmp_path, f"""
        import os, pathlib, signal, sys
        previous, started = sys.argv[sys.argv.index("--previous-exit") + 1], sys.argv[-1]
        runs = pathlib.Path({str(tmp_path / 'runs.txt')!r})
        runs.write_text(runs.read_text() + previous + " " if runs.exists() else previous + " ")
        count = len(runs.read_text().split())
        if count == 1:
            pathlib.Path(started).touch(); os.kill(os.getpid(), signal.SIGKILL)  # killed while running jobs
        if count == 2:
            pathlib.Path(started).touch(); os._exit(3)  # a job brought it down
        if count == 3:
            sys.exit(1)  # could not start (no network, a missing model): ran no job
        sys.exit(0)
    """)
    assert runs == ["killed", "killed", "crashed", "crashed"]
