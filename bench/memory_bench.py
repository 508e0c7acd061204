"""An SDXL-size grid of 4 at 1024² through the engine on this machine's CPU: does it fit, and at what peak.

    .venv/bin/python bench/memory_bench.py [--steps 2] [--family sdxl] [--dtype float32]

The pipeline is built from SDXL's configs with random weights (bench/gpu_bench.py's
builder: the memory is what real weights take) and saved to a temporary folder ($TMPDIR
chooses the disk; about 14 GB in float32). Then, for each VAE setting (slicing on, the
default; slicing off), a fresh process makes the grid the way the bot does
(`Engine(catalog, "cpu", dtype).run(Imagine(...))`, previews on) and prints its own peak
(`ru_maxrss`: loading the weights, the UNet's steps and the decode, nothing of the
build), the engine's estimate for the job, and the budget it is checked against (this
machine's RAM). A setting whose estimate is over the budget is refused by the engine
with its message, as the bot would refuse it, and is printed as such instead of being
run into the out-of-memory killer. This is the measurement of issue 23: the grid that
was killed at 22 GB (four 1024² pictures decoded in one batch) now completes.

The steps do not change the peak (every step has the same shapes); two keep the run
near 15 minutes on two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", default="sdxl", choices=("sdxl", "sd15"))
    parser.add_argument("--dtype", default="float32", help="float32 (a CPU's), bfloat16")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="tiny models (a check of the script, seconds)")
    parser.add_argument("--run-grid", type=Path, help=argparse.SUPPRESS)  # the child: the saved folder
    parser.add_argument("--vae-slicing", choices=("on", "off"), default="on", help=argparse.SUPPRESS)
    return parser.parse_args()


def build_and_save(args: argparse.Namespace, folder: Path) -> None:
    import torch
    from gpu_bench import build_pipeline, dtype_name

    started = time.perf_counter()
    pipe = build_pipeline(args.family, args.tiny, torch.device("cpu"), getattr(torch, args.dtype))
    pipe.save_pretrained(folder, safe_serialization=True)
    print(f"built {args.family}{' (tiny)' if args.tiny else ''} in {dtype_name(pipe.unet.dtype)} and saved to "
          f"{folder} in {time.perf_counter() - started:.0f} s", flush=True)


def run_grid(args: argparse.Namespace) -> dict:
    """In the child process: one grid through the engine, its peak and the estimate."""
    import torch
    from gpu_bench import VERSION, grid_request

    from generation.catalog import ModelCatalog, ModelVersion
    from generation.engine import Engine, Imagine, plan_generation
    from generation.memory import JobTooLarge, MemorySettings, device_memory_bytes

    memory = MemorySettings(vae_slicing=args.vae_slicing == "on")
    catalog = ModelCatalog(versions={VERSION: ModelVersion(VERSION, str(args.run_grid), family=args.family,
                                                           dtype=args.dtype)},
                           default_version=VERSION, lora_dir=args.run_grid / "loras", memory=memory)
    engine = Engine(catalog, device="cpu", dtype=getattr(torch, args.dtype))
    request = grid_request(catalog, args.steps)
    figures = {"vae_slicing": args.vae_slicing, "budget_bytes": device_memory_bytes(torch.device("cpu"))}
    started = time.perf_counter()
    try:
        result = engine.run(Imagine(request, seed=1))
    except JobTooLarge as refusal:
        figures["refused"] = str(refusal)
    else:
        figures["size"] = list(result.images[0].size)
        figures["images"] = len(result.images)
    figures["seconds"] = time.perf_counter() - started
    figures["peak_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    model = engine.model(VERSION)
    budget = MemorySettings(vae_slicing=memory.vae_slicing, budget_gib=1e6)  # only the estimate, never refused
    engine.memory = budget
    figures["estimate_bytes"] = engine.check_fits(model, plan_generation(request, catalog, model), 4)
    return figures


def main() -> None:
    args = parse_args()
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    if args.run_grid:
        print(json.dumps(run_grid(args)), flush=True)
        return
    with tempfile.TemporaryDirectory(prefix="memory_bench-") as folder:
        build_and_save(args, Path(folder))
        for slicing in ("on", "off"):
            started = time.perf_counter()
            child = subprocess.run([sys.executable, __file__, "--run-grid", folder, "--vae-slicing", slicing,
                                    "--family", args.family, "--dtype", args.dtype, "--steps", str(args.steps)]
                                   + (["--tiny"] if args.tiny else []),
                                   capture_output=True, text=True, cwd=ROOT)
            if child.returncode != 0:
                print(f"VAE slicing {slicing}: the grid process exited with {child.returncode} after "
                      f"{time.perf_counter() - started:.0f} s\n{child.stderr[-2000:]}", flush=True)
                continue
            figures = json.loads(child.stdout.strip().splitlines()[-1])
            what = (f"refused: {figures['refused']}" if "refused" in figures else
                    f"{figures['images']} pictures of {figures['size'][0]}×{figures['size'][1]} in "
                    f"{figures['seconds']:.0f} s, peak {figures['peak_bytes'] / GIB:.1f} GiB")
            print(f"VAE slicing {slicing}: {what}; estimate {figures['estimate_bytes'] / GIB:.1f} GiB, "
                  f"budget {figures['budget_bytes'] / GIB:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
