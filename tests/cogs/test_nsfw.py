"""Flagged pictures: the safety checker's verdict and each server's policy, through the harness.

The checker is a tiny `StableDiffusionSafetyChecker` built from a config whose one concept is
fitted to fire on what the built-in model makes for "a red circle" and not for the other prompts
below (helpers/tiny_safety.py): the grids these tests ask for, made by the real engine.
"""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from helpers.discord_harness import (
    ADMIN_ROLE_ID,
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_GUILD,
    NSFW_CHANNEL_ID,
    NSFW_THREAD_ID,
    THREAD_ID,
)
from helpers.job_messages import job_of_message
from helpers.pictures import detail
from PIL import Image

from bot.config import ModerationSettings
from bot.messages import BLUR, veil
from generation.executor import Progress
from generation.imaging import make_grid

MEMBER, ADMIN = 7001, 7002


@pytest.fixture
async def checked(start_bot, safety_checker):
    return await start_bot(moderation=ModerationSettings(safety_checker=safety_checker))


def uploaded(record) -> tuple[str, Image.Image]:
    (name, data), = record.files.items()
    return name, Image.open(io.BytesIO(data)).convert("RGB")


def stored_grid(job) -> Image.Image:
    return make_grid([Image.open(image.path).convert("RGB") for image in job.images])


def difference(one: Image.Image, other: Image.Image) -> float:
    return float(np.abs(np.asarray(one, dtype=np.float32) - np.asarray(other, dtype=np.float32)).mean())




async def test_a_flagged_grid_is_blurred_as_a_spoiler_with_a_notice_and_marked(checked):
    result = await checked.result(checked.command("imagine", MEMBER, prompt="a red circle --seed 3"))
    name, grid = uploaded(result)
    job = await checked.job_when(1, lambda job: job.flagged)
    assert job.flagged and all(image.flagged for image in job.images)
    assert name.startswith("SPOILER_")
    assert "⚠️ The safety checker flagged some pictures as possibly NSFW: 4 of the 4 pictures were blurred here" in (
        result.content)
    made = stored_grid(job)  # the store keeps them as made
    assert grid.size == made.size and detail(grid) < detail(made) / 3


async def test_an_unflagged_grid_is_posted_as_made(checked):
    result = await checked.result(checked.command("imagine", MEMBER, prompt="a blue square --seed 3"))
    name, grid = uploaded(result)
    job = await checked.job(1)
    assert not job.flagged and not any(image.flagged for image in job.images)
    assert not name.startswith("SPOILER_") and "⚠️" not in result.content
    assert np.array_equal(np.asarray(grid), np.asarray(stored_grid(job)))


async def test_an_age_restricted_channel_shows_flagged_pictures_as_made(checked):
    result = await checked.result(checked.command("imagine", MEMBER, prompt="a red circle --seed 3",
                                                  channel_id=NSFW_CHANNEL_ID))
    name, grid = uploaded(result)
    job = await checked.job_when(1, lambda job: job.flagged)
    assert not name.startswith("SPOILER_") and "⚠️" not in result.content
    assert np.array_equal(np.asarray(grid), np.asarray(stored_grid(job)))


async def test_flagged_previews_are_not_shown_where_flagged_pictures_are_not(checked):
    """The tiny checker, fitted on finished pictures, does not flag these previews (projected from
    the latents, their colours approximate): the reason previews outside age-restricted channels
    are shown only blurred, and not at all when the checker flags one or the server withholds."""
    def previews(token: str) -> list[Image.Image]:
        return [Image.open(io.BytesIO(data)).convert("RGB") for r in checked.of(token) if r.method == "PATCH"
                for name, data in r.files.items() if "preview" in name]

    after_dark = checked.command("imagine", MEMBER, prompt="a red circle --seed 3", channel_id=NSFW_CHANNEL_ID)
    await checked.result(after_dark)
    plain = checked.command("imagine", MEMBER, prompt="a red circle --seed 3")
    await checked.result(plain)
    made, blurred = previews(after_dark), previews(plain)  # the same job twice: the same previews
    assert len(made) >= 2 and len(blurred) == len(made)
    for shown, as_made in zip(blurred, made, strict=True):
        assert difference(shown, veil(as_made, BLUR)) < 2 < difference(shown, as_made)

    # a preview the checker does flag: not shown at all there, as made where NSFW may be
    flagged = Progress(5, 20, preview=made[0], flagged=True)
    here, after_dark_post = (SimpleNamespace(channel_id=channel, guild_id=GUILD_ID)
                             for channel in (CHANNEL_ID, NSFW_CHANNEL_ID))
    assert await checked.bot.delivery.preview_shown(flagged, here) is None
    assert await checked.bot.delivery.preview_shown(flagged, after_dark_post) is made[0]

    token = checked.command("admin nsfw", ADMIN, permissions=MANAGE_GUILD, roles=(ADMIN_ROLE_ID,), policy="withhold")
    assert (await checked.ephemeral_text(token)).startswith("✅")
    withheld = checked.command("imagine", MEMBER, prompt="a blue square --seed 3")
    await checked.result(withheld)
    assert previews(withheld) == []  # the percentage alone


async def test_a_thread_is_age_restricted_as_its_channel_is(start_bot, safety_checker):
    checked = await start_bot(moderation=ModerationSettings(safety_checker=safety_checker), thread=True)
    for job_id, thread_id, shown_as_made in ((1, NSFW_THREAD_ID, True), (2, THREAD_ID, False)):
        result = await checked.result(checked.command("imagine", MEMBER, prompt="a red circle --seed 3",
                                                      channel_id=thread_id))
        name, grid = uploaded(result)
        job = await checked.job_when(job_id, lambda job: job.flagged)
        assert name.startswith("SPOILER_") is not shown_as_made, thread_id
        assert np.array_equal(np.asarray(grid), np.asarray(stored_grid(job))) is shown_as_made, thread_id


async def test_withhold_puts_grey_tiles_in_the_grid_and_refuses_u(checked):
    token = checked.command("admin nsfw", ADMIN, permissions=MANAGE_GUILD, roles=(ADMIN_ROLE_ID,), policy="withhold")
    assert (await checked.ephemeral_text(token)).startswith("✅")
    result = await checked.result(checked.command("imagine", MEMBER, prompt="a red circle --seed 3"))
    name, grid = uploaded(result)
    assert not name.startswith("SPOILER_") and "4 of the 4 pictures were withheld here" in result.content
    assert detail(grid) < 1.0  # grey tiles on the grid's own gaps: no picture shows
    message_id = checked.message_of_job(1)
    await job_of_message(checked.bot, message_id)
    refused = await checked.ephemeral_text(checked.press(message_id, "job:u:1:0", MEMBER))
    assert refused.startswith("❌ The safety checker flagged that picture")


async def test_u_on_a_flagged_picture_posts_it_blurred(checked):
    await checked.result(checked.command("imagine", MEMBER, prompt="a red circle --seed 3"))
    message_id = checked.message_of_job(1)
    await job_of_message(checked.bot, message_id)
    picked = await checked.result(checked.press(message_id, "job:u:1:1", MEMBER))
    name, picture = uploaded(picked)
    job = await checked.job(1)
    made = Image.open(job.images[1].path).convert("RGB")
    assert name.startswith("SPOILER_") and "it was blurred here" in picked.content
    assert detail(picture) < detail(made) / 3
