"""Repository functions against a real, migrated SQLite file."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from storage import repository as repo
from storage.models import JobKind, JobState, QueueMode

REQUEST = {"segments": [{"text": "a red circle", "weight": 1.0}], "params": {"aspect": "1:1"}}


def images_for(job_id: int, count: int = 4) -> list[repo.NewImage]:
    return [repo.NewImage(i, f"{job_id}/{i}.png", 64, 64, 100 + i, f"{i:064x}") for i in range(count)]


async def new_job(sessionmaker, user_id=1, prompt="a red circle", **kwargs) -> int:
    async with sessionmaker.begin() as session:
        job = await repo.enqueue_job(session, kind=kwargs.pop("kind", JobKind.IMAGINE), user_id=user_id,
                                     request=REQUEST, mode=QueueMode.FAST, prompt=prompt, **kwargs)
        return job.id


async def test_a_job_is_written_queued_with_its_request(sessionmaker):
    job_id = await new_job(sessionmaker, seed=42, guild_id=7, channel_id=8)
    async with sessionmaker() as session:
        job = await repo.get_job(session, job_id=job_id)
        assert (job.state, job.kind, job.seed, job.request, job.attempts) == (
            JobState.QUEUED, JobKind.IMAGINE, 42, REQUEST, 0)
        assert job.created_at is not None


async def test_the_lifecycle_and_recording_images_once(sessionmaker):
    job_id = await new_job(sessionmaker)
    async with sessionmaker.begin() as session:
        assert (await repo.mark_job_running(session, job_id=job_id)).attempts == 1
    async with sessionmaker.begin() as session:
        assert await repo.record_images(session, job_id=job_id, images=images_for(job_id)) is True
    async with sessionmaker.begin() as session:  # a redelivered result changes nothing
        assert await repo.record_images(session, job_id=job_id, images=images_for(job_id, 2)) is False
    async with sessionmaker() as session:
        job = await repo.get_job(session, job_id=job_id)
        assert job.state == JobState.DONE and job.finished_at is not None
        assert [(i.index, i.seed) for i in job.images] == [(0, 100), (1, 101), (2, 102), (3, 103)]


async def test_unfinished_jobs_come_back_in_order(sessionmaker):
    first, second, third = [await new_job(sessionmaker, user_id=u) for u in (1, 2, 1)]
    async with sessionmaker.begin() as session:
        await repo.mark_job_running(session, job_id=second)
        await repo.cancel_job(session, job_id=third)
    async with sessionmaker() as session:
        assert [(j.id, j.state) for j in await repo.list_unfinished_jobs(session)] == [
            (first, JobState.QUEUED), (second, JobState.RUNNING)]


async def test_fail_and_cancel(sessionmaker):
    failed, cancelled = await new_job(sessionmaker), await new_job(sessionmaker)
    async with sessionmaker.begin() as session:
        await repo.fail_job(session, job_id=failed, error="out of memory")
        assert await repo.cancel_job(session, job_id=cancelled) is True
        assert await repo.cancel_job(session, job_id=failed) is False  # already over
    async with sessionmaker() as session:
        assert (await repo.get_job(session, job_id=failed)).error == "out of memory"


async def test_history_is_newest_first_paged_and_filtered(sessionmaker):
    prompts = ["a red circle", "a blue square", "two red stars", "100% cyan", "under_score"]
    ids = [await new_job(sessionmaker, prompt=p) for p in prompts]
    await new_job(sessionmaker, user_id=2, prompt="a red circle")  # someone else's
    async with sessionmaker() as session:
        assert [j.id for j in await repo.list_history(session, user_id=1)] == ids[::-1]
        assert [j.id for j in await repo.list_history(session, user_id=1, limit=2, offset=1)] == [ids[3], ids[2]]
        assert [j.prompt for j in await repo.list_history(session, user_id=1, text="RED")] == [
            "two red stars", "a red circle"]
        assert [j.prompt for j in await repo.list_history(session, user_id=1, text="%")] == ["100% cyan"]
        assert [j.prompt for j in await repo.list_history(session, user_id=1, text="_")] == ["under_score"]


async def test_parent_chain(sessionmaker):
    grid = await new_job(sessionmaker)
    variation = await new_job(sessionmaker, kind=JobKind.VARIATION, parent_id=grid)
    upscale = await new_job(sessionmaker, kind=JobKind.UPSCALE, parent_id=variation)
    async with sessionmaker() as session:
        assert [j.id for j in await repo.parent_chain(session, job_id=upscale)] == [upscale, variation, grid]


async def test_favourites(sessionmaker):
    job_id = await new_job(sessionmaker)
    async with sessionmaker.begin() as session:
        await repo.record_images(session, job_id=job_id, images=images_for(job_id))
        image_ids = [i.id for i in (await repo.get_job(session, job_id=job_id)).images]
    async with sessionmaker.begin() as session:
        assert await repo.add_favourite(session, user_id=9, image_id=image_ids[2]) is True
        assert await repo.add_favourite(session, user_id=9, image_id=image_ids[2]) is False
    async with sessionmaker() as session:
        assert [i.id for i in await repo.list_favourites(session, user_id=9)] == [image_ids[2]]


async def test_foreign_keys_are_enforced(sessionmaker):
    with pytest.raises(IntegrityError):
        async with sessionmaker.begin() as session:
            await repo.add_favourite(session, user_id=1, image_id=12345)


async def test_undelivered_jobs_are_due_by_backoff_and_new_ones_come_first(sessionmaker):
    from storage.models import Delivery

    first, second, third = [await new_job(sessionmaker, channel_id=7) for _ in range(3)]
    async with sessionmaker.begin() as session:
        for job_id in (first, second, third):
            await repo.fail_job(session, job_id=job_id, error="for the test")
        await repo.note_delivery_failure(session, job_id=first, error="503", retry_in=3600)
        await repo.note_delivery_failure(session, job_id=second, error="503", retry_in=0)
    async with sessionmaker() as session:
        due = [job.id for job in await repo.list_undelivered_jobs(session)]
    assert due == [third, second]  # never tried first; `first` waits an hour
    async with sessionmaker.begin() as session:
        gone = await repo.note_delivery_failure(session, job_id=second, error="DMs closed", retry_in=None)
        await repo.mark_delivered(session, job_id=third)
    assert (gone.delivery, gone.delivery_attempts, gone.delivery_error) == (Delivery.UNDELIVERABLE, 2, "DMs closed")
    async with sessionmaker() as session:
        assert await repo.list_undelivered_jobs(session) == []
        third_job = await repo.get_job(session, job_id=third)
    assert (third_job.delivery, third_job.delivery_attempts) == (Delivery.DELIVERED, 1)


async def test_a_favourite_taken_away_and_a_web_jobs_settling(sessionmaker):
    job_id = await new_job(sessionmaker)
    async with sessionmaker.begin() as session:
        await repo.record_images(session, job_id=job_id, images=images_for(job_id))
        image_id = (await repo.get_job(session, job_id=job_id)).images[0].id
        assert await repo.add_favourite(session, user_id=9, image_id=image_id) is True
    async with sessionmaker.begin() as session:
        assert await repo.remove_favourite(session, user_id=9, image_id=image_id) is True
        assert await repo.remove_favourite(session, user_id=9, image_id=image_id) is False
    # a web job (no channel) finished but left pending by a kill is settled; a Discord job is not
    web_done, discord_done, web_queued = (await new_job(sessionmaker), await new_job(sessionmaker, channel_id=5),
                                          await new_job(sessionmaker))
    async with sessionmaker.begin() as session:
        for job in (web_done, discord_done):
            await repo.record_images(session, job_id=job, images=images_for(job))
        assert await repo.settle_web_jobs(session) == 2  # web_done and the first job above
    async with sessionmaker() as session:
        deliveries = {job: (await repo.get_job(session, job_id=job)).delivery.value
                      for job in (web_done, discord_done, web_queued)}
    assert deliveries == {web_done: "delivered", discord_done: "pending", web_queued: "pending"}


async def test_a_gallery_lists_the_web_jobs_and_the_channels_given_newest_first(sessionmaker):
    jobs = {name: await new_job(sessionmaker, prompt=name, guild_id=7, channel_id=channel)
            for name, channel in (("web", None), ("seen", 10), ("hidden", 11))}
    other_server = await new_job(sessionmaker, prompt="elsewhere", guild_id=8)
    async with sessionmaker.begin() as session:
        for job in [*jobs.values(), other_server]:
            await repo.record_images(session, job_id=job, images=images_for(job, 2))
    async with sessionmaker() as session:
        pictures = await repo.list_guild_pictures(session, guild_id=7, channel_ids=[10])
        assert [(p.prompt, p.index) for p in pictures] == [("seen", 0), ("seen", 1), ("web", 0), ("web", 1)]
        assert [p.prompt for p in await repo.list_guild_pictures(session, guild_id=7, channel_ids=[10],
                                                                 limit=1, offset=2)] == ["web"]
