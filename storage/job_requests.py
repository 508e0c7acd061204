"""What a job row holds so that it can run, and the jobs that are made from other jobs.

A job's `request` is `GenerationRequest.to_dict()`; jobs that start from a picture add
an `options` entry (which picture of the parent, how strongly to vary it, which
upscale). Seeds are chosen here, when the job is written, so that a job run again after
a restart makes the same pictures. The engine side reads these back in `bot/work.py`.

Every job made from another keeps what that one was made from: the pictures in
`options["inputs"]` (an image prompt's, kept in the same order as the request's
`image_urls`, or a blend's), so 🔄 on a blend blends the same pictures again and a
variation of an image-prompt grid still has the pictures its prompt names.
"""

from __future__ import annotations

import secrets
from dataclasses import replace
from typing import Any

from .models import Job, JobKind
from .repository import NewJob

SEED_RANGE = 2**32
# kinds that start from one picture of their parent (options["source_index"])
FROM_A_PICTURE = frozenset({JobKind.VARIATION, JobKind.UPSCALE, JobKind.ZOOM, JobKind.PAN, JobKind.SQUARE,
                            JobKind.REGION})


class SourceGone(ValueError):
    """The job a follow-up would start from no longer exists."""


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


def from_picture(parent: Job, index: int, **options: Any) -> dict[str, Any]:
    """The request of a job made from picture `index` of `parent`: the parent's request and
    the pictures it was made from, with this job's own options."""
    carried = {"inputs": job_options(parent)["inputs"]} if "inputs" in job_options(parent) else {}
    return request_without_options(parent.request) | {"options": carried | {"source_index": index} | options}


def zoom_job(parent: Job, index: int, factor: float) -> NewJob:
    """Zoom Out 2×, 1.5× or a custom factor (1–2) of picture `index` of the parent."""
    return NewJob(JobKind.ZOOM, from_picture(parent, index, factor=factor), prompt=parent.prompt, seed=new_seed(),
                  parent_id=parent.id)


def pan_job(parent: Job, index: int, direction: str) -> NewJob:
    """⬅ ➡ ⬆ ⬇: picture `index` of the parent, extended in `direction`."""
    return NewJob(JobKind.PAN, from_picture(parent, index, direction=direction), prompt=parent.prompt,
                  seed=new_seed(), parent_id=parent.id)


def square_job(parent: Job, index: int) -> NewJob:
    """Make Square: a non-square picture `index` of the parent, grown to a square."""
    return NewJob(JobKind.SQUARE, from_picture(parent, index), prompt=parent.prompt, seed=new_seed(),
                  parent_id=parent.id)


def region_job(parent: Job, index: int, box: tuple[float, float, float, float]) -> NewJob:
    """Vary (Region): `box` (fractions left, top, right, bottom) of picture `index` painted again
    (a new prompt comes with `remix`)."""
    return NewJob(JobKind.REGION, from_picture(parent, index, box=list(box)), prompt=parent.prompt,
                  seed=new_seed(), parent_id=parent.id)


def variation_job(parent: Job, index: int, variability: str) -> NewJob:
    """V1–V4 and Vary (Subtle / Strong): picture `index` (0-based) of the parent, varied."""
    return NewJob(JobKind.VARIATION, from_picture(parent, index, variability=variability), prompt=parent.prompt,
                  seed=new_seed(), parent_id=parent.id)


def upscale_job(parent: Job, index: int, mode: str) -> NewJob:
    """Upscale (Subtle / Creative) of picture `index` of the parent, with that picture's seed.
    `parent` must have its images loaded (`get_job`)."""
    return NewJob(JobKind.UPSCALE, from_picture(parent, index, upscale_mode=mode), prompt=parent.prompt,
                  seed=parent.images[index].seed, parent_id=parent.id)


def reroll_job(parent: Job) -> NewJob:
    """🔄: the parent made again with a new seed, from what it was made from: its image
    prompts, a blend's pictures, or the picture a variation, zoom, pan... started from
    (so the new job's parent is that picture's job). SourceGone when that job was deleted."""
    if parent.kind in (JobKind.IMAGINE, JobKind.REROLL):
        return NewJob(JobKind.REROLL, parent.request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)
    if parent.kind == JobKind.BLEND:
        return NewJob(JobKind.BLEND, parent.request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.id)
    if parent.parent_id is None:
        raise SourceGone(f"the picture job {parent.id} was made from is gone")
    return NewJob(parent.kind, parent.request, prompt=parent.prompt, seed=new_seed(), parent_id=parent.parent_id)


def remix(job: NewJob, request: dict[str, Any], prompt: str) -> NewJob:
    """The same job with the prompt the user edited (Remix, Vary (Region)), its options kept.

    The edited prompt may keep or drop the job's image links (it may not add new ones:
    the caller checks); the kept pictures follow the links it keeps."""
    options = dict(job.request.get("options", {}))
    old_urls = list(job.request.get("image_urls", ()))
    if old_urls and "inputs" in options:  # an image prompt's pictures, one per link
        by_url = dict(zip(old_urls, options.pop("inputs"), strict=False))
        if kept := [by_url[url] for url in request.get("image_urls", ())]:
            options["inputs"] = kept
    return replace(job, request=request | ({"options": options} if options else {}), prompt=prompt)


def request_without_options(request: dict[str, Any]) -> dict[str, Any]:
    """The GenerationRequest part of a stored request."""
    return {key: value for key, value in request.items() if key != "options"}


def job_options(job: Job) -> dict[str, Any]:
    return dict(job.request.get("options", {}))
