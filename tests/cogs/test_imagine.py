"""/imagine to a grid, and the buttons under it, as a user sees them in Discord."""

from __future__ import annotations

import re

from helpers.discord_harness import image_of
from PIL import Image

from generation.builtin.analysis import background_colour, dominant_colour
from storage.models import JobKind, JobState

OWNER, OTHER = 4242, 5151


def quadrants(grid):
    half_w, half_h = grid.width // 2, grid.height // 2
    return [grid.crop((x, y, x + half_w, y + half_h)) for y in (0, half_h) for x in (0, half_w)]


async def test_imagine_defers_shows_progress_then_posts_the_grid_with_buttons(harness):
    token = harness.command("imagine", OWNER, prompt="a red circle on a white background --seed 5")
    result = await harness.result(token)
    calls = harness.of(token)

    assert calls[0].path.endswith("/callback") and calls[0].json["type"] == 5  # deferred first
    edits = [r.content for r in calls if r.method == "PATCH" and r.content]
    assert edits[0].startswith("**a red circle on a white background --seed 5** - <@4242> (Waiting to start")
    assert any(re.search(r"\((\d+)%\) \(fast\)$", text) for text in edits[1:])
    assert any(r.files and "preview" in next(iter(r.files)) for r in calls if r.method == "PATCH")

    assert result.content == "**a red circle on a white background --seed 5** - <@4242> (fast)"
    job_id = int(re.search(r"job-(\d+)", next(iter(result.files)))[1])
    assert result.custom_ids() == [f"job:u:{job_id}:{i}" for i in range(4)] + [f"job:r:{job_id}"] + [
        f"job:v:{job_id}:{i}" for i in range(4)]
    grid = image_of(result)
    assert grid.size == (128, 128)
    assert [dominant_colour(q) for q in quadrants(grid)].count("red") >= 3
    assert all(background_colour(q) == "white" for q in quadrants(grid))
    await harness.discord.wait_for(lambda: [  # the progress message makes way for the result
        r for r in harness.of(token) if r.method == "DELETE" and r.path.endswith("/messages/@original")])

    job = await harness.job(job_id)
    assert (job.state, job.user_id, job.kind) == (JobState.DONE, OWNER, JobKind.IMAGINE)
    assert [image.seed for image in job.images] == [5, 6, 7, 8]
    for quadrant, image in zip(quadrants(grid), job.images, strict=True):  # the grid is the job's four pictures
        assert quadrant.tobytes() == Image.open(image.path).convert("RGB").tobytes()


async def test_buttons_pick_one_picture_and_start_jobs_for_whoever_presses_them(harness):
    token = harness.command("imagine", OWNER, prompt="a blue square on a yellow background --seed 11")
    grid_message = await harness.result(token)
    grid_id = next(i for i, m in harness.discord.messages.items() if m["components"] and
                   "job:u:" in str(m["components"]))
    job_id = int(grid_message.custom_ids()[0].split(":")[2])

    pick = harness.press(grid_id, f"job:u:{job_id}:1", OTHER)  # U2, pressed by someone else
    single = await harness.result(pick)
    assert single.content == "**a blue square on a yellow background --seed 11** - Image #2 <@5151>"
    assert image_of(single).size == (64, 64)
    assert single.custom_ids() == [f"job:{action}:{job_id}:1" for action in (
        "us", "uc", "vs", "vx", "rg", "z2", "z15", "zc", "pl", "pr", "pu", "pd", "fav")]  # square: no Make Square

    vary = harness.press(grid_id, f"job:v:{job_id}:1", OTHER)  # V2
    varied = await harness.result(vary)
    assert varied.content == ("**a blue square on a yellow background --seed 11** - "
                              "Variations (Subtle) by <@5151> (fast)")
    variation_id = int(varied.custom_ids()[0].split(":")[2])
    variation = await harness.job(variation_id)
    assert (variation.kind, variation.parent_id, variation.user_id) == (JobKind.VARIATION, job_id, OTHER)
    assert [dominant_colour(q) for q in quadrants(image_of(varied))].count("blue") >= 3
    owner_job = await harness.job(job_id)
    assert owner_job.user_id == OWNER and len(owner_job.images) == 4  # the owner's job is untouched


async def test_bad_prompts_get_a_short_private_answer_and_nothing_is_queued(harness):
    token = harness.command("imagine", OWNER, prompt="a red circle --ar 16:")
    reply = await harness.ephemeral_text(token)
    assert reply.startswith("❌ ") and "--ar" in reply
    (answer,) = harness.of(token)  # the answer itself: no public "thinking…" shown first
    assert answer.path.endswith("/callback") and answer.json["type"] == 4
    token = harness.command("imagine", OWNER, prompt="a red circle <lora:nosuch:1>")
    reply = await harness.ephemeral_text(token)
    assert "nosuch" in reply and "niji" in reply  # names the LoRAs that exist
    async with harness.bot.sessionmaker() as session:
        from storage import repository as repo

        assert await repo.list_history(session, user_id=OWNER) == []
