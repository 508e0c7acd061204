"""Pictures in, pictures out, through Discord: image prompts, /blend, zoom, pan, square, Vary (Region)."""

from __future__ import annotations

from helpers.discord_harness import drawn_png, form_inputs, image_of
from PIL import Image

from storage import repository as repo
from storage.models import JobKind, JobState

OWNER = 4242


async def test_an_attached_picture_is_an_image_prompt_kept_with_the_job(harness):
    green = drawn_png("square", "green")
    token = harness.command("imagine", OWNER, prompt="a circle --iw 3", files={"image": ("green.png", green)})
    result = await harness.result(token)
    job = await harness.job(1)
    assert harness.discord.downloads == ["green.png"]
    (name,) = job.request["options"]["inputs"]
    assert harness.bot.store.input_path(name).exists()  # kept: a restart runs it again without fetching
    assert job.request["image_urls"][0].endswith("/attachments/green.png")
    assert result.content.startswith("**") and result.content.endswith("- <@4242> (fast)")
    assert job.state == JobState.DONE and len(job.images) == 4


async def test_a_link_that_is_not_a_picture_is_refused_privately_and_nothing_is_queued(harness):
    harness.discord.attachments["page.png"] = b"<html>not a picture</html>"
    link = f"{harness.discord.base_url}/attachments/page.png"
    text = await harness.ephemeral_text(harness.command("imagine", OWNER, prompt=f"{link} a red circle"))
    assert text == "❌ the picture: that is not a picture in a format this bot reads (PNG, JPEG, WEBP, GIF)"
    async with harness.bot.sessionmaker() as session:
        assert await repo.list_history(session, user_id=OWNER) == []


async def test_permutations_with_different_image_links_are_refused_before_anything_is_fetched(harness):
    base = f"{harness.discord.base_url}/attachments"
    harness.discord.attachments["red.png"] = drawn_png("circle", "red")
    token = harness.command("imagine", OWNER, prompt=f"{{{base}/red.png, {base}/red.png {base}/red.png}} a cat")
    text = await harness.ephemeral_text(token)
    assert text == ("❌ every job of a {permutation} needs the same image links: put the links outside the braces")
    assert harness.discord.downloads == []


async def test_an_attachment_over_the_size_limit_is_refused_before_it_is_downloaded(harness):
    token = harness.command("imagine", OWNER, prompt="a red circle",
                            files={"image": ("huge.png", b"\0" * (10 * 1024 * 1024 + 1))})
    assert await harness.ephemeral_text(token) == "❌ the picture is larger than 10 MiB"
    assert harness.discord.downloads == []  # refused on its declared size, never fetched
    async with harness.bot.sessionmaker() as session:
        assert await repo.list_history(session, user_id=OWNER) == []


async def test_blend_mixes_the_attached_pictures_into_a_grid(harness):
    token = harness.command("blend", OWNER, dimensions="landscape", files={
        "image1": ("red.png", drawn_png("circle", "red")), "image2": ("blue.png", drawn_png("square", "blue"))})
    result = await harness.result(token)
    assert result.content == "**blend of 2 pictures --ar 3:2** - Blend of 2 pictures by <@4242> (fast)"
    grid = image_of(result)
    assert grid.width > grid.height
    job = await harness.job(1)
    assert job.kind == JobKind.BLEND and len(job.request["options"]["inputs"]) == 2


async def test_zoom_pan_square_and_region_from_one_picture(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="two yellow stars on a blue background --ar 16:9"))
    single = await harness.result(harness.press(harness.message_of_job(1), "job:u:1:0", OWNER))
    assert {f"job:{a}:1:0" for a in ("z2", "z15", "zc", "pl", "pr", "pu", "pd", "sq", "rg")} <= set(
        single.custom_ids())
    single_id = next(i for i, m in harness.discord.messages.items() if "job:z2:1:0" in str(m["components"]))

    zoomed = await harness.result(harness.press(single_id, "job:z2:1:0", OWNER))
    assert "Zoom Out (2x) by <@4242>" in zoomed.content
    panned = await harness.result(harness.press(single_id, "job:pr:1:0", OWNER))
    assert "Pan Right by <@4242>" in panned.content
    pan_job = await harness.job(3)
    with Image.open(pan_job.images[0].path) as picture:
        assert picture.size == (112, 48)  # 80×48 grown to the right by 30 % (24 px, rounded to 32)
    squared = await harness.result(harness.press(single_id, "job:sq:1:0", OWNER))
    assert "Make Square by" in squared.content
    with Image.open((await harness.job(4)).images[0].path) as picture:
        assert picture.size == (80, 80)

    form = await harness.form(harness.press(single_id, "job:rg:1:0", OWNER))
    region_input, prompt_input = form_inputs(form)
    bad = harness.submit_form(form["custom_id"], {region_input: "middle-ish", prompt_input: "a red star"}, OWNER)
    assert "the region is a name" in await harness.ephemeral_text(bad)
    form = await harness.form(harness.press(single_id, "job:rg:1:0", OWNER))
    region_input, prompt_input = form_inputs(form)
    good = harness.submit_form(form["custom_id"], {region_input: "center",
                                                   prompt_input: "a red star on a blue background"}, OWNER)
    repainted = await harness.result(good)
    assert repainted.content == "**a red star on a blue background** - Variations (Region) by <@4242> (fast)"
    region = await harness.job(5)
    assert (region.kind, region.parent_id, region.request["options"]["box"]) == (
        JobKind.REGION, 1, [0.25, 0.25, 0.75, 0.75])


async def test_custom_zoom_asks_for_a_factor_between_1_and_2(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="a red circle"))
    single = await harness.result(harness.press(harness.message_of_job(1), "job:u:1:2", OWNER))
    assert "job:sq:1:2" not in single.custom_ids()  # already square
    single_id = next(i for i, m in harness.discord.messages.items() if "job:zc:1:2" in str(m["components"]))
    form = await harness.form(harness.press(single_id, "job:zc:1:2", OWNER))
    (factor,) = form_inputs(form)
    wrong = harness.submit_form(form["custom_id"], {factor: "3"}, OWNER)
    assert await harness.ephemeral_text(wrong) == "❌ The zoom factor is a number from 1 to 2, like 1.5."
    form = await harness.form(harness.press(single_id, "job:zc:1:2", OWNER))
    zoomed = await harness.result(harness.submit_form(form["custom_id"], {form_inputs(form)[0]: "1.25x"}, OWNER))
    assert "Zoom Out (1.25x) by <@4242>" in zoomed.content
