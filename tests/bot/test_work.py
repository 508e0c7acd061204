"""Stored jobs run on the real engine (built-in model) through the JobRunner, as the bot runs them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bot.jobs import JobFinished, JobProgress, JobRunner
from bot.work import engine_work
from generation.builtin.analysis import background_colour, dominant_colour
from generation.executor import LocalExecutor
from storage import repository as repo
from storage.images import ImageStore, read_parameters
from storage.job_requests import imagine_job, reroll_job, upscale_job, variation_job
from storage.models import JobKind, JobState, QueueMode


@pytest.fixture
async def runner(sessionmaker, engine, tmp_path):
    executor = LocalExecutor()
    store = ImageStore(tmp_path / "images")
    runner = JobRunner(sessionmaker, store, executor, engine_work(engine, store))
    await runner.start()
    yield runner
    await runner.close()
    await executor.close()


async def run_to_end(runner: JobRunner, sessionmaker, new_job):
    (job_id,) = await runner.submit(user_id=7, mode=QueueMode.FAST, jobs=[new_job])
    events = [event async for event in runner.events(job_id)]
    async with sessionmaker() as session:
        job = await repo.get_job(session, job_id=job_id)
    return job, events


def new_imagine(request, prompt):
    return imagine_job(request.to_dict(), prompt, request.params.seed)


def pixels(path: str) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


async def test_imagine_then_vary_upscale_and_reroll_from_the_stored_pictures(runner, sessionmaker, request_for):
    prompt = "a red circle --seed 42"  # the background is left to the seed
    job, events = await run_to_end(runner, sessionmaker, new_imagine(request_for(prompt), prompt))

    finished = events[-1]
    assert isinstance(finished, JobFinished) and (finished.state, finished.model) == (JobState.DONE, "builtin")
    assert finished.gpu_seconds == job.gpu_seconds > 0
    assert [e.progress.percent for e in events if isinstance(e, JobProgress)][-1] == 100
    assert [(image.index, image.seed, image.width, image.height) for image in job.images] == [
        (0, 42, 64, 64), (1, 43, 64, 64), (2, 44, 64, 64), (3, 45, 64, 64)]
    assert read_parameters(job.images[1].path).startswith("a red circle\n")
    assert "Seed: 43" in read_parameters(job.images[1].path)
    assert [dominant_colour(Image.open(image.path)) for image in job.images].count("red") >= 3

    variation, _ = await run_to_end(runner, sessionmaker, variation_job(job, 1, "subtle"))
    assert (variation.kind, variation.parent_id, variation.state) == (JobKind.VARIATION, job.id, JobState.DONE)
    assert len(variation.images) == 4
    source = pixels(job.images[1].path)
    closeness = [np.abs(pixels(image.path) - source).mean() for image in variation.images]
    strangers = [np.abs(pixels(image.path) - source).mean() for image in job.images if image.index != 1]
    # variations of picture 2 look like it, clearly more than its siblings from the same prompt do
    assert np.mean(closeness) < 0.75 * np.mean(strangers)
    backgrounds = {background_colour(Image.open(image.path)) for image in variation.images}
    assert backgrounds == {background_colour(Image.open(job.images[1].path))}

    upscale, _ = await run_to_end(runner, sessionmaker, upscale_job(job, 2, "subtle"))
    assert [(image.width, image.height, image.seed) for image in upscale.images] == [(128, 128, 44)]

    reroll, _ = await run_to_end(runner, sessionmaker, reroll_job(job))
    assert reroll.state == JobState.DONE and reroll.seed != job.seed
    assert [image.seed for image in reroll.images] == [reroll.seed + k for k in range(4)]


async def test_a_job_the_engine_cannot_run_fails_with_a_message_and_the_queue_goes_on(
        runner, sessionmaker, request_for):
    prompt = "a blue square"
    job, _ = await run_to_end(runner, sessionmaker, new_imagine(request_for(prompt), prompt))
    for image in job.images:  # the parent's pictures vanished from disk
        Path(image.path).unlink()
    failed, events = await run_to_end(runner, sessionmaker, variation_job(job, 0, "strong"))
    assert failed.state == JobState.FAILED
    assert "the picture this job starts from (job" in failed.error and "is gone" in failed.error
    assert events[-1].state == JobState.FAILED

    after, _ = await run_to_end(runner, sessionmaker, new_imagine(request_for(prompt), prompt))
    assert after.state == JobState.DONE and len(after.images) == 4


async def test_the_runner_queues_each_job_with_its_model_and_prefers_the_loaded_one(sessionmaker, engine, tmp_path,
                                                                                     request_for):
    """What the scheduler sees: each stored request's model (None for one config.toml no longer has),
    and the engine's loaded models (here said to be "builtin"); nothing is started."""
    from dataclasses import replace

    from bot.work import model_of_request

    store = ImageStore(tmp_path / "images")
    runner = JobRunner(sessionmaker, store, LocalExecutor(), engine_work(engine, store),
                       model_of=model_of_request(engine), loaded_models=lambda: ("builtin",))
    request = request_for("a red circle --steps 2")
    retired = replace(request, params=replace(request.params, version="retired"))
    await runner.submit(user_id=7, mode=QueueMode.FAST, jobs=[new_imagine(retired, "a red circle --v retired")])
    await runner.submit(user_id=8, mode=QueueMode.FAST, jobs=[new_imagine(request, "a red circle")])
    assert [job.model for job in runner.scheduler.order()] == [None, "builtin"]
    assert runner.scheduler.take_next(runner.loaded_models()).user_id == 8  # the loaded model first
    await runner.executor.close()
