"""Jobs and results as plain data, for workers on other machines (docs/scale-out.md).

A worker gets everything a job needs in one message and nothing of the process that sent
it: the engine's job (generation/engine.py's dataclasses) with its request as
`GenerationRequest.to_dict()` gives it, its pictures as PNG, the job's id and attempt.
It answers with the pictures as PNG, their seeds, infotexts, settings and timings. Both
are JSON (Celery's default serializer; the pictures in base64), versioned, and validated
on arrival with pydantic: a message of another version, a missing or extra field, a
number out of range or a picture that is not a PNG within the limits is refused with a
`WireError` before anything is decoded or run. The broker is the operator's own, but a
worker must not be the place where a malformed message becomes a crash or a bomb.

    message = job_to_wire(job_id, attempt, engine_job)   # the bot
    job_id, attempt, engine_job = job_from_wire(message)   # the worker
    reply = result_to_wire(job_id, attempt, result)        # the worker
    result = result_from_wire(reply)                       # the bot

While a job runs, its worker sends `progress_to_wire` messages (the step, and every few
steps a small WebP preview); when it ends, an outcome (`outcome_to_wire`): done with the
result, cancelled, or failed with what its owner is told.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Annotated, Any, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .engine import GRID_SIZE, PREVIEW_SIDE, Blend, EngineJob, Imagine, Outpaint, Repaint, Upscale, Vary
from .executor import Progress
from .prompt import MAX_SEED, GenerationRequest
from .results import GenerationResult

WIRE_VERSION = 1
MAX_PICTURES = 5  # /blend's most; an image prompt's pictures are fewer
MAX_PICTURE_BYTES = 64 * 1024 * 1024  # one PNG
MAX_PICTURE_PIXELS = 40_000_000  # what bot/fetch.py lets in (its `max_pixels`), and far above any result
MAX_TEXT = 20_000  # an infotext, a request's text: far above what the prompt's limits allow

MAX_PREVIEW_BYTES = 256 * 1024  # one WebP preview (they are some 5-20 KB)
MAX_ERROR = 500  # a failed job's cause, as its owner reads it

Picture = Annotated[str, Field(max_length=(MAX_PICTURE_BYTES + 2) // 3 * 4)]  # base64 of one PNG
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class WireError(ValueError):
    """A message that is not a job or a result of this version; the text says what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WireJob(_Strict):
    """One job as it travels. `type` is the engine job's class; the fields after it are that
    class's own (each type requires its own and refuses the others')."""

    version: Literal[1]
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=1, le=1_000)
    type: Literal["imagine", "vary", "upscale", "blend", "outpaint", "repaint"]
    request: dict[str, Any]
    seed: Seed
    count: int = Field(GRID_SIZE, ge=1, le=GRID_SIZE)
    pictures: list[Picture] = Field(default_factory=list, max_length=MAX_PICTURES)
    variability: Literal["subtle", "strong"] | None = None
    upscale_mode: Literal["subtle", "creative"] | None = None
    outpaint: Literal["zoom", "pan", "square"] | None = None
    factor: float | None = Field(None, ge=1.0, le=2.0)
    direction: Literal["left", "right", "up", "down"] | None = None
    box: tuple[float, float, float, float] | None = None

    @model_validator(mode="after")
    def _fields_of_its_type(self) -> WireJob:
        needs = {"imagine": set(), "blend": set(), "vary": {"variability"}, "upscale": {"upscale_mode"},
                 "outpaint": {"outpaint"}, "repaint": {"box"}}[self.type]
        optional = {"outpaint": {"factor", "direction"}}.get(self.type, set())
        given = {name for name in ("variability", "upscale_mode", "outpaint", "factor", "direction", "box")
                 if getattr(self, name) is not None}
        if needs - given or given - needs - optional:
            raise ValueError(f"a {self.type} job takes {sorted(needs | optional) or 'no extra fields'}, "
                             f"got {sorted(given)}")
        pictures = {"imagine": (0, MAX_PICTURES), "blend": (2, MAX_PICTURES)}.get(self.type, (1, 1))
        if not pictures[0] <= len(self.pictures) <= pictures[1]:
            raise ValueError(f"a {self.type} job carries {pictures[0]}–{pictures[1]} pictures, "
                             f"got {len(self.pictures)}")
        if self.box is not None and not (0 <= self.box[0] < self.box[2] <= 1 and 0 <= self.box[1] < self.box[3] <= 1):
            raise ValueError("the box is left, top, right, bottom, fractions from 0 to 1")
        return self


