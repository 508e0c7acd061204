"""After a restart: old buttons work, unfinished jobs are delivered, given-up jobs are explained."""

from __future__ import annotations

import asyncio

from helpers.discord_harness import CHANNEL_ID, GUILD_ID, Recorded, image_of

from storage import repository as repo
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.job_requests import imagine_job
from storage.models import Delivery, JobKind, JobState, MessageKind, QueueMode

OWNER, OTHER = 4242, 5151


async def test_a_button_on_an_old_message_works_after_a_restart(start_bot):
    first = await start_bot()
    token = first.command("imagine", OWNER, prompt="a green triangle --seed 3")
    grid = await first.result(token)
    job_id = int(grid.custom_ids()[0].split(":")[2])
    grid_id = next(i for i, m in first.discord.messages.items() if f"job:u:{job_id}:0" in str(m["components"]))
    await first.bot.close()

    second = await start_bot()  # a new process: nothing in memory but the database
    reroll = second.press(grid_id, f"job:r:{job_id}", OTHER)
    result = await second.result(reroll)
    assert result.content == "**a green triangle --seed 3** - <@5151> (fast)"
    new_id = int(result.custom_ids()[0].split(":")[2])
    rerolled = await second.job(new_id)
    assert (rerolled.kind, rerolled.parent_id, rerolled.state) == (JobKind.REROLL, job_id, JobState.DONE)


async def write_jobs_before_start(tmp_path, fake_discord, *, attempts: int, state: JobState,
                                  crashes: int = 0) -> tuple[int, str]:
    """A job row left by a process that died, with its progress message in the channel."""
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await upgrade_database(engine)
    progress = fake_discord._message(Recorded("POST", "/", {"content": "**a red circle** - <@4242> (40%) (fast)"}),
                                     str(CHANNEL_ID))
    sessionmaker = create_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        new = imagine_job({"segments": [{"text": "a red circle", "weight": 1.0}]}, "a red circle", seed=9)
        job = await repo.enqueue_job(session, kind=new.kind, user_id=OWNER, request=new.request, prompt=new.prompt,
                                     seed=new.seed, mode=QueueMode.FAST, guild_id=GUILD_ID, channel_id=CHANNEL_ID)
        job.state, job.attempts, job.crashes = state, attempts, crashes
        await repo.record_message(session, job_id=job.id, message_id=int(progress["id"]), channel_id=CHANNEL_ID,
                                  kind=MessageKind.PROGRESS, via="interaction", user_id=OWNER)
        job_id = job.id
    await engine.dispose()
    return job_id, progress["id"]


async def test_a_job_running_when_the_bot_died_is_finished_and_posted_in_its_channel(
        start_bot, fake_discord, tmp_path):
    job_id, progress_id = await write_jobs_before_start(tmp_path, fake_discord, attempts=1, state=JobState.RUNNING)
    harness = await start_bot()
    posted = await fake_discord.wait_for(lambda: next(
        (r for r in fake_discord.find("POST", f"/channels/{CHANNEL_ID}/messages") if r.files), None), timeout=120)
    assert posted.content == "**a red circle** - <@4242> (fast)"
    assert image_of(posted).size == (128, 128)
    job = await harness.job_when(job_id, lambda job: job.delivery == Delivery.DELIVERED)
    assert (job.state, job.attempts, [i.seed for i in job.images]) == (JobState.DONE, 2, [9, 10, 11, 12])
    await fake_discord.wait_for(lambda: progress_id in fake_discord.deleted)  # it made way for the result

    async def messages() -> list:
        async with harness.bot.sessionmaker() as session:
            return await repo.messages_of(session, job_id=job_id)
    deadline = asyncio.get_running_loop().time() + 10
    while len(kept := await messages()) > 1 and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)  # the bot forgets it just after Discord deleted it
    assert [(m.kind, m.via) for m in kept] == [(MessageKind.RESULT, "channel")]  # the progress message is forgotten
    result_id = kept[0].message_id
    assert fake_discord.messages[str(result_id)]["content"] == posted.content  # ❌ ✉️ 🔄 find it


async def test_a_job_given_up_after_restarts_tells_its_owner_why(start_bot, fake_discord, tmp_path):
    job_id, _ = await write_jobs_before_start(tmp_path, fake_discord, attempts=3, crashes=2, state=JobState.RUNNING)
    harness = await start_bot()
    edit = await fake_discord.wait_for(lambda: next(
        (r for r in fake_discord.find("PATCH", f"/channels/{CHANNEL_ID}/messages") if "given up" in (r.content or "")),
        None))
    assert edit.content.startswith("**a red circle** - <@4242> (failed) (fast)\n❌ the bot crashed 3 times")
    assert f"(job {job_id})" in edit.content
    assert (await harness.job(job_id)).state == JobState.FAILED
