"""The delivery rules of DESIGN.md, seen from Discord's side."""

from __future__ import annotations

import io
from datetime import timedelta

import numpy as np
from helpers.discord_harness import CHANNEL_ID
from PIL import Image

from bot import delivery
from bot.messages import encode_for_upload
from storage import repository as repo
from storage.models import JobState

OWNER = 4242


def progress_edits(harness, token: str) -> list[str]:
    return [r.content for r in harness.of(token) if r.method == "PATCH" and r.content and "%)" in r.content]


async def test_progress_edits_are_throttled(start_bot):
    harness = await start_bot(progress_edit_seconds=3600)
    token = harness.command("imagine", OWNER, prompt="a red square")
    await harness.result(token)
    assert progress_edits(harness, token) == ["**a red square** - <@4242> (0%) (fast)"]  # then nothing until done


async def test_a_deleted_progress_message_ends_updates_quietly_and_the_job_still_finishes(harness, gate):
    token = harness.command("imagine", OWNER, prompt="a blue star")
    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if "(0%)" in (r.content or "")])
    harness.discord.deleted.add(harness.discord.originals[token])  # the user deleted it (the job is held)
    gate.set()
    result = await harness.result(token)
    patches = [r for r in harness.of(token) if r.method == "PATCH"]
    assert len(patches) == 3  # "Waiting to start", "(0%)", then the one edit that met the 404: no more tries
    assert result.content == "**a blue star** - <@4242> (fast)"
    assert (await harness.job(1)).state == JobState.DONE


async def test_after_the_token_expires_the_bot_edits_and_posts_through_the_channel(harness, monkeypatch):
    monkeypatch.setattr(delivery, "TOKEN_LIFETIME", timedelta(0))  # every token is already too old
    token = harness.command("imagine", OWNER, prompt="a green circle")
    posted = await harness.discord.wait_for(lambda: [
        r for r in harness.discord.find("POST", f"/channels/{CHANNEL_ID}/messages") if r.files])
    original = harness.discord.originals[token]
    channel_edits = harness.discord.find("PATCH", f"/channels/{CHANNEL_ID}/messages/{original}")
    assert channel_edits and channel_edits[0].content.startswith("**a green circle** - <@4242> (Waiting to start")
    assert not [r for r in harness.of(token) if r.method == "PATCH"]  # no webhook use after expiry
    assert posted[0].content == "**a green circle** - <@4242> (fast)"
    await harness.discord.wait_for(lambda: original in harness.discord.deleted)


async def test_a_grid_too_big_for_the_upload_limit_is_sent_as_webp(harness):
    token = harness.command("imagine", OWNER, prompt="a pink circle --seed 1", size_limit=9_000)
    result = await harness.result(token)
    (name, data), = result.files.items()
    grid = Image.open(io.BytesIO(data))
    as_png = io.BytesIO()
    grid.save(as_png, format="PNG")
    assert name == "job-1.webp" and len(data) <= 9_000 < as_png.tell()  # a PNG would not have fitted
    assert grid.size == (128, 128)


def test_encode_for_upload_keeps_png_when_it_fits_and_finds_a_webp_that_fits_otherwise():
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    assert encode_for_upload(noise, "grid", 10 * 1024 * 1024).filename == "grid.png"
    small = encode_for_upload(noise, "grid", 120_000)
    assert small.filename == "grid.webp" and len(small.fp.read()) <= 120_000


async def test_a_user_over_the_queue_cap_is_told_privately_and_nothing_is_written(harness, gate):
    first = harness.command("imagine", OWNER, prompt="a red circle --repeat 10")
    await harness.discord.wait_for(lambda: len([r for r in harness.of(first) if r.method == "POST"]) >= 10)
    over = await harness.ephemeral_text(harness.command("imagine", OWNER, prompt="a red circle --repeat 2"))
    assert over.startswith("❌ ") and "queue" in over
    async with harness.bot.sessionmaker() as session:
        assert len(await repo.list_history(session, user_id=OWNER, limit=50)) == 10


async def test_a_job_that_fails_says_so_with_its_id_and_the_next_job_runs(start_bot):
    harness = await start_bot(expect_errors=("job 1 failed",))
    make_work = harness.bot.jobs.make_work

    def failing_first(job):
        if job.id == 1:
            def fail(report, token):
                raise FileNotFoundError("/srv/secret/models/paint.safetensors: the model ran out of paint")
            return fail
        return make_work(job)
    harness.bot.jobs.make_work = failing_first

    token = harness.command("imagine", OWNER, prompt="a white star")
    failed = await harness.discord.wait_for(lambda: [r for r in harness.of(token) if "❌" in (r.content or "")])
    assert failed[0].content == ("**a white star** - <@4242> (failed) (fast)\n"
                                 "❌ something went wrong while making the pictures (job 1)")
    said = " ".join(str(r.json) for r in harness.discord.requests)
    assert "/srv/secret" not in said and "FileNotFoundError" not in said and "paint" not in said
    result = await harness.result(harness.command("imagine", OWNER, prompt="a white star"))
    assert result.content == "**a white star** - <@4242> (fast)"