class WireResult(_Strict):
    version: Literal[1]
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=1, le=1_000)
    pictures: list[Picture] = Field(min_length=1, max_length=GRID_SIZE)
    seeds: list[Seed]
    parameters: dict[str, Any]
    infotexts: list[Annotated[str, Field(max_length=MAX_TEXT)]]
    timings: dict[str, float]
    flagged: list[bool] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_of_each_per_picture(self) -> WireResult:
        for name in ("seeds", "infotexts", "flagged"):
            values = getattr(self, name)
            if values and len(values) != len(self.pictures):
                raise ValueError(f"{name}: one per picture ({len(self.pictures)}), got {len(values)}")
        if not self.seeds:
            raise ValueError("seeds: one per picture")
        return self


class WireProgress(_Strict):
    version: Literal[1]
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=1, le=1_000)
    step: int = Field(ge=0, le=10_000)
    total: int = Field(ge=1, le=10_000)
    preview: Annotated[str, Field(max_length=(MAX_PREVIEW_BYTES + 2) // 3 * 4)] | None = None  # base64 WebP
    flagged: bool | None = None

    @model_validator(mode="after")
    def _step_within_total(self) -> WireProgress:
        if self.step > self.total:
            raise ValueError(f"step {self.step} is past the total of {self.total}")
        return self


class WireOutcome(_Strict):
    """How an attempt ended: `done` carries the result, `failed` the cause its owner is told."""

    version: Literal[1]
    job_id: int = Field(ge=1)
    attempt: int = Field(ge=1, le=1_000)
    outcome: Literal["done", "cancelled", "failed"]
    error: Annotated[str, Field(max_length=MAX_ERROR)] | None = None
    result: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _result_when_done(self) -> WireOutcome:
        if (self.outcome == "done") != (self.result is not None):
            raise ValueError("a result comes with a done outcome, and only with it")
        return self


# --- the bot's side and the worker's side ------------------------------------------------


def job_to_wire(job_id: int, attempt: int, job: EngineJob) -> dict[str, Any]:
    """The message that carries `job` (attempt `attempt` of stored job `job_id`) to a worker."""
    fields: dict[str, Any] = {"version": WIRE_VERSION, "job_id": job_id, "attempt": attempt,
                              "request": job.request.to_dict(), "seed": job.seed}
    match job:
        case Imagine():
            fields |= {"type": "imagine", "count": job.count, "pictures": [_png(image) for image in job.images]}
        case Blend():
            fields |= {"type": "blend", "count": job.count, "pictures": [_png(image) for image in job.sources]}
        case Vary():
            fields |= {"type": "vary", "count": job.count, "variability": job.variability}
        case Upscale():
            fields |= {"type": "upscale", "count": 1, "upscale_mode": job.mode}
        case Outpaint():
            fields |= {"type": "outpaint", "count": job.count, "outpaint": job.kind}
            fields |= {"factor": job.factor} if job.kind == "zoom" else {}
            fields |= {"direction": job.direction} if job.kind == "pan" else {}
        case Repaint():
            fields |= {"type": "repaint", "count": job.count, "box": list(job.box)}
    if not isinstance(job, Imagine | Blend):
        fields["pictures"] = [_png(job.source)]
    return fields


def job_from_wire(message: Any) -> tuple[int, int, EngineJob]:
    """(job id, attempt, the engine's job) of a message; `WireError` when it is not a valid one."""
    wire = _validated(WireJob, message)
    try:
        request = GenerationRequest.from_dict(wire.request)
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"the job's request cannot be read: {error}") from None
    pictures = [_picture(data) for data in wire.pictures]
    job: EngineJob
    match wire.type:
        case "imagine":
            job = Imagine(request, wire.seed, wire.count, images=tuple(pictures))
        case "blend":
            job = Blend(request, tuple(pictures), wire.seed, wire.count)
        case "vary":
            job = Vary(request, pictures[0], wire.seed, variability=wire.variability, count=wire.count)
        case "upscale":
            job = Upscale(request, pictures[0], wire.seed, mode=wire.upscale_mode)
        case "outpaint":
            job = Outpaint(request, pictures[0], wire.seed, kind=wire.outpaint, factor=wire.factor or 2.0,
                           direction=wire.direction or "right", count=wire.count)
        case "repaint":
            job = Repaint(request, pictures[0], wire.seed, box=wire.box, count=wire.count)
    return wire.job_id, wire.attempt, job


def result_to_wire(job_id: int, attempt: int, result: GenerationResult) -> dict[str, Any]:
    return {"version": WIRE_VERSION, "job_id": job_id, "attempt": attempt,
            "pictures": [_png(image) for image in result.images], "seeds": list(result.seeds),
            "parameters": result.parameters, "infotexts": list(result.infotexts),
            "timings": dict(result.timings), "flagged": list(result.flagged)}


def result_from_wire(message: Any) -> tuple[int, int, GenerationResult]:
    """(job id, attempt, the result) of a worker's answer; `WireError` when it is not a valid one."""
    wire = _validated(WireResult, message)
    result = GenerationResult(images=tuple(_picture(data) for data in wire.pictures), seeds=tuple(wire.seeds),
                              parameters=wire.parameters, infotexts=tuple(wire.infotexts),
                              timings=wire.timings, flagged=tuple(wire.flagged))
    return wire.job_id, wire.attempt, result


def progress_to_wire(job_id: int, attempt: int, progress: Progress) -> dict[str, Any]:
    preview = None
    if progress.preview is not None:
        buffer = io.BytesIO()
        progress.preview.save(buffer, format="WEBP", quality=70)
        preview = base64.b64encode(buffer.getvalue()).decode("ascii")
    return {"version": WIRE_VERSION, "job_id": job_id, "attempt": attempt, "step": progress.step,
            "total": progress.total, "preview": preview, "flagged": progress.flagged}


def progress_from_wire(message: Any) -> tuple[int, int, Progress]:
    """(job id, attempt, the progress) of a worker's report; `WireError` when it is not a valid one."""
    wire = _validated(WireProgress, message)
    preview = None
    if wire.preview is not None:
        preview = _picture(wire.preview, "WEBP", max_side=PREVIEW_SIDE, max_bytes=MAX_PREVIEW_BYTES)
    return wire.job_id, wire.attempt, Progress(wire.step, wire.total, preview, wire.flagged)


def outcome_to_wire(job_id: int, attempt: int, outcome: Literal["done", "cancelled", "failed"], *,
                    result: GenerationResult | None = None, error: str | None = None) -> dict[str, Any]:
    return {"version": WIRE_VERSION, "job_id": job_id, "attempt": attempt, "outcome": outcome,
            "error": error[:MAX_ERROR] if error else None,
            "result": result_to_wire(job_id, attempt, result) if result is not None else None}


def outcome_from_wire(message: Any) -> WireOutcome:
    """A worker's outcome, checked (its result, when done, is read with `result_from_wire`)."""
    return _validated(WireOutcome, message)


# --- pictures ------------------------------------------------------------------------------


def _validated(model: type[_Strict], message: Any) -> Any:
    if not isinstance(message, dict):
        raise WireError(f"a message is a JSON object, got {type(message).__name__}")
    if message.get("version") != WIRE_VERSION:
        raise WireError(f"this worker reads version {WIRE_VERSION} messages, got version {message.get('version')!r}")
    try:
        return model.model_validate(message)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "the message"
        raise WireError(f"{where}: {first['msg']} ({error.error_count()} problem(s))") from None


def _png(image: Image.Image) -> str:
    """A picture as base64 PNG (lossless: the worker sees exactly the pixels the bot has)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)  # fast; the size matters less than the time here
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _picture(data: str, kind: str = "PNG", *, max_side: int | None = None,
             max_bytes: int = MAX_PICTURE_BYTES) -> Image.Image:
    """A base64 PNG (or WebP preview) back to an RGB picture, its size checked before its pixels are decoded."""
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise WireError("a picture is not base64") from None
    if len(raw) > max_bytes:
        raise WireError(f"a picture is over {max_bytes // 1024} KiB")
    try:
        image = Image.open(io.BytesIO(raw), formats=[kind])
        width, height = image.size
        if width * height > MAX_PICTURE_PIXELS:
            raise WireError(f"a picture of {width}×{height} is over {MAX_PICTURE_PIXELS // 1_000_000} megapixels")
        if max_side is not None and max(width, height) > max_side:
            raise WireError(f"a preview of {width}×{height} is over {max_side} pixels on a side")
        return image.convert("RGB")
    except WireError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:  # Pillow: SyntaxError
        raise WireError(f"a picture is not a readable {kind}: {error}") from None
