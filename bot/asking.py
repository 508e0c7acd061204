"""Reading what a member asks for, the same way for every front end.

The Discord cogs (cogs/imagine.py) and the web app (web/) both turn a prompt, a few
pictures or a press on a result into `NewJob`s with these functions, then hand them to
the delivery service (bot/delivery.py), which checks the server's rules and queues them.
A mistake is a `PromptError`, a rule a `Refused`, a picture a `FetchError`, a job whose
pictures are gone an `Unavailable`: each message is worded for the member, and the two
front ends show it the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from bot.buttons import Action
from bot.fetch import FetchError, decode_image, fetch_image, readable_size
from bot.messages import days
from bot.rules import Asker
from generation.catalog import list_loras
from generation.prompt import MAX_IMAGE_PROMPTS, GenerationRequest, PromptError, apply_suffix, parse_prompt
from generation.validation import validate_request
from storage import repository as repo
from storage.job_requests import (
    pan_job,
    request_without_options,
    reroll_job,
    square_job,
    upscale_job,
    variation_job,
    zoom_job,
)
from storage.models import Job, JobKind, JobState, User, Variability
from storage.repository import NewJob

if TYPE_CHECKING:
    from bot.bot import ImagineBot
    from bot.config import Settings
    from bot.rules import CommunityRules

MAX_ROW_ID = 2**63 - 1  # the largest id the database can hold
PANS = {Action.PAN_LEFT: "left", Action.PAN_RIGHT: "right", Action.PAN_UP: "up", Action.PAN_DOWN: "down"}
# what a press on a result may start as a new job (U and ❤️ start none; Region and custom zoom need more)
JOB_ACTIONS = frozenset({Action.VARY, Action.REROLL, Action.UPSCALE_SUBTLE, Action.UPSCALE_CREATIVE,
                         Action.VARY_SUBTLE, Action.VARY_STRONG, Action.ZOOM_2, Action.ZOOM_15, *PANS, Action.SQUARE})
REGION_PRESETS = {
    "center": (0.25, 0.25, 0.75, 0.75), "left half": (0.0, 0.0, 0.5, 1.0), "right half": (0.5, 0.0, 1.0, 1.0),
    "top half": (0.0, 0.0, 1.0, 0.5), "bottom half": (0.0, 0.5, 1.0, 1.0), "top left": (0.0, 0.0, 0.5, 0.5),
    "top right": (0.5, 0.0, 1.0, 0.5), "bottom left": (0.0, 0.5, 0.5, 1.0), "bottom right": (0.5, 0.5, 1.0, 1.0),
}
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}


class Unavailable(Exception):
    """The job or picture a press works on cannot be used; the message says why, for the member."""


@dataclass(frozen=True)
class Upload:
    """A picture sent with a request: a Discord attachment's link and what Discord says of it, or
    the bytes a browser sent (then `url` is only its name)."""

    url: str
    name: str
    size: int
    content_type: str | None
    data: bytes | None = None


def read_prompt(settings: Settings, prompt: str, attached: Sequence[str] = ()) -> list[tuple[GenerationRequest, str]]:
    """Each job of a prompt, checked against the configured models, with the prompt to show
    for it (as the user wrote it, permutations expanded; defaults filled in are not shown).
    `attached` are attachment URLs, image prompts like the links the prompt starts with.
    PromptError says what is wrong."""
    loras = list_loras(settings.catalog.lora_dir)
    requests = []
    for request in parse_prompt(prompt, settings.limits):
        request = replace(request, image_urls=request.image_urls + tuple(attached))
        if len(request.image_urls) > MAX_IMAGE_PROMPTS:
            raise PromptError(f"at most {MAX_IMAGE_PROMPTS} image prompts (links and attachments together)")
        shown = request.to_prompt()
        if len(shown) > settings.limits.max_input_length:  # with the attachment's link: Remix must show it
            raise PromptError(f"with the attached picture's link the prompt is {len(shown)} characters; "
                              f"the limit is {settings.limits.max_input_length}")
        requests.append((validate_request(request, settings.catalog, available_loras=loras), shown))
    if len({request.image_urls for request, _ in requests}) > 1:  # the pictures are fetched once, for all
        raise PromptError("every job of a {permutation} needs the same image links: put the links outside "
                          "the braces")
    return requests


def one_prompt(settings: Settings, prompt: str, what: str,
               kept_links: Sequence[str] = ()) -> tuple[GenerationRequest, str]:
    """A prompt that makes exactly one job (forms on a picture take one), whose image links
    are among `kept_links`: the pictures the job was made from are kept, new ones are not fetched."""
    requests = read_prompt(settings, prompt)
    if len(requests) != 1:
        raise PromptError(f"{what} takes one prompt: no {{permutations}} or --repeat.")
    if any(url not in kept_links for url in requests[0][0].image_urls):
        raise PromptError(f"{what} keeps the pictures the job started from (or drops them) but takes no new "
                          "links: to start from other pictures, run /imagine with them.")
    return requests[0]


def screen(rules: CommunityRules, asker: Asker, prompts: list[str], asked: str | None = None) -> None:
    """The server's rules that need no database (bans, channels, banned words, the mode the
    prompt asks for, the burst allowance), checked before any wait and before any picture is
    fetched, so that a refusal is immediate and costs nothing; `Refused` says why. The delivery
    service checks them again with the rest when the jobs are submitted (the request counts
    once against the burst allowance)."""
    rules.check_access(asker)
    rules.check_words(asker, prompts)
    if asked is not None:
        rules.check_mode(asker, asked)
    rules.check_burst(asker)


def personal(rules: CommunityRules, asker: Asker, prompt: str, user: User) -> str:
    """The prompt with the member's /settings, then the server's default version (/admin), added
    where the prompt does not set them itself."""
    prompt = apply_suffix(prompt, user.default_suffix) if user.default_suffix else prompt
    version = rules.default_version(asker)
    return apply_suffix(prompt, f"--v {version}") if version else prompt


def read_region(text: str) -> tuple[float, float, float, float]:
    """A preset name ("center", "top left"...) or four percentages "left top right bottom"."""
    words = " ".join(text.lower().replace(",", " ").split())
    if words in REGION_PRESETS:
        return REGION_PRESETS[words]
    try:
        left, top, right, bottom = (float(word) / 100 for word in words.split())
    except ValueError:
        raise PromptError(f"the region is a name ({', '.join(REGION_PRESETS)}) or four percentages: "
                          "left top right bottom, like 25 25 75 75") from None
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise PromptError("the region's percentages must go from 0 to 100, left before right and top before bottom")
    return left, top, right, bottom


def remix_default(parent: Job) -> str:
    """What a remix shows to edit: the prompt; a blend's own words (none, when it had none)."""
    if parent.kind != JobKind.BLEND:
        return parent.prompt
    request = GenerationRequest.from_dict(request_without_options(parent.request))
    return request.to_prompt() if request.segments else ""


