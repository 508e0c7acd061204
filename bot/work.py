"""Stored jobs to engine work: what the executor runs for each job kind.

The job row says what to make (`storage/job_requests.py` writes it); this module reads
it back into the engine's job types. Everything heavy (reading the source picture,
loading the model, denoising) happens in the executor's thread, never on the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from PIL import Image

from bot.jobs import UnsupportedJob, WorkFactory
from bot.remote import RemoteWork
from generation.engine import Blend, Engine, EngineJob, Imagine, Outpaint, Repaint, Upscale, Vary, resolve_version
from generation.executor import CancelToken, Progress, Work
from generation.prompt import GenerationRequest
from generation.results import GenerationResult
from generation.safety import SafetyChecker
from generation.wire import job_to_wire
from storage.images import ImageStore
from storage.job_requests import FROM_A_PICTURE, job_options, request_without_options
from storage.models import Job, JobKind

log = logging.getLogger(__name__)

PictureReader = Callable[[int, int], Image.Image]  # (parent job id, index) -> a stored picture
InputReader = Callable[[str], Image.Image]  # a kept input's name -> the picture


def engine_job_for(job: Job, open_source: PictureReader, open_input: InputReader) -> EngineJob:
    """The engine's job for a stored one (the pictures it starts from read through the readers)."""
    if job.seed is None:
        raise UnsupportedJob(f"job {job.id} has no seed")
    request = GenerationRequest.from_dict(request_without_options(job.request))
    options = job_options(job)
    if job.kind in (JobKind.IMAGINE, JobKind.REROLL):
        return Imagine(request, job.seed, images=tuple(open_input(name) for name in options.get("inputs", ())))
    if job.kind == JobKind.BLEND:
        return Blend(request, tuple(open_input(name) for name in options.get("inputs", ())), job.seed)
    if job.kind not in FROM_A_PICTURE:
        raise UnsupportedJob(f"{job.kind.value} jobs are not available on this bot")
    # A job made from a picture starts from that picture, which its image prompts already
    # shaped: their links stay in its prompt (and its inputs, for 🔄) but are not applied twice.
    request = replace(request, image_urls=())
    if job.parent_id is None or "source_index" not in options:
        raise UnsupportedJob(f"job {job.id} names no picture to start from")
    source = open_source(job.parent_id, int(options["source_index"]))
    match job.kind:
        case JobKind.VARIATION:
            return Vary(request, source, job.seed, variability=options.get("variability", "strong"))
        case JobKind.UPSCALE:
            return Upscale(request, source, job.seed, mode=options.get("upscale_mode", "subtle"))
        case JobKind.ZOOM:
            return Outpaint(request, source, job.seed, kind="zoom", factor=float(options.get("factor", 2.0)))
        case JobKind.PAN:
            return Outpaint(request, source, job.seed, kind="pan", direction=options.get("direction", "right"))
        case JobKind.SQUARE:
            return Outpaint(request, source, job.seed, kind="square")
        case JobKind.REGION:
            return Repaint(request, source, job.seed, box=tuple(options["box"]))
    raise UnsupportedJob(f"{job.kind.value} jobs are not available on this bot")


def checked_previews(report: Callable[[Progress], None], checker: SafetyChecker) -> Callable[[Progress], None]:
    """Progress reports whose previews the checker has seen (a flagged one is not shown where
    NSFW may not be: the final pictures are not the only ones a channel sees)."""
    def checked(progress: Progress) -> None:
        if progress.preview is not None:
            progress = replace(progress, flagged=flags_or_all(checker, [progress.preview])[0])
        report(progress)
    return checked


def flags_or_all(checker: SafetyChecker, images: list[Image.Image]) -> list[bool]:
    """The checker's verdict; a checker that fails flags everything (logged): it fails closed."""
    try:
        return checker.flags(images)
    except Exception:
        log.exception("the safety checker failed; the pictures count as flagged")
        return [True] * len(images)


def model_of_request(engine: Engine) -> Callable[[dict], str | None]:
    """The model version a stored job's request runs on (for the scheduler's preference), or None."""
    def model_of(request: dict) -> str | None:
        try:
            return resolve_version(GenerationRequest.from_dict(request_without_options(request)), engine.catalog).name
        except (KeyError, TypeError, ValueError):  # a request this configuration no longer knows
            return None
    return model_of


def store_readers(store: ImageStore) -> tuple[PictureReader, InputReader]:
    """How a job's starting pictures are read from the image store (blocking: off the event loop)."""
    def open_source(parent_id: int, index: int) -> Image.Image:
        path = store.path_for(parent_id, index)
        if not path.exists():
            raise UnsupportedJob(f"the picture this job starts from (job {parent_id}, image {index + 1}) is gone")
        return store.open(path).convert("RGB")

    def open_input(name: str) -> Image.Image:
        path = store.input_path(name)
        if not path.exists():
            raise UnsupportedJob("a picture this job starts from is gone from the image store")
        return store.open(path).convert("RGB")

    return open_source, open_input


def engine_work(engine: Engine, store: ImageStore, checker: SafetyChecker | None = None) -> WorkFactory:
    """The JobRunner's WorkFactory on the real engine; with a safety checker, the finished
    pictures are checked in the same thread (their flags go with the result)."""
    open_source, open_input = store_readers(store)

    def make_work(job: Job) -> Work[GenerationResult]:
        def work(report: Callable[[Progress], None], token: CancelToken) -> GenerationResult:
            if checker is not None:
                report = checked_previews(report, checker)
            result = engine.run(engine_job_for(job, open_source, open_input), report, token)
            if checker is not None:
                result = replace(result, flagged=tuple(flags_or_all(checker, list(result.images))))
            return result
        return work

    return make_work


def remote_work(store: ImageStore, model_of: Callable[[dict], str | None]) -> WorkFactory:
    """The JobRunner's WorkFactory for GPU workers (bot/remote.py): the job as plain data, its
    pictures read from the store when it is sent; the workers check the pictures they make."""
    open_source, open_input = store_readers(store)

    def make_work(job: Job) -> RemoteWork:
        def message(attempt: int) -> dict[str, Any]:
            return job_to_wire(job.id, attempt, engine_job_for(job, open_source, open_input))
        return RemoteWork(model_of(job.request), message)

    return make_work
