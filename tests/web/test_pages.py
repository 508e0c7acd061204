"""The web app as a user meets it in a browser: create, watch, the grid and its buttons, a
region drawn with the mouse, My pictures. Run on the web app alone (no Discord token)."""

from __future__ import annotations

import io
import re

import aiohttp
from helpers.discord_harness import drawn_png
from helpers.web_pages import imagine
from PIL import Image
from playwright.async_api import Page, expect

from generation.builtin.analysis import background_colour, fill_colour
from storage.models import Delivery, JobKind, JobState

# Records every text the progress line shows, for the test to read after the page swapped it out.
WATCH_PROGRESS = """
window.seen = [];
new MutationObserver(() => {
  const text = document.getElementById("progress-text");
  if (text && window.seen[window.seen.length - 1] !== text.textContent) window.seen.push(text.textContent);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


async def shown(page: Page, selector: str) -> Image.Image:
    """A picture as the browser shows it (a screenshot of its element, at its natural size)."""
    element = page.locator(selector)
    await expect(element).to_be_visible()
    await page.wait_for_function("(img) => img.complete && img.naturalWidth > 0", arg=await element.element_handle())
    return Image.open(io.BytesIO(await element.screenshot())).convert("RGB")


async def test_a_prompt_shows_its_progress_live_then_its_grid_of_four(web, page):
    await page.add_init_script(WATCH_PROGRESS)
    web.held.clear()  # the job waits at its start, so the page is up before it moves
    job_id = await imagine(page, web.url, "a red circle on a blue background")
    await expect(page.locator("#progress-bar")).to_be_visible()
    web.held.set()
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    percents = [int(text[:-1]) for text in await page.evaluate("window.seen") if text.endswith("%")]
    assert percents[-1] == 100 and len(set(percents)) >= 4 and percents == sorted(percents), percents
    assert "Reload" not in await page.title()
    for number in range(4):
        picture = await shown(page, f".grid figure:nth-child({number + 1}) img")
        assert (fill_colour(picture), background_colour(picture)) == ("red", "blue")
    job = await web.settled(job_id)
    assert (job.state, job.delivery, job.user_id, len(job.images)) == (JobState.DONE, Delivery.DELIVERED, 1, 4)
    thumb = await page.request.get(f"{web.url}/images/{job.images[0].id}/thumb.webp")
    assert thumb.headers["content-type"] == "image/webp"
    full = await page.request.get(f"{web.url}/images/{job.images[0].id}/full.png")
    assert Image.open(io.BytesIO(await full.body())).info["parameters"].startswith("a red circle on a blue background")


async def test_v2_makes_four_variations_of_the_second_picture(web, page):
    parent_id = await imagine(page, web.url, "a green square on a white background --seed 3")
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    await page.click("button:text-is('V2')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    child_id = int(page.url.rsplit("/", 1)[1])
    assert child_id != parent_id
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    child = await web.settled(child_id)
    assert (child.kind, child.parent_id, child.request["options"]["source_index"]) == (JobKind.VARIATION, parent_id, 1)
    for number in range(4):
        picture = await shown(page, f".grid figure:nth-child({number + 1}) img")
        assert (fill_colour(picture), background_colour(picture)) == ("green", "white")


async def test_a_region_drawn_with_the_mouse_is_the_region_painted_again(web, page):
    parent_id = await imagine(page, web.url, "a red circle on a white background --seed 4")
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    await page.click("a:text-is('U3')")
    await page.wait_for_url(re.compile(rf"/jobs/{parent_id}/2$"))
    send = page.locator("#region-send")
    await expect(send).to_be_disabled()  # nothing drawn yet
    box = await page.locator("#picture").bounding_box()
    await page.mouse.move(box["x"] + box["width"] * 0.10, box["y"] + box["height"] * 0.20)
    await page.mouse.down()
    await page.mouse.move(box["x"] + box["width"] * 0.30, box["y"] + box["height"] * 0.40, steps=5)
    await page.mouse.move(box["x"] + box["width"] * 0.60, box["y"] + box["height"] * 0.70, steps=5)
    await page.mouse.up()
    await expect(page.locator("#region")).to_be_visible()
    await page.fill("#region-form textarea", "a blue circle on a white background --seed 4")
    await send.click()
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    child = await web.settled(int(page.url.rsplit("/", 1)[1]))
    assert (child.state, child.kind, child.parent_id, child.prompt) == (JobState.DONE, JobKind.REGION, parent_id,
                                                          "a blue circle on a white background --seed 4")
    left, top, right, bottom = child.request["options"]["box"]
    assert abs(left - 0.10) < 0.02 and abs(top - 0.20) < 0.02 and abs(right - 0.60) < 0.02 and abs(bottom - 0.70) < 0.02
    await expect(page.locator(".grid img")).to_have_count(4)
    picture = await shown(page, ".grid figure:nth-child(1) img")
    left_px, top_px = round(picture.width * 0.35), round(picture.height * 0.45)
    assert picture.getpixel((left_px, top_px))[2] > 150  # blue inside the region now


async def test_my_pictures_finds_jobs_by_the_words_of_their_prompt(web, page):
    job_ids = [await imagine(page, web.url, prompt) for prompt in (
        "a red circle on a white background", "a blue square on a black background",
        "a red triangle on a white background")]
    await page.goto(web.url + "/me")
    await expect(page.locator(".history li")).to_have_count(3)
    await page.fill("input[name=q]", "RED")
    await page.click("button:text-is('Search')")
    items = page.locator(".history li .prompt-text")
    await expect(items).to_have_count(2)
    assert await items.all_inner_texts() == ["a red triangle on a white background",
                                             "a red circle on a white background"]
    await page.fill("input[name=q]", "100%_")  # LIKE's wildcards are taken as the letters they are
    await page.click("button:text-is('Search')")
    await expect(page.locator(".history li")).to_have_count(0)
    await expect(page.locator(".message")).to_have_text("Nothing matches that search.")
    for job_id in job_ids:
        await web.settled(job_id)


async def test_a_mistake_in_the_prompt_is_shown_as_the_bot_words_it_and_nothing_is_queued(web, page):
    await page.goto(web.url + "/")
    await page.fill("#prompt", "a cat --ar 99:1")
    await page.click("button:text-is('Imagine')")
    await expect(page.locator(".error")).to_have_text("❌ --ar 99:1 is too wide: the ratio must be between 1:4 and 4:1")
    await expect(page.locator("#prompt")).to_have_value("a cat --ar 99:1")  # kept, to fix
    assert await web.jobs() == []


async def test_every_button_of_a_picture_starts_its_job_and_the_picture_page_says_how_it_was_made(web, page):
    parent_id = await imagine(page, web.url, "a red square on a white background --ar 3:2 --seed 11")
    await expect(page.locator(".grid img")).to_have_count(4, timeout=120_000)
    parent = await web.settled(parent_id)
    await page.goto(f"{web.url}/jobs/{parent_id}/1")
    await expect(page.locator("#a1111")).to_contain_text(f"Seed: {parent.images[1].seed}")
    await expect(page.locator("#prompt-value")).to_have_text("a red square on a white background --ar 3:2 --seed 11")
    await expect(page.locator(".parameters")).to_contain_text(str(parent.images[1].seed))
    presses = {"Upscale (Subtle)": (JobKind.UPSCALE, "upscale_mode", "subtle"),
               "Vary (Strong)": (JobKind.VARIATION, "variability", "strong"),
               "Zoom Out 1.5x": (JobKind.ZOOM, "factor", 1.5), "Make Square": (JobKind.SQUARE, None, None),
               "⬅️ Pan": (JobKind.PAN, "direction", "left")}
    made = []
    for label, (kind, option, value) in presses.items():
        await page.goto(f"{web.url}/jobs/{parent_id}/1")
        await page.click(f"button:text-is('{label}')")
        await page.wait_for_url(re.compile(r"/jobs/\d+$"))
        child = await web.job(int(page.url.rsplit("/", 1)[1]))
        assert (child.kind, child.parent_id, child.request["options"]["source_index"]) == (kind, parent_id, 1), label
        if option is not None:
            assert child.request["options"][option] == value, label
        made.append(child.id)
    await page.goto(f"{web.url}/jobs/{parent_id}")
    await page.click("button[title=Reroll]")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    reroll = await web.job(int(page.url.rsplit("/", 1)[1]))
    assert (reroll.kind, reroll.parent_id, reroll.prompt) == (JobKind.REROLL, parent_id, parent.prompt)
    made.append(reroll.id)

    await page.goto(f"{web.url}/jobs/{parent_id}/1")
    await page.click("button:text-is('❤️ Favourite')")
    await expect(page.locator(".notice")).to_have_text("❤️ Added to your favourites.")
    await page.goto(web.url + "/me/favourites")
    await expect(page.locator(".gallery a")).to_have_attribute("href", f"/jobs/{parent_id}/1")
    for job_id in made:
        assert (await web.settled(job_id)).state == JobState.DONE


async def test_a_blend_of_two_uploaded_pictures_and_an_image_prompt_by_upload(web, page, tmp_path):
    red, blue = tmp_path / "red.png", tmp_path / "blue.png"
    red.write_bytes(drawn_png("circle", "red"))
    blue.write_bytes(drawn_png("square", "blue"))
    await page.goto(web.url + "/")
    await page.set_input_files("#blend input[type=file]", [str(red), str(blue)])
    await page.select_option("#blend select", "landscape")
    await page.click("button:text-is('Blend')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    blend = await web.settled(int(page.url.rsplit("/", 1)[1]))
    assert (blend.kind, blend.state, len(blend.request["options"]["inputs"])) == (JobKind.BLEND, JobState.DONE, 2)
    assert blend.prompt == "blend of 2 pictures --ar 3:2" and blend.images[0].width > blend.images[0].height

    await page.goto(web.url + "/")
    await page.set_input_files(".prompt-form input[type=file]", [str(red), str(blue), str(red), str(blue),
                                                                 str(red), str(blue)])
    await page.fill("#prompt", "a circle")
    await page.click("button:text-is('Imagine')")
    await expect(page.locator(".message")).to_have_text(  # six pictures: refused, in words
        "That form holds more than it takes: at most 5 pictures and 20 fields, each of at most 64 KiB.")
    await page.goto(web.url + "/")
    await page.set_input_files(".prompt-form input[type=file]", [str(red)])
    await page.fill("#prompt", "a circle --iw 2")
    await page.click("button:text-is('Imagine')")
    await page.wait_for_url(re.compile(r"/jobs/\d+$"))
    prompted = await web.settled(int(page.url.rsplit("/", 1)[1]))
    assert prompted.state == JobState.DONE and prompted.request["image_urls"][0].startswith(f"{web.url}/inputs/")
    async with aiohttp.ClientSession() as client, client.get(prompted.request["image_urls"][0]) as response:
        assert response.status == 200 and await response.read() == red.read_bytes()
