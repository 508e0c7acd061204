"""What a hostile member can do through Discord, and what the bot sends back: pings only for the
job's owner, content within Discord's 2,000 characters, forged ids refused, failures private, and
every button answered before the database is free."""

from __future__ import annotations

import asyncio
import io
import os
import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from helpers.discord_harness import CONTENT_LIMIT, component
from helpers.job_messages import job_of_message
from PIL import Image
from sqlalchemy import update

from storage.models import Job

OWNER, VICTIM, OTHER = 4242, 777_000_000_000_000_777, 5151


def mentions_of(record) -> dict | None:
    body = record.json.get("data", record.json) if isinstance(record.json, dict) else None
    return body.get("allowed_mentions") if isinstance(body, dict) else None


def message_requests(harness) -> list:
    """Every request that carried message content (posts, edits, callbacks, DMs)."""
    return [r for r in harness.discord.requests if isinstance(r.json, dict)
            and "content" in (r.json.get("data") or r.json)]


async def grid(harness, prompt: str, user_id: int = OWNER) -> tuple[int, str]:
    result = await harness.result(harness.command("imagine", user_id, prompt=prompt))
    job_id = int(result.custom_ids()[0].split(":")[2])
    message_id = harness.message_of_job(job_id)
    await job_of_message(harness.bot, message_id)
    return job_id, message_id


async def test_a_prompt_that_mentions_others_pings_only_its_owner_on_every_request(harness):
    prompt = f"<@{VICTIM}> <@&{VICTIM}> @everyone @here a red circle --steps 6"
    job_id, message_id = await grid(harness, prompt)
    harness.press(message_id, f"job:u:{job_id}:0", OTHER)  # U1 by someone else: the post is for them
    await harness.discord.wait_for(lambda: [r for r in message_requests(harness) if "Image #1" in r.content])
    sent = [r for r in message_requests(harness) if r.content]
    assert any(f"<@{VICTIM}>" in r.content for r in sent)  # the prompt is shown as typed...
    for record in sent:  # ...and yet no request may ping anyone but the one it is for
        mentions = mentions_of(record)
        assert mentions is not None, f"{record.method} {record.path} carries no allowed_mentions"
        assert mentions.get("parse") == [], record.path
        assert {str(user) for user in mentions.get("users", [])} <= {str(OWNER), str(OTHER)}, record.path
        assert not mentions.get("roles") and not mentions.get("replied_user"), record.path
    pick = next(r for r in sent if "Image #1" in r.content)
    assert [str(user) for user in mentions_of(pick)["users"]] == [str(OTHER)]


async def test_a_long_prompt_is_shortened_in_messages_and_whole_in_the_dm(harness):
    links = " ".join(f"{harness.discord.base_url}/attachments/red{n}.png" for n in range(3))
    for n in range(3):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, format="PNG")
        harness.discord.attachments[f"red{n}.png"] = buffer.getvalue()
    words = "a red circle on a white background " * 40  # 1,400 characters: under the text limit
    no = ", ".join(f"a small blue thing with the number {n}" for n in range(45))  # --no items are not prompt text
    prompt = f"{links} {words.strip()} <lora:pixel:0.1> --steps 6 --no {no}"
    assert 2000 < len(prompt) < 4000
    result = await harness.result(harness.command("imagine", OWNER, prompt=prompt))
    assert len(result.content) <= CONTENT_LIMIT
    assert result.content.endswith("…** - <@4242> (fast)")
    assert all(len(r.content or "") <= CONTENT_LIMIT for r in harness.discord.requests if r.json)
    job = await harness.job(1)
    assert len(job.prompt) > CONTENT_LIMIT and job.prompt.endswith(f"--no {no}")  # kept whole for /history

    message_id = harness.message_of_job(1)
    await job_of_message(harness.bot, message_id)
    harness.react(message_id, "✉️", OWNER)
    dm = await harness.discord.wait_for(lambda: [r for r in harness.discord.find("POST", "/channels/")
                                                 if "Job ID" in (r.content or "")])
    (name, data), = dm[0].files.items()
    assert name == "job-1-parameters.txt" and len(dm[0].content) <= CONTENT_LIMIT
    assert job.prompt in data.decode() and "Seed:" in data.decode()


async def test_a_forged_button_id_is_refused_privately(harness):
    _, message_id = await grid(harness, "a red circle --steps 6")
    message = harness.discord.messages[message_id]
    forged = f"job:u:{'9' * 25}:0"
    message["components"][0]["components"][0]["custom_id"] = forged  # what a modified client would send
    token = harness.press(message_id, forged, OTHER)
    assert await harness.ephemeral_text(token) == "❌ That job's pictures are gone: run /imagine again."


