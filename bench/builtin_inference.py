"""Inference time of the built-in model: a grid of 4 at native size (64x64), 20 steps.

    .venv/bin/python bench/builtin_inference.py [--runs 5] [--steps 20]

Prints the median wall time of a batch of 4 and of 4 single calls, side by side,
with a plain diffusers pipeline (the figure the model card quotes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from diffusers import StableDiffusionPipeline

from generation.builtin import MODEL_DIR

PROMPT = "a red circle on a white background"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    pipe = StableDiffusionPipeline.from_pretrained(MODEL_DIR, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)

    def batch() -> None:
        pipe([PROMPT] * 4, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(0))

    def singles() -> None:
        for seed in range(4):
            pipe(PROMPT, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(seed))

    batch(), singles()  # warm-up
    batch_times = [timed(batch) for _ in range(args.runs)]
    single_times = [timed(singles) for _ in range(args.runs)]
    b, s = statistics.median(batch_times), statistics.median(single_times)
    print(f"torch threads: {torch.get_num_threads()}, steps: {args.steps}, runs: {args.runs}")
    print(f"grid of 4 as one batch: {b:.3f} s (median)")
    print(f"4 single calls:         {s:.3f} s (median)")
    print(f"batch / singles:        {b / s:.2f}")


if __name__ == "__main__":
    main()