def job_for_press(variability: Variability, action: Action, parent: Job, index: int) -> NewJob:
    """The job a press on a result starts (`JOB_ACTIONS`); SourceGone when it needs a picture that is gone."""
    if action == Action.REROLL:
        return reroll_job(parent)
    if action in (Action.VARY_SUBTLE, Action.VARY_STRONG):
        return variation_job(parent, index, "subtle" if action == Action.VARY_SUBTLE else "strong")
    if action == Action.VARY:  # V1–V4 follow the presser's /settings
        return variation_job(parent, index, variability.value)
    if action in PANS:
        return pan_job(parent, index, PANS[action])
    if action in (Action.ZOOM_2, Action.ZOOM_15):
        return zoom_job(parent, index, 2.0 if action == Action.ZOOM_2 else 1.5)
    if action == Action.SQUARE:
        return square_job(parent, index)
    return upscale_job(parent, index, "subtle" if action == Action.UPSCALE_SUBTLE else "creative")


async def finished_job(bot: ImagineBot, job_id: int, index: int) -> Job:
    """The finished job a press works on, with its pictures; `Unavailable` says why not."""
    parent = None
    if 0 < job_id <= MAX_ROW_ID:  # a forged id can carry any number of digits
        async with bot.sessionmaker() as session:
            parent = await repo.get_job(session, job_id=job_id)
    if parent is None or parent.state != JobState.DONE:
        raise Unavailable("That job's pictures are gone: run /imagine again.")
    if not 0 <= index < len(parent.images):
        raise Unavailable("That picture does not exist.")
    if not await asyncio.to_thread(Path(parent.images[index].path).exists):
        keep = bot.settings.storage.keep_results_days
        raise Unavailable(f"That picture was removed: this server keeps pictures for {days(keep)}. Run /imagine "
                          "again." if keep else "That picture is gone from the image store: run /imagine again.")
    return parent


async def keep_pictures(bot: ImagineBot, user_id: int, urls: Sequence[str],
                        uploads: Mapping[str, Upload] | None = None) -> list[str]:
    """Fetch the pictures (links, Discord attachments and browser uploads get the same checks:
    bot/fetch.py; a user has only a few fetches under way at once) and keep them in the image
    store, as sent when the format is already fine; their names, in order. `uploads` holds
    what is known of the attachments among `urls`, or the bytes of an upload. FetchError says
    what was wrong with which."""
    policy = bot.settings.images
    uploads = uploads or {}
    names = []
    for number, url in enumerate(urls, start=1):
        upload = uploads.get(url)
        which = f"picture {number}" if len(urls) > 1 else "the picture"
        if upload is not None and upload.size > policy.max_bytes:
            raise FetchError(f"{which} is larger than {readable_size(policy.max_bytes)}")
        if upload is not None and not (upload.content_type or "image/").startswith("image/"):
            raise FetchError(f"{which} ({upload.name}) is not a picture")
        try:
            async with bot.fetch_limiter.slot(user_id):
                if upload is not None and upload.data is not None:
                    fetched = await asyncio.to_thread(decode_image, upload.data, policy, url)
                else:
                    fetched = await fetch_image(bot.http_session, url, policy)
        except FetchError as error:
            raise FetchError(f"{which}: {error}") from None
        original = (fetched.data, fetched.format) if fetched.original_is_faithful else None
        names.append(await asyncio.to_thread(bot.store.save_input, fetched.image, original))
    return names


async def member_settings(bot: ImagineBot, user_id: int) -> User:
    """The member's row with their /settings (made on first use)."""
    async with bot.sessionmaker.begin() as session:
        return await repo.ensure_user(session, user_id=user_id)