async def test_a_view_that_fails_answers_privately_and_logs_the_traceback(start_bot):
    harness = await start_bot(expect_errors=("HistoryView",))
    await grid(harness, "a red circle --steps 6")
    token = harness.command("history", OWNER)
    listing = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(token) if r.path.endswith("/callback")), None))
    view_message = harness.discord.messages[harness.discord.originals[token]]
    select = component(view_message, "Bring one back with its buttons")
    assert listing.json["type"] == 4
    press = harness.press(view_message["id"], select["custom_id"], OWNER, values=["not-a-number"])
    text = await harness.ephemeral_text(press)
    assert text == "❌ Something went wrong on our side; it has been logged. Try again in a moment."


async def test_someone_elses_history_controls_say_why_they_refuse(harness):
    await grid(harness, "a red circle --steps 6")
    token = harness.command("history", OWNER)
    await harness.discord.wait_for(lambda: token in harness.discord.originals)
    view_message = harness.discord.messages[harness.discord.originals[token]]
    select = component(view_message, "Bring one back with its buttons")
    press = harness.press(view_message["id"], select["custom_id"], OTHER, values=["1"])
    assert (await harness.ephemeral_text(press)).startswith(f"❌ These controls belong to <@{OWNER}>")


async def test_buttons_are_answered_while_the_database_is_locked(harness, tmp_path):
    job_id, message_id = await grid(harness, "a red circle --steps 6")
    locker = sqlite3.connect(tmp_path / "bot.db", timeout=1)
    locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
    try:
        tokens = [harness.press(message_id, f"job:{action}:{job_id}:0", OTHER) for action in ("v", "u")]
        tokens.append(harness.press(message_id, f"job:r:{job_id}", OTHER))
        await harness.discord.wait_for(lambda: all(
            any(r.path.endswith("/callback") for r in harness.of(token)) for token in tokens), timeout=2.5)
    finally:
        locker.rollback()
        locker.close()
    for token in tokens:  # and once the database is free, the work goes on
        await harness.discord.wait_for(lambda token=token: [r for r in harness.of(token) if r.files], timeout=120)


async def test_a_photo_is_kept_as_sent_not_as_a_png_many_times_its_size(harness):
    pixels = Image.effect_noise((512, 512), 60).convert("RGB")
    buffer = io.BytesIO()
    pixels.save(buffer, format="JPEG", quality=80)
    photo = buffer.getvalue()
    token = harness.command("imagine", OWNER, prompt="a circle --steps 6", files={"image": ("photo.jpg", photo)})
    await harness.result(token)
    (name,) = (await harness.job(1)).request["options"]["inputs"]
    kept = harness.bot.store.input_path(name)
    assert name.endswith(".jpg") and kept.read_bytes() == photo  # was re-encoded as a PNG 3x its size


async def test_expired_pictures_show_in_history_and_their_buttons_say_so(harness):
    job_id, message_id = await grid(harness, "a red circle --steps 6")
    harness.bot.settings = replace(harness.bot.settings,
                                   storage=replace(harness.bot.settings.storage, keep_results_days=1))
    two_days_ago = time.time() - 2 * 86_400
    for path in harness.bot.store.root.glob("[0-9]*/*/*.png"):
        os.utime(path, (two_days_ago, two_days_ago))
    assert await asyncio.to_thread(harness.bot.store.expire_results, time.time() - 86_400) == 4
    async with harness.bot.sessionmaker.begin() as session:  # the job itself was made two days ago
        await session.execute(update(Job).where(Job.id == job_id).values(
            created_at=datetime.now(UTC) - timedelta(days=2)))

    token = harness.command("history", OWNER)
    listing = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(token) if r.path.endswith("/callback")), None))
    embed = listing.json["data"]["embeds"][0]
    assert embed["fields"][0]["name"] == f"`{job_id}` imagine · expired"
    press = harness.press(message_id, f"job:u:{job_id}:0", OWNER)
    assert await harness.ephemeral_text(press) == (
        "❌ That picture was removed: this server keeps pictures for 1 day. Run /imagine again.")
    harness.react(message_id, "✉️", OWNER)  # the prompt and seeds still come, without the PNG's text
    dm = await harness.discord.wait_for(lambda: [r for r in harness.discord.find("POST", "/channels/")
                                                 if "Job ID" in (r.content or "")])
    assert "**a red circle --steps 6**" in dm[0].content and "```" not in dm[0].content
