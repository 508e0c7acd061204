"""The words and files of the messages about a job, the same wherever a job is shown."""

from __future__ import annotations

import asyncio
from typing import Any

from cogs.utils.components import grid_view, single_view
from cogs.utils.delivery import encode_for_upload, load_images
from generation.imaging import make_grid
from storage.models import Job, JobKind, QueueMode

MODE_NAMES = {QueueMode.FAST: "fast", QueueMode.RELAX: "relaxed", QueueMode.TURBO: "turbo"}


def shorten(text: str, limit: int = 60) -> str:
    """Text cut to `limit` characters with an ellipsis (Discord limits fields and labels)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def job_title(job: Job) -> str:
    """What the job is, after the prompt: Midjourney's wording."""
    options = job.request.get("options", {})
    if job.kind == JobKind.VARIATION:
        strength = "Strong" if options.get("variability") == "strong" else "Subtle"
        return f"Variations ({strength}) by <@{job.user_id}>"
    who = f"<@{job.user_id}>"
    match job.kind:
        case JobKind.UPSCALE:
            return f"Upscaled ({options.get('upscale_mode', 'subtle').title()}) by {who}"
        case JobKind.ZOOM:
            return f"Zoom Out ({options.get('factor', 2):g}x) by {who}"
        case JobKind.PAN:
            return f"Pan {options.get('direction', 'right').title()} by {who}"
        case JobKind.SQUARE:
            return f"Make Square by {who}"
        case JobKind.REGION:
            return f"Variations (Region) by {who}"
        case JobKind.BLEND:
            return f"Blend of {len(options.get('inputs', ()))} pictures by {who}"
    return who


def days(count: float) -> str:
    return f"{count:g} day" if count == 1 else f"{count:g} days"


HEADLINE_LIMIT = 1800  # leaves room under Discord's 2,000 for one more line (a failure's cause)


def headline(job: Job, status: str | None = None) -> str:
    """`**prompt** - @user (42%) (fast)`: the first line of every message about a job.

    A long prompt is shortened with an ellipsis to fit; the whole prompt stays in ✉️ and /history."""
    status_part = f" ({status})" if status else ""
    rest = f" - {job_title(job)}{status_part} ({MODE_NAMES[job.mode]})"
    return f"**{shorten(job.prompt, HEADLINE_LIMIT - len(rest) - 4)}**{rest}"


async def result_message(job: Job, size_limit: int) -> dict[str, Any]:
    """content, file and buttons of a finished job: the grid with U/V/🔄, or one picture with its
    own buttons. `job` must have its images loaded."""
    images = await load_images([image.path for image in job.images])
    if len(images) == 1:
        picture, view = images[0], single_view(job.id, 0, square=images[0].width == images[0].height)
    else:
        picture, view = await asyncio.to_thread(make_grid, images), grid_view(job.id, len(images))
    file = await asyncio.to_thread(encode_for_upload, picture, f"job-{job.id}", size_limit)
    return {"content": headline(job), "file": file, "view": view}
