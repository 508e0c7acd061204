"""Follow-ups keep what they were made from: every button on an image-prompt grid and on a
/blend grid works, 🔄 blends the same pictures again, and Remix keeps (or drops) the links."""

from __future__ import annotations

import numpy as np
from helpers.discord_harness import drawn_png, form_inputs, image_of
from PIL import Image

from storage import repository as repo
from storage.models import JobKind, JobState, QueueMode
from storage.repository import NewJob

OWNER = 4242


def share(picture: Image.Image, colour: str) -> float:
    """The fraction of a picture's pixels that are clearly `colour` (red, green or blue)."""
    pixels = np.asarray(picture.convert("RGB"), dtype=np.int16)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    strong = {"red": (r > 140) & (g < 110) & (b < 110), "green": (g > 110) & (r < 110) & (b < 110),
              "blue": (b > 140) & (r < 110) & (g < 130)}[colour]
    return float(strong.mean())


def message_with(harness, custom_id: str) -> str:
    return next(i for i, m in harness.discord.messages.items() if f'"{custom_id}"' in str(m["components"])
                .replace("'", '"'))


async def test_every_button_on_an_image_prompt_grid_works_and_keeps_its_pictures(harness):
    token = harness.command("imagine", OWNER, prompt="a green square --iw 3 --ar 3:2",
                            files={"image": ("green.png", drawn_png("square", "green"))})
    await harness.result(token)
    grid = await harness.job(1)
    inputs = grid.request["options"]["inputs"]
    grid_message = harness.message_of_job(1)

    rerolled = image_of(await harness.result(harness.press(grid_message, "job:r:1", OWNER)))
    assert share(rerolled, "green") > 0.05  # made again from the image prompt, not from words alone
    await harness.result(harness.press(grid_message, "job:v:1:1", OWNER))
    await harness.result(harness.press(grid_message, "job:u:1:0", OWNER))
    single = message_with(harness, "job:vs:1:0")
    for action in ("vs", "vx", "us", "z2", "pl", "sq"):
        await harness.result(harness.press(single, f"job:{action}:1:0", OWNER))
    form = await harness.form(harness.press(single, "job:rg:1:0", OWNER))
    region_input, prompt_input = form_inputs(form)
    prompt_default = next(c for row in form["components"] for c in row["components"]
                          if c["custom_id"] == prompt_input)["value"]
    assert prompt_default == grid.prompt and "/attachments/green.png" in prompt_default  # the link, kept
    await harness.result(harness.submit_form(form["custom_id"], {region_input: "center",
                                                                 prompt_input: prompt_default}, OWNER))

    async with harness.bot.sessionmaker() as session:
        made = [job for job in await repo.list_history(session, user_id=OWNER, limit=20) if job.id != 1]
    assert sorted(job.kind for job in made) == sorted([
        JobKind.REROLL, JobKind.VARIATION, JobKind.VARIATION, JobKind.VARIATION, JobKind.UPSCALE, JobKind.ZOOM,
        JobKind.PAN, JobKind.SQUARE, JobKind.REGION])
    for job in made:
        assert job.state == JobState.DONE, (job.kind, job.error)
        assert job.request["options"]["inputs"] == inputs  # what the grid was made from goes along
        assert job.request["image_urls"] == grid.request["image_urls"]
        assert job.parent_id == 1


async def test_a_new_link_in_a_remix_is_refused_and_dropping_the_link_drops_its_picture(harness):
    token = harness.command("imagine", OWNER, prompt="a green square", files={
        "image": ("green.png", drawn_png("square", "green"))})
    await harness.result(token)
    link = (await harness.job(1)).request["image_urls"][0]
    async with harness.bot.sessionmaker.begin() as session:
        await repo.set_user_settings(session, user_id=OWNER, remix=True)

    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    (prompt_input,) = form_inputs(form)
    other = f"{harness.discord.base_url}/attachments/other.png"
    refused = harness.submit_form(form["custom_id"], {prompt_input: f"{other} a green square"}, OWNER)
    assert "takes no new links" in await harness.ephemeral_text(refused)
    assert harness.discord.downloads == ["green.png"]  # the new link was never fetched

    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    result = await harness.result(harness.submit_form(form["custom_id"], {prompt_input: "a red circle"}, OWNER))
    assert result.content.startswith("**a red circle** - <@4242>")
    remixed = await harness.job(2)
    assert remixed.state == JobState.DONE and remixed.request["image_urls"] == []
    assert "inputs" not in remixed.request.get("options", {})  # the picture went with its link

    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    kept = await harness.result(harness.submit_form(form["custom_id"], {prompt_input: f"{link} a blue star"},
                                                    OWNER))
    assert "a blue star" in kept.content
    assert (await harness.job(3)).request["options"]["inputs"] == (await harness.job(1)).request["options"]["inputs"]


