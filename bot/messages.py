"""The words and files of the messages about a job, the same wherever a job is shown."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import discord
from PIL import Image, ImageFilter

from bot.buttons import grid_view, single_view
from generation.imaging import make_grid
from storage.models import Job, JobKind, NsfwPolicy, QueueMode

HEADLINE_LIMIT = 1800  # leaves room under Discord's 2,000 for one more line (a failure's cause)
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit on a server without boosts
WEBP_QUALITIES = (95, 85, 70, 50)
MODE_NAMES = {QueueMode.FAST: "fast", QueueMode.RELAX: "relaxed", QueueMode.TURBO: "turbo"}


def shorten(text: str, limit: int = 60) -> str:
    """Text cut to `limit` characters with an ellipsis (Discord limits fields and labels)."""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def days(count: float) -> str:
    return f"{count:g} day" if count == 1 else f"{count:g} days"


def job_title(job: Job) -> str:
    """What the job is, after the prompt: Midjourney's wording."""
    options = job.request.get("options", {})
    who = f"<@{job.user_id}>"
    match job.kind:
        case JobKind.VARIATION:
            strength = "Strong" if options.get("variability") == "strong" else "Subtle"
            return f"Variations ({strength}) by {who}"
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


def headline(job: Job, status: str | None = None) -> str:
    """`**prompt** - @user (42%) (fast)`: the first line of every message about a job.

    A long prompt is shortened with an ellipsis to fit; the whole prompt stays in ✉️ and /history."""
    status_part = f" ({status})" if status else ""
    rest = f" - {job_title(job)}{status_part} ({MODE_NAMES[job.mode]})"
    return f"**{shorten(job.prompt, HEADLINE_LIMIT - len(rest) - 4)}**{rest}"


def failure_text(job: Job) -> str:
    """What a failed or cancelled job's message says."""
    if job.error is None:
        return headline(job, job.state.value)
    return f"{headline(job, job.state.value)}\n❌ {job.error} (job {job.id})"


def encode_for_upload(image: Image.Image, name: str, size_limit: int) -> discord.File:
    """PNG when it fits under `size_limit`, else the best WebP that does, else the picture made
    smaller until one does (the full PNG always stays in the image store)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    if buffer.tell() <= size_limit:
        buffer.seek(0)
        return discord.File(buffer, filename=f"{name}.png")
    while True:
        for quality in WEBP_QUALITIES:
            buffer = io.BytesIO()
            image.save(buffer, format="WEBP", quality=quality, method=4)
            if buffer.tell() <= size_limit:
                buffer.seek(0)
                return discord.File(buffer, filename=f"{name}.webp")
        if min(image.size) <= 64:  # nothing this small is over any limit Discord has; send the smallest
            buffer.seek(0)
            return discord.File(buffer, filename=f"{name}.webp")
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)


async def load_images(paths: list[str]) -> list[Image.Image]:
    """Read stored pictures off the event loop."""
    def read() -> list[Image.Image]:
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images
    return await asyncio.to_thread(read)


BLUR, WITHHOLD = NsfwPolicy.BLUR, NsfwPolicy.WITHHOLD  # what a flagged picture becomes outside NSFW channels
WITHHELD_GREY = (128, 128, 128)


def veil(image: Image.Image, policy: str) -> Image.Image:
    """A flagged picture as a server that keeps NSFW out shows it: blurred past recognition,
    or a plain grey tile in its place."""
    if policy == WITHHOLD:
        return Image.new("RGB", image.size, WITHHELD_GREY)
    return image.filter(ImageFilter.GaussianBlur(radius=max(image.size) / 6))


def preview_as_shown(preview: Image.Image, flagged: bool | None, policy: str | None) -> Image.Image | None:
    """A progress preview where flagged pictures are veiled by `policy` (None: shown as made).
    With a checker looking at previews, a flagged one is not shown and the others only blurred,
    for the checker reads a preview (projected from the latents, approximate colours, a noisy
    estimate) far less surely than a finished picture; with the withhold policy none is shown.
    CPU-bound (a blur): call it off the event loop."""
    if flagged is None or policy is None:
        return preview
    if flagged or policy == WITHHOLD:
        return None
    return veil(preview, BLUR)


def veil_notice(count: int, total: int, policy: str) -> str:
    which = "it was" if total == 1 else f"{count} of the {total} pictures were"
    done = "blurred" if policy == BLUR else "withheld"
    return (f"\n⚠️ The safety checker flagged {'this picture' if total == 1 else 'some pictures'} as possibly NSFW: "
            f"{which} {done} here (an age-restricted channel shows them as made).")


async def result_message(job: Job, size_limit: int, nsfw: str | None = None) -> dict[str, Any]:
    """content, file and buttons of a finished job: the grid with U/V/🔄, or one picture with its
    own buttons. `job` must have its images loaded. `nsfw`: the policy for its flagged pictures
    where it is posted (None: shown as made)."""
    images = await load_images([image.path for image in job.images])
    flagged = [image.flagged for image in job.images] if nsfw else [False] * len(images)
    if any(flagged):  # a blur of big pictures takes a while: off the event loop
        images = await asyncio.to_thread(
            lambda: [veil(image, nsfw) if flag else image for image, flag in zip(images, flagged, strict=True)])
    if len(images) == 1:
        picture, view = images[0], single_view(job.id, 0, square=images[0].width == images[0].height)
    else:
        picture, view = await asyncio.to_thread(make_grid, images), grid_view(job.id, len(images))
    file = await asyncio.to_thread(encode_for_upload, picture, f"job-{job.id}", size_limit)
    content = headline(job)
    if any(flagged):
        file.spoiler = nsfw == BLUR
        content += veil_notice(sum(flagged), len(images), nsfw)
    return {"content": content, "file": file, "view": view}


async def picture_message(job: Job, index: int, presser_id: int, size_limit: int,
                          nsfw: str | None = None) -> dict[str, Any]:
    """U1–U4 (and a favourite brought back): one picture of a grid with the buttons that work on one;
    a flagged one blurred, as a spoiler, where `nsfw` is BLUR (WITHHOLD is refused before)."""
    (image,) = await load_images([job.images[index].path])
    flagged = nsfw is not None and job.images[index].flagged
    if flagged:
        image = await asyncio.to_thread(veil, image, nsfw)
    file = await asyncio.to_thread(encode_for_upload, image, f"job-{job.id}-{index + 1}", size_limit)
    content = f"**{shorten(job.prompt, HEADLINE_LIMIT)}** - Image #{index + 1} <@{presser_id}>"
    if flagged:
        file.spoiler = True
        content += veil_notice(1, 1, nsfw)
    return {"content": content, "file": file, "view": single_view(job.id, index, square=image.width == image.height)}

FIELD_LIMIT = 1024  # Discord refuses a longer embed field value


def field_lines(lines: list[str]) -> str:
    """As many lines as fit in one embed field, then how many more there are."""
    shown: list[str] = []
    for number, line in enumerate(lines):
        more = f"… and {len(lines) - number} more"
        room_for_more = len(more) + 1 if number < len(lines) - 1 else 0
        if len("\n".join([*shown, line])) + room_for_more > FIELD_LIMIT:
            return "\n".join([*shown, more])
        shown.append(line)
    return "\n".join(shown) or "nothing"
