"""Every result reaches its user: Discord's errors (5xx, 429, 403, 413, 400), an expired
token, a closed DM, a restart and a cog reload lose no result and post none twice."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from helpers.discord_harness import (
    CHANNEL_ID,
    GUILD_ID,
    MANAGE_MESSAGES,
    MODERATOR_ROLE_ID,
    THREAD_ID,
    component,
    image_of,
)
from helpers.job_messages import job_of_message, messages_when

from storage import repository as repo
from storage.models import Delivery, JobState, MessageKind

OWNER, OTHER = 4242, 5151
RESULT_FILE = re.compile(r"job-(\d+)\.(png|webp)$")


def results_posted(discord) -> dict[int, int]:
    """How many result messages Discord accepted for each job (by the grid's file name)."""
    counts: dict[int, int] = {}
    for record in discord.requests:
        if record.method == "POST" and record.accepted:
            for name in record.files:
                if match := RESULT_FILE.search(name):
                    counts[int(match[1])] = counts.get(int(match[1]), 0) + 1
    return counts


async def kinds_of_messages(harness, job_id: int) -> list[tuple[MessageKind, str]]:
    async with harness.bot.sessionmaker() as session:
        return [(m.kind, m.via) for m in await repo.messages_of(session, job_id=job_id)]


async def test_a_minute_of_5xx_in_a_20_job_run_loses_nothing_and_posts_each_result_once(start_bot):
    harness = await start_bot(redelivery_seconds=5)
    for number in range(20):
        harness.command("imagine", 100 + number % 4, prompt=f"a red circle --seed {number} --steps 6")
    await harness.discord.wait_for(lambda: len(results_posted(harness.discord)) >= 4, timeout=300)
    outage = harness.discord.fail(500, seconds=60)  # every route, in the middle of the run
    await harness.discord.wait_for(lambda: harness.discord.refused(), timeout=60)

    async def all_delivered() -> bool:
        async with harness.bot.sessionmaker() as session:
            jobs = [await repo.get_job(session, job_id=job_id) for job_id in range(1, 21)]
        return all(job.state == JobState.DONE and job.delivery == Delivery.DELIVERED for job in jobs)

    deadline = asyncio.get_running_loop().time() + 400
    while not await all_delivered():
        assert asyncio.get_running_loop().time() < deadline, results_posted(harness.discord)
        await asyncio.sleep(0.5)
    assert outage.expired()  # delivered after the outage, not by luck before it
    assert results_posted(harness.discord) == {job_id: 1 for job_id in range(1, 21)}
    for job_id in range(1, 21):
        assert [kind for kind, _ in await kinds_of_messages(harness, job_id)].count(MessageKind.RESULT) == 1
    progress = [m for m in harness.discord.messages.values() if "%)" in m["content"] or "Waiting" in m["content"]]
    assert all(m["id"] in harness.discord.deleted for m in progress)  # no message left stuck at "(xx%)"


async def test_a_channel_that_refuses_after_the_token_died_sends_the_result_by_dm(harness, gate, caplog):
    token = harness.command("imagine", OWNER, prompt="a blue square --steps 6")
    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if "Waiting" in (r.content or "")])
    harness.discord.advance(16 * 60)  # the token dies (the bot still thinks it has 14 minutes)
    harness.discord.deny(CHANNEL_ID, "attach_files")
    gate.set()
    dm = await harness.discord.wait_for(lambda: harness.discord.dm_channel(OWNER) and next(
        (r for r in harness.discord.accepted("POST", f"/channels/{harness.discord.dm_channel(OWNER)}/messages")
         if r.files), None))
    assert dm.content.startswith("**a blue square --steps 6** - <@4242> (fast)")
    assert f"(job 1: I could not post it in <#{CHANNEL_ID}>)" in dm.content
    assert image_of(dm).size == (128, 128)  # the grid itself
    assert harness.discord.refused("POST", f"/channels/{CHANNEL_ID}/messages")  # the channel was tried first
    job = await harness.job_when(1, lambda job: job.delivery == Delivery.DELIVERED)
    assert job.delivery_attempts == 1
    assert (MessageKind.RESULT, "dm") in await kinds_of_messages(harness, 1)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cannot post in channel" in w and "Attach Files" in w for w in warnings), warnings


