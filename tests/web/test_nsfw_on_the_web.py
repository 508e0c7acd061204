"""Flagged pictures on the web: blurred (or withheld) as the server's policy says, unless the
viewer opts in where the policy allows it; the same safety checker as on Discord."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers.pictures import detail
from helpers.web_pages import imagine
from PIL import Image

from bot.config import ModerationSettings


async def fetched(page, address: str) -> Image.Image:
    response = await page.request.get(address)
    assert response.ok, address
    return Image.open(io.BytesIO(await response.body())).convert("RGB")


async def made(web, page, prompt: str):
    return await web.settled(await imagine(page, web.url, prompt))


@pytest.mark.parametrize("policy", ["blur", "withhold"])
async def test_a_flagged_picture_is_veiled_until_the_viewer_opts_in_where_the_policy_allows(
        start_web, page, safety_checker, policy):
    web = await start_web(moderation=ModerationSettings(safety_checker=safety_checker, nsfw_policy=policy))
    flagged = await made(web, page, "a red circle --seed 3")
    clean = await made(web, page, "a blue square --seed 3")
    assert flagged.flagged and all(image.flagged for image in flagged.images) and not clean.flagged
    thumb, full = (f"{web.url}/images/{flagged.images[0].id}/thumb.webp",
                   f"{web.url}/images/{flagged.images[0].id}/full.png")
    original = Image.open(flagged.images[0].path).convert("RGB")
    sharp = detail(original)
    for address in (thumb, full):
        shown = await fetched(page, address)
        if policy == "withhold":
            assert np.asarray(shown).std() < 1 and shown.getpixel((0, 0)) == (128, 128, 128)
        else:
            assert detail(shown) < sharp / 4, (detail(shown), sharp)
    assert "parameters" not in (await fetched(page, full)).info  # a veiled PNG tells nothing of the prompt

    await page.goto(web.url + "/me")
    await page.click("button:text-is('Show flagged pictures unblurred (where the server allows)')")
    if policy == "withhold":  # never shown where the server withholds them
        assert (await fetched(page, thumb)).getpixel((0, 0)) == (128, 128, 128)
    else:
        assert abs(detail(await fetched(page, thumb)) - sharp) < sharp / 4  # as made (a WebP of it)
        assert np.array_equal(np.asarray(await fetched(page, full)), np.asarray(original))
    clean_original = Image.open(clean.images[0].path).convert("RGB")
    assert abs(detail(await fetched(page, f"{web.url}/images/{clean.images[0].id}/thumb.webp"))
               - detail(clean_original)) < detail(clean_original) / 4
