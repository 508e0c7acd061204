"""bench/memory_bench.py --tiny in the suite: the SDXL memory run's every path on a tiny SDXL, so it cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_tiny_run_makes_the_grid_with_and_without_slicing_and_prints_peak_and_estimate() -> None:
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "memory_bench.py"), "--tiny"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    for setting in ("on", "off"):
        line = re.search(rf"^VAE slicing {setting}: (.*)$", run.stdout, re.MULTILINE)
        assert line, run.stdout
        figures = re.fullmatch(r"4 pictures of 64×64 in \d+ s, peak ([\d.]+) GiB; estimate ([\d.]+) GiB, "
                               r"budget ([\d.]+) GiB", line.group(1))
        assert figures, line.group(1)
        peak, _, budget = map(float, figures.groups())
        assert 0 < peak < budget