async def test_with_no_channel_and_no_dm_the_job_is_undeliverable_logged_and_marked(harness, gate, caplog):
    harness.discord.deny(CHANNEL_ID, "send_messages")
    harness.discord.close_dms(OWNER)
    token = harness.command("imagine", OWNER, prompt="a green star --steps 6")
    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if "Waiting" in (r.content or "")])
    harness.discord.advance(16 * 60)
    gate.set()
    job = await harness.job_when(1, lambda job: job.delivery != Delivery.PENDING, timeout=120)
    assert job.delivery == Delivery.UNDELIVERABLE and "takes no DMs" in job.delivery_error
    assert results_posted(harness.discord) == {}
    assert any("could not be delivered anywhere" in r.getMessage() for r in caplog.records)
    history = await harness.ephemeral_reply(harness.command("history", OWNER))
    assert history.json["data"]["embeds"][0]["fields"][0]["name"] == "`1` imagine · not posted"
    await harness.result(harness.command("imagine", OWNER, prompt="a green star --steps 6"))  # the queue goes on


async def test_a_413_is_sent_again_smaller_and_a_400_shortened(harness):
    harness.discord.fail(413, path="/webhooks/", method="POST", times=1)
    token = harness.command("imagine", OWNER, prompt="a pink circle --seed 4 --steps 6")
    result = await harness.result(token)
    refused = [r for r in harness.of(token) if r.method == "POST" and r.files and not r.accepted]
    assert len(refused) == 1 and refused[0].status == 413
    (first,), (second,) = refused[0].files.values(), result.files.values()
    assert len(second) <= len(first) // 2
    assert results_posted(harness.discord) == {1: 1}

    harness.discord.fail(400, path="/webhooks/", method="POST", times=1)
    token = harness.command("imagine", OWNER, prompt="a pink circle " + "extraordinarily " * 25 + "--steps 6")
    result = await harness.result(token)
    assert len(result.content) <= 300 and result.content.endswith("…")
    assert results_posted(harness.discord) == {1: 1, 2: 1}


async def test_429s_are_waited_out_and_the_result_posted_once(harness):
    harness.discord.fail(429, path="/webhooks/", method="POST", times=2, retry_after=0.3)
    token = harness.command("imagine", OWNER, prompt="a yellow circle --steps 6")
    await harness.result(token)
    assert [r.status for r in harness.of(token) if r.method == "POST" and r.files] == [429, 429, 200]
    assert results_posted(harness.discord) == {1: 1}


async def test_a_result_left_pending_is_posted_at_the_next_start(start_bot, fake_discord):
    first = await start_bot()
    await first.result(first.command("imagine", OWNER, prompt="a red square --steps 6"))
    await first.job_when(1, lambda job: job.delivery == Delivery.DELIVERED)
    async with first.bot.sessionmaker.begin() as session:  # as if the bot died between "done" and the post
        job = await repo.get_job(session, job_id=1)
        job.delivery = Delivery.PENDING
    await first.bot.close()

    second = await start_bot()
    posted = await fake_discord.wait_for(lambda: next(
        (r for r in fake_discord.accepted("POST", f"/channels/{CHANNEL_ID}/messages") if r.files), None))
    assert posted.content == "**a red square --steps 6** - <@4242> (fast)"
    assert (await second.job_when(1, lambda job: job.delivery == Delivery.DELIVERED)).delivery_attempts == 2
    assert results_posted(fake_discord) == {1: 2}  # once by each run: the first post was forgotten by the test


async def test_reloading_the_imagine_cog_loses_no_delivery(harness, gate):
    token = harness.command("imagine", OWNER, prompt="a white square --steps 6")
    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if "Waiting" in (r.content or "")])
    await harness.bot.reload_extension("cogs.imagine")
    gate.set()
    await harness.result(token)
    pressed = await harness.result(harness.press(harness.message_of_job(1), "job:v:1:0", OWNER))
    assert "Variations" in pressed.content  # the buttons work with the reloaded cog
    assert results_posted(harness.discord) == {1: 1, 2: 1}


