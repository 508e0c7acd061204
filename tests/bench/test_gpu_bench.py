"""bench/gpu_bench.py --smoke in the suite: the GPU bench's every path runs on tiny models, so it cannot rot
between the runs on a GPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def positive(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def test_smoke_run_writes_every_figure(tmp_path: Path) -> None:
    figures_file = tmp_path / "figures.json"
    run = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_bench.py"), "--smoke", "--json", str(figures_file)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "fastest bare s" in run.stdout  # the table
    figures = json.loads(figures_file.read_text(encoding="utf-8"))

    # the full-size configs (built on the meta device) hold exactly the published checkpoints' parameters
    for family in ("sd15", "sdxl"):
        assert figures["full_size_configs"][family]["matches_published"], figures["full_size_configs"][family]
        assert positive(figures["full_size_configs"][family]["unet_flops"])

    rows = {row["family"]: row for row in figures["rows"]}
    assert set(rows) == {"sd15", "sdxl"}
    for family, row in rows.items():
        assert row["dtype"] == "float32", family
        for name in ("engine_grid_s", "bare_fastest_s", "overhead_ratio", "unet_flops", "unet_calls_per_s",
                     "preview_grid_s", "first_job_s"):
            assert positive(row[name]), (family, name, row[name])
        bare = row["bare_grid_s"]
        assert bare and all(positive(seconds) for seconds in bare.values()), (family, bare)
        assert row["unet_mfu_pct"] is None and row["mfu_note"], (family, row["unet_mfu_pct"], row["mfu_note"])
        assert positive(row["peak_bytes"]["engine"]) and positive(row["estimate_bytes"]["engine"]), family
        assert set(row["peak_bytes"]) == set(row["estimate_bytes"]), family
        # a difference of two timings of a tiny model on a shared CPU: its sign is noise, not a figure
        assert math.isfinite(row["preview_cost_pct"]), family
        assert row["compile_note"].startswith("skipped"), family
