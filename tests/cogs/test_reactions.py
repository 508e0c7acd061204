"""Reactions on a result: ✉️ parameters by DM, ❤️ favourites, ❌ delete, 🔄 reroll."""

from __future__ import annotations

import asyncio

from helpers.discord_harness import CHANNEL_ID
from helpers.job_messages import job_of_message

from storage import repository as repo
from storage.models import JobKind, JobState

OWNER, OTHER = 4242, 5151


async def grid_of(harness, prompt: str) -> tuple[int, str]:
    result = await harness.result(harness.command("imagine", OWNER, prompt=prompt))
    job_id = int(result.custom_ids()[0].split(":")[2])
    message_id = harness.message_of_job(job_id)
    await job_of_message(harness.bot, message_id)  # reactions find it by id
    return job_id, message_id


async def test_envelope_sends_the_parameters_by_dm_and_heart_favourites(harness):
    job_id, message_id = await grid_of(harness, "a pink square --seed 21")
    harness.react(message_id, "✉️", OTHER)
    dm = await harness.discord.wait_for(lambda: [r for r in harness.discord.find("POST", "/channels/")
                                                 if "Job ID" in (r.content or "")])
    text = dm[0].content
    assert dm[0].path != f"/channels/{CHANNEL_ID}/messages"  # a DM channel, not the server's
    assert f"Job ID: `{job_id}`" in text and "Seed: 21 (pictures: 21, 22, 23, 24)" in text
    assert "Steps: 20" in text and "Seed: 21" in text and "**a pink square --seed 21**" in text

    harness.react(message_id, "❤️", OTHER)

    async def favourites():
        async with harness.bot.sessionmaker() as session:
            return await repo.list_favourites(session, user_id=OTHER)
    for _ in range(500):
        if len(found := await favourites()) == 4:
            break
        await asyncio.sleep(0.01)
    assert sorted(image.job_id for image in found) == [job_id] * 4


async def test_cross_deletes_only_for_the_owner_or_a_moderator_and_keeps_the_pictures(harness):
    job_id, message_id = await grid_of(harness, "a cyan star")
    harness.react(message_id, "❌", OTHER)  # a bystander: nothing happens
    harness.react(message_id, "❌", OTHER + 1, moderator=True)  # a moderator: deleted
    await harness.discord.wait_for(lambda: message_id in harness.discord.deleted)
    assert len(harness.discord.find("DELETE", f"/channels/{CHANNEL_ID}/messages/{message_id}")) == 1
    job = await harness.job(job_id)
    assert job.state == JobState.DONE and len(job.images) == 4  # still in the store and in /history


async def test_reroll_reaction_starts_a_job_for_the_reactor_in_the_channel(harness):
    job_id, message_id = await grid_of(harness, "a white circle on black")
    harness.react(message_id, "🔄", OTHER)
    posted = await harness.discord.wait_for(lambda: [
        r for r in harness.discord.find("POST", f"/channels/{CHANNEL_ID}/messages") if r.files])
    assert posted[0].content == "**a white circle on black** - <@5151> (fast)"
    new_id = int(posted[0].custom_ids()[0].split(":")[2])
    job = await harness.job(new_id)
    assert (job.kind, job.parent_id, job.user_id, job.state) == (JobKind.REROLL, job_id, OTHER, JobState.DONE)


async def test_cross_on_a_u_post_belongs_to_whoever_pressed_u_not_to_the_grids_owner(harness):
    job_id, grid_id = await grid_of(harness, "a red star --steps 6")
    await harness.result(harness.press(grid_id, f"job:u:{job_id}:0", OTHER))
    picture = next(i for i, m in harness.discord.messages.items()
                   if f"job:us:{job_id}:0" in str(m["components"]) and i not in harness.discord.deleted)
    await job_of_message(harness.bot, picture)
    harness.react(picture, "❌", OWNER)  # the grid's owner: not theirs to delete
    harness.react(grid_id, "✉️", OWNER)  # handled after the ❌, in order
    await harness.discord.wait_for(lambda: [r for r in harness.discord.find("POST", "/channels/")
                                            if "Job ID" in (r.content or "")])
    assert picture not in harness.discord.deleted
    harness.react(picture, "❌", OTHER)  # whoever pressed U1: theirs
    await harness.discord.wait_for(lambda: picture in harness.discord.deleted)


async def test_reroll_reaction_on_a_grid_whose_source_is_gone_says_so_in_the_channel(harness):
    job_id, grid_id = await grid_of(harness, "a red star --steps 6")
    await harness.result(harness.press(grid_id, f"job:v:{job_id}:0", OWNER))
    variations = harness.message_of_job(2)
    await job_of_message(harness.bot, variations)
    async with harness.bot.sessionmaker.begin() as session:  # the source job was deleted since
        (await repo.get_job(session, job_id=2)).parent_id = None
    harness.react(variations, "🔄", OTHER)
    said = await harness.discord.wait_for(lambda: [r for r in harness.discord.accepted(
        "POST", f"/channels/{CHANNEL_ID}/messages") if "gone" in (r.content or "")])
    assert said[0].content == f"<@{OTHER}> ❌ The picture this grid was made from is gone: run /imagine again."
    async with harness.bot.sessionmaker() as session:
        assert len(await repo.list_history(session, user_id=OTHER)) == 0  # nothing was queued


async def test_a_reaction_being_answered_when_the_bot_stops_is_answered_first(harness):
    """Shutting down waits for the handlers in flight: here ✉️'s DM, held up by a rate limit."""
    _, message_id = await grid_of(harness, "a pink square")
    harness.discord.fail(429, path="/users/@me/channels", retry_after=0.5)  # discord.py waits, then tries again
    harness.react(message_id, "✉️", OTHER)
    await harness.discord.wait_for(lambda: harness.discord.find("POST", "/users/@me/channels"))
    await harness.bot.close()
    dm = [r for r in harness.discord.find("POST", "/channels/") if "Job ID" in (r.content or "")]
    assert len(dm) == 1 and dm[0].accepted
