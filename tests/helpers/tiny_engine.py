"""A tiny engine for queue tests: real blocking work in steps, pictures that say which job made them.

Each image is a flat colour derived from (job id, seed), so a test can tell from the
stored files which job and seed produced them.
"""

from __future__ import annotations

import time

from PIL import Image

from generation.executor import Progress
from generation.results import GenerationResult


def colour_for(job_id: int, seed: int) -> tuple[int, int, int]:
    return (job_id * 37 % 256, seed * 53 % 256, (job_id + seed) * 11 % 256)


def make_tiny_work(steps: int = 4, seconds_per_step: float = 0.0, on_step=None):
    """A WorkFactory: for a stored job, a blocking call that makes 4 flat images."""
    def factory(job):
        seed = job.seed or 0
        job_id = job.id

        def work(report, token):
            for step in range(1, steps + 1):
                if token.cancelled:
                    return None
                time.sleep(seconds_per_step)
                if on_step is not None:
                    on_step(job_id, step)
                report(Progress(step, steps))
            images = tuple(Image.new("RGB", (16, 16), colour_for(job_id, seed + i)) for i in range(4))
            return GenerationResult(images=images, seeds=tuple(seed + i for i in range(4)),
                                    infotexts=tuple(f"job {job_id}, Seed: {seed + i}" for i in range(4)))
        return work
    return factory