async def test_reactions_work_on_every_message_of_a_job(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="a cyan circle --steps 6"))
    await harness.result(harness.press(harness.message_of_job(1), "job:u:1:2", OTHER))  # U3, by someone else
    token = harness.command("history", OWNER)
    await harness.ephemeral_reply(token)
    menu = harness.response_message(token)
    select = component(menu, "Bring one back with its buttons")
    await harness.result(harness.press(menu["id"], select["custom_id"], OWNER, values=["1"]))
    messages = await messages_when(harness.bot, 1, lambda found: MessageKind.SHOWN in {m.kind for m in found})
    assert [(m.kind, m.index) for m in messages] == [(MessageKind.RESULT, None), (MessageKind.PICTURE, 2),
                                                     (MessageKind.SHOWN, None)]  # the progress message is deleted

    def envelopes() -> list:
        dm = harness.discord.dm_channel(OTHER)
        return harness.discord.accepted("POST", f"/channels/{dm}/messages") if dm else []
    for number, message in enumerate(messages, start=1):
        harness.react(str(message.message_id), "✉️", OTHER)
        await harness.discord.wait_for(lambda number=number: len(envelopes()) == number)
        assert "Job ID: `1`" in envelopes()[-1].content

    harness.react(str(messages[1].message_id), "❤️", OTHER)  # on U3: that picture alone
    await harness.discord.wait_for(lambda: harness.discord.dm_channel(OTHER))  # (handled in order: after ✉️)

    async def favourites() -> list:
        async with harness.bot.sessionmaker() as session:
            return await repo.list_favourites(session, user_id=OTHER)
    deadline = asyncio.get_running_loop().time() + 30
    while not await favourites():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)
    token = harness.command("favourites", OTHER)
    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if r.method == "POST" and r.accepted
                                            and (r.json or {}).get("embeds")])
    listing = next(r for r in harness.of(token) if (r.json or {}).get("embeds"))
    assert [field["name"] for field in listing.json["embeds"][0]["fields"]] == ["`1` picture 3"]


async def test_cross_in_a_thread_follows_the_threads_permissions(start_bot, fake_discord):
    harness = await start_bot(thread=True)
    await harness.result(harness.command("imagine", OWNER, prompt="a black star --steps 6", channel_id=THREAD_ID))
    grid_id = harness.message_of_job(1)
    await job_of_message(harness.bot, grid_id)
    # the moderators may manage messages in the server, but not in this thread's channel
    harness.bot._connection.parsers["CHANNEL_UPDATE"]({
        "id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "imagine", "position": 0,
        "permission_overwrites": [{"id": str(MODERATOR_ROLE_ID), "type": 0, "allow": "0",
                                   "deny": str(MANAGE_MESSAGES)}]})
    payload = harness.reaction_payload(grid_id, "❌", OTHER, moderator=True, channel_id=THREAD_ID)
    harness.bot._connection.parsers["MESSAGE_REACTION_ADD"](payload)
    harness.react(grid_id, "✉️", OWNER, channel_id=THREAD_ID)  # handled after the ❌, in order
    await fake_discord.wait_for(lambda: fake_discord.dm_channel(OWNER))
    assert grid_id not in fake_discord.deleted

    harness.bot._connection.parsers["CHANNEL_UPDATE"]({
        "id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "imagine", "position": 0,
        "permission_overwrites": []})
    harness.react(grid_id, "❌", OTHER, moderator=True, channel_id=THREAD_ID)
    await fake_discord.wait_for(lambda: grid_id in fake_discord.deleted)


async def test_a_command_that_fails_after_its_public_deferral_answers_privately(start_bot):
    harness = await start_bot(expect_errors=("/imagine failed",))

    async def broken_submit(**kwargs):
        raise RuntimeError("the database is on fire")
    harness.bot.jobs.submit = broken_submit
    token = harness.command("imagine", OWNER, prompt="a red circle")
    text = await harness.ephemeral_text(token)  # a message Discord made ephemeral, not the public placeholder
    assert text == "❌ Something went wrong with /imagine on our side; it has been logged. Try again in a moment."
    assert harness.discord.originals[token] in harness.discord.deleted  # the public "thinking…" is gone


async def test_a_result_whose_pictures_are_gone_is_undeliverable_not_retried(start_bot, fake_discord):
    first = await start_bot()
    await first.result(first.command("imagine", OWNER, prompt="a red square --steps 6"))
    job = await first.job_when(1, lambda job: job.delivery == Delivery.DELIVERED)
    async with first.bot.sessionmaker.begin() as session:  # posted never, and the pictures since removed
        (await repo.get_job(session, job_id=1)).delivery = Delivery.PENDING
    await first.bot.close()
    for image in job.images:
        Path(image.path).unlink()

    second = await start_bot()
    job = await second.job_when(1, lambda job: job.delivery != Delivery.PENDING)
    assert job.delivery == Delivery.UNDELIVERABLE and "gone from the image store" in job.delivery_error
    assert results_posted(fake_discord) == {1: 1}  # the first run's post only
