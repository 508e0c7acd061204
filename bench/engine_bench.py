"""The engine against bare diffusers, side by side in one run, on the built-in model.

    .venv/bin/python bench/engine_bench.py [--steps 20] [--rounds 5]

Prints:
- engine overhead: `Engine.run(Imagine)` (without previews, then with) vs the bare `pipe(prompt, ...)` call with the
  same settings (grid of 4, same steps, guidance, scheduler), median of the rounds,
  alternating so both see the same machine state (goal: ≤ 5 %);
- a grid of 4 as one batch vs 4 single-image calls through the engine;
- peak RSS of a process that loads the text-to-image pipeline alone and makes a grid,
  vs one that loads the engine's three pipelines (from_pipe) and runs txt2img,
  img2img and inpaint (goal: ≤ +5 %), each in a fresh subprocess.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "a red circle on a white background"


def _catalog():
    from generation.builtin import LORA_DIR
    from generation.catalog import ModelCatalog, ModelVersion

    return ModelCatalog(versions={"builtin": ModelVersion("builtin", "builtin")}, default_version="builtin",
                        lora_dir=LORA_DIR)


def time_engine_vs_bare(steps: int, rounds: int) -> dict[str, float]:
    import torch
    from diffusers import StableDiffusionPipeline

    from generation.builtin import MODEL_DIR
    from generation.engine import Engine, Imagine
    from generation.prompt import parse_prompt

    bare = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                   requires_safety_checker=False)
    bare.set_progress_bar_config(disable=True)
    engine = Engine(_catalog())
    quiet = Engine(_catalog(), preview_every=0)  # no preview images: exactly the bare call's work
    (request,) = parse_prompt(f"{PROMPT} --steps {steps}")
    cfg = engine.model("builtin").default_cfg

    def run_bare() -> None:
        generators = [torch.Generator().manual_seed(s) for s in range(4)]
        bare([PROMPT] * 4, negative_prompt=[""] * 4, num_inference_steps=steps, guidance_scale=cfg,
             generator=generators)

    def run_engine(count: int = 4) -> None:
        engine.run(Imagine(request, seed=0, count=count))

    def run_quiet() -> None:
        quiet.run(Imagine(request, seed=0))

    def run_singles() -> None:
        for _ in range(4):
            run_engine(count=1)

    calls = {"bare": run_bare, "quiet": run_quiet, "engine": run_engine, "singles": run_singles}
    for warm in calls.values():
        warm()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def _peak_rss_child(mode: str) -> None:
    """Run in a subprocess: load and generate, print the peak RSS in MiB."""
    import resource

    from PIL import Image

    from generation.engine import Engine, Imagine, Vary
    from generation.prompt import parse_prompt

    (request,) = parse_prompt(f"{PROMPT} --steps 4")
    if mode == "txt2img":
        from diffusers import StableDiffusionPipeline

        from generation.builtin import MODEL_DIR

        pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True, safety_checker=None,
                                                       requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        pipe([PROMPT] * 4, num_inference_steps=4)
    else:
        engine = Engine(_catalog())
        grid = engine.run(Imagine(request, seed=0))
        engine.run(Vary(request, grid.images[0], seed=1))
        model = engine.model("builtin")
        mask = Image.new("L", grid.images[0].size, 0)
        mask.paste(255, (16, 16, 48, 48))
        model.inpaint.set_progress_bar_config(disable=True)
        model.inpaint(PROMPT, image=grid.images[0], mask_image=mask, num_inference_steps=4)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_rss(mode: str) -> float:
    output = subprocess.run([sys.executable, __file__, "--child", mode], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_rss_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=("txt2img", "engine"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.child:
        _peak_rss_child(args.child)
        return
    import torch

    print(f"built-in model, 64x64, {args.steps} steps, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, median of {args.rounds}")
    times = time_engine_vs_bare(args.steps, args.rounds)
    print(f"bare diffusers, grid of 4:    {times['bare']:.3f} s")
    print(f"engine, grid of 4, no previews: {times['quiet']:.3f} s  "
          f"(overhead {100 * (times['quiet'] / times['bare'] - 1):+.1f} %, goal <= 5 %)")
    print(f"engine, grid of 4, previews every 5 steps: {times['engine']:.3f} s  "
          f"({100 * (times['engine'] / times['bare'] - 1):+.1f} %)")
    print(f"engine, 4 single images:      {times['singles']:.3f} s  "
          f"(batch / singles = {times['engine'] / times['singles']:.2f})")
    alone, shared = peak_rss("txt2img"), peak_rss("engine")
    print(f"peak RSS, txt2img pipeline alone:           {alone:.0f} MiB")
    print(f"peak RSS, engine txt2img + img2img + inpaint: {shared:.0f} MiB  "
          f"({100 * (shared / alone - 1):+.1f} %, goal <= +5 %)")


if __name__ == "__main__":
    main()
