"""/fast /relax /turbo, /info and /cancel: a user's view of the queue."""

from __future__ import annotations

from storage import repository as repo
from storage.models import JobState, QueueMode

OWNER = 4242


async def test_relax_becomes_the_default_mode_and_a_prompt_flag_still_wins(harness):
    assert (await harness.ephemeral_text(harness.command("relax", OWNER))).startswith("Relax: ")
    async with harness.bot.sessionmaker() as session:
        assert (await repo.ensure_user(session, user_id=OWNER)).default_mode == QueueMode.RELAX

    relaxed = await harness.result(harness.command("imagine", OWNER, prompt="a red star"))
    assert relaxed.content.endswith("(relaxed)")
    fast = await harness.result(harness.command("imagine", OWNER, prompt="a red star --fast"))
    assert fast.content == "**a red star --fast** - <@4242> (fast)"


async def test_info_shows_running_and_queued_jobs_and_cancel_stops_them(harness, gate):
    token = harness.command("imagine", OWNER, prompt="a {red, blue, green} circle")
    await harness.discord.wait_for(lambda: len([r for r in harness.of(token) if r.method == "POST"]) >= 3)
    async with harness.bot.sessionmaker() as session:
        first, second, third = [job.id for job in await repo.list_unfinished_jobs_of(session, user_id=OWNER)]
    await harness.discord.wait_for(lambda: harness.bot.jobs.scheduler.is_running(first))

    info = await harness.ephemeral_reply(harness.command("info", OWNER))
    fields = {field["name"]: field["value"] for field in info.json["data"]["embeds"][0]["fields"]}
    assert fields["Running (1)"] == f"`{first}` a red circle"
    assert fields["Queued (2)"].splitlines() == [f"`{second}` a blue circle (1 in the queue)",
                                                 f"`{third}` a green circle (2 in the queue)"]
    assert fields["Mode"].startswith("Fast")

    newest = await harness.ephemeral_text(harness.command("cancel", OWNER))
    assert newest == f"Cancelled job `{third}` (a green circle): it will not run."
    running = await harness.ephemeral_text(harness.command("cancel", OWNER, option_types={"job": 4}, job=first))
    assert running == f"Cancelled job `{first}` (a red circle): it stops at its next step."
    unknown = await harness.ephemeral_text(harness.command("cancel", 999, option_types={"job": 4}, job=first))
    assert unknown == "You have no queued or running jobs."
    gate.set()

    await harness.discord.wait_for(lambda: [r for r in harness.of(token) if r.files and r.method == "POST"])
    states = []
    for job_id in (first, second, third):
        states.append((await harness.job(job_id)).state)
    assert states == [JobState.CANCELLED, JobState.DONE, JobState.CANCELLED]
    edits = [r.content for r in harness.discord.requests if r.method == "PATCH" and r.content]
    assert "**a green circle** - <@4242> (cancelled) (fast)" in edits
