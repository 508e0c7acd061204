"""What a job row holds so that it can run, and the jobs that are made from other jobs.

A job's `request` is `GenerationRequest.to_dict()`; jobs that start from a picture add
an `options` entry (which picture of the parent, how strongly to vary it, which
upscale). Seeds are chosen here, when the job is written, so that a job run again after
a restart makes the same pictures. The engine side reads these back in `bot/work.py`.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from .models import Job, JobKind
from .repository import NewJob

SEED_RANGE = 2**32


def new_seed() -> int:
    return secrets.randbelow(SEED_RANGE)


def imagine_job(request: dict[str, Any], prompt: str, seed: int | None = None,
                inputs: list[str] | None = None) -> NewJob:
    """`/imagine`: the prompt's --seed when it has one, else a fresh seed. `inputs` are the
    image prompts, kept in the image store (`ImageStore.save_input`) before the job is written."""
    if inputs:
        request = request | {"options": {"inputs": list(inputs)}}
    return NewJob(JobKind.IMAGINE, request, prompt=prompt, seed=new_seed() if seed is None else seed)


def blend_job(request: dict[str, Any], prompt: str, inputs: list[str]) -> NewJob:
    """/blend: 2–5 kept pictures; the request's --ar is the dimensions choice."""
    return NewJob(JobKind.BLEND, request | {"options": {"inputs": list(inputs)}}, prompt=prompt, seed=new_seed())


def zoom_job(parent: Job, index: int, factor: float) -> NewJob:
    """Zoom Out 2×, 1.5× or a custom factor (1–2) of picture `index` of the parent."""
    request = request_without_options(parent.request) | {"options": {"source_index": index, "factor": factor}}
    return NewJob(JobKind.ZOOM, request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)


def pan_job(parent: Job, index: int, direction: str) -> NewJob:
    """⬅ ➡ ⬆ ⬇: picture `index` of the parent, extended in `direction`."""
    request = request_without_options(parent.request) | {"options": {"source_index": index, "direction": direction}}
    return NewJob(JobKind.PAN, request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)


def square_job(parent: Job, index: int) -> NewJob:
    """Make Square: a non-square picture `index` of the parent, grown to a square."""
    request = request_without_options(parent.request) | {"options": {"source_index": index}}
    return NewJob(JobKind.SQUARE, request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)


def region_job(parent: Job, index: int, box: tuple[float, float, float, float],
               request: dict[str, Any] | None = None, prompt: str | None = None) -> NewJob:
    """Vary (Region): `box` (fractions left, top, right, bottom) of picture `index` painted again,
    with a new prompt when one is given."""
    base = request_without_options(request if request is not None else parent.request)
    request = base | {"options": {"source_index": index, "box": list(box)}}
    return NewJob(JobKind.REGION, request, prompt=prompt or parent.prompt, seed=new_seed(), parent_id=parent.id)


def reroll_job(parent: Job) -> NewJob:
    """🔄: the parent's request with a new seed."""
    return NewJob(JobKind.REROLL, request_without_options(parent.request), prompt=parent.prompt, seed=new_seed(),
                  parent_id=parent.id)


def variation_job(parent: Job, index: int, variability: str) -> NewJob:
    """V1–V4 and Vary (Subtle / Strong): picture `index` (0-based) of the parent, varied."""
    request = request_without_options(parent.request) | {
        "options": {"source_index": index, "variability": variability}}
    return NewJob(JobKind.VARIATION, request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)


def upscale_job(parent: Job, index: int, mode: str) -> NewJob:
    """Upscale (Subtle / Creative) of picture `index` of the parent, with that picture's seed.
    `parent` must have its images loaded (`get_job`)."""
    request = request_without_options(parent.request) | {"options": {"source_index": index, "upscale_mode": mode}}
    return NewJob(JobKind.UPSCALE, request, prompt=parent.prompt, seed=parent.images[index].seed,
                  parent_id=parent.id)


def remix(job: NewJob, request: dict[str, Any], prompt: str) -> NewJob:
    """The same job with the prompt the user edited in the Remix form (its options kept)."""
    options = job.request.get("options")
    return replace(job, request=request | ({"options": options} if options else {}), prompt=prompt)


def request_without_options(request: dict[str, Any]) -> dict[str, Any]:
    """The GenerationRequest part of a stored request."""
    return {key: value for key, value in request.items() if key != "options"}


def job_options(job: Job) -> dict[str, Any]:
    return dict(job.request.get("options", {}))