async def test_reroll_on_a_blend_blends_the_same_pictures_again(harness):
    token = harness.command("blend", OWNER, files={
        "image1": ("red.png", drawn_png("circle", "red")), "image2": ("blue.png", drawn_png("square", "blue"))})
    first = image_of(await harness.result(token))
    blend = await harness.job(1)

    again = await harness.result(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    assert again.content == "**blend of 2 pictures --ar 1:1** - Blend of 2 pictures by <@4242> (fast)"
    rerolled = await harness.job(2)
    assert (rerolled.kind, rerolled.parent_id) == (JobKind.BLEND, 1)
    assert rerolled.request["options"]["inputs"] == blend.request["options"]["inputs"]
    assert rerolled.seed != blend.seed
    picture = image_of(again)
    assert np.abs(np.asarray(picture, dtype=np.int16) - np.asarray(first, dtype=np.int16)).mean() > 1  # new seed
    # the same pictures blended: a /blend of the first blend's kept pictures with the reroll's seed makes
    # exactly its pictures (a reroll that lost the inputs would be a grid from no words at all)
    (control,) = await harness.bot.jobs.submit(user_id=OWNER, mode=QueueMode.FAST, jobs=[
        NewJob(JobKind.BLEND, blend.request, prompt=blend.prompt, seed=rerolled.seed)])
    control_job = await harness.job_when(control, lambda job: job.state == JobState.DONE, timeout=120)
    assert [image.sha256 for image in control_job.images] == [image.sha256 for image in rerolled.images]

    await harness.result(harness.press(harness.message_of_job(1), "job:v:1:2", OWNER))
    await harness.result(harness.press(harness.message_of_job(1), "job:u:1:3", OWNER))
    await harness.result(harness.press(message_with(harness, "job:z15:1:3"), "job:z15:1:3", OWNER))
    async with harness.bot.sessionmaker() as session:
        jobs = await repo.list_history(session, user_id=OWNER, limit=10)
    assert [(job.kind, job.state) for job in jobs[:2]] == [(JobKind.ZOOM, JobState.DONE),
                                                          (JobKind.VARIATION, JobState.DONE)]


async def test_remix_of_a_blend_may_be_left_empty_or_steer_it_with_words(harness):
    token = harness.command("blend", OWNER, dimensions="portrait", files={
        "image1": ("red.png", drawn_png("circle", "red")), "image2": ("blue.png", drawn_png("square", "blue"))})
    await harness.result(token)
    async with harness.bot.sessionmaker.begin() as session:
        await repo.set_user_settings(session, user_id=OWNER, remix=True)

    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    (prompt_input,) = form_inputs(form)
    field = form["components"][0]["components"][0]
    assert field.get("value", "") == "" and field["required"] is False  # the blend had no words
    same = await harness.result(harness.submit_form(form["custom_id"], {prompt_input: ""}, OWNER))
    assert same.content.startswith("**blend of 2 pictures --ar 2:3** - Blend of 2 pictures")

    form = await harness.form(harness.press(harness.message_of_job(1), "job:r:1", OWNER))
    steered = await harness.result(harness.submit_form(form["custom_id"], {prompt_input: "a yellow star --ar 2:3"},
                                                       OWNER))
    assert steered.content.startswith("**a yellow star --ar 2:3** - Blend of 2 pictures")
    job = await harness.job(3)
    assert job.kind == JobKind.BLEND and job.state == JobState.DONE
    assert job.request["options"]["inputs"] == (await harness.job(1)).request["options"]["inputs"]
    assert image_of(steered).height > image_of(steered).width
