"""/history: newest first, paged, filtered; a job brought back works like the original."""

from __future__ import annotations

from helpers.discord_harness import component, image_of

from storage import repository as repo
from storage.models import JobKind, QueueMode

OWNER = 4242


async def test_history_pages_filters_and_brings_a_job_back(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="a yellow star --seed 3"))
    async with harness.bot.sessionmaker.begin() as session:
        for number in range(6):
            job = await repo.enqueue_job(session, kind=JobKind.IMAGINE, user_id=OWNER, mode=QueueMode.FAST,
                                         request={"segments": [{"text": f"a cat {number}", "weight": 1}]},
                                         prompt=f"a cat {number}", seed=number)
            await repo.fail_job(session, job_id=job.id, error="for the test")

    token = harness.command("history", OWNER)
    reply = await harness.ephemeral_reply(token)
    embed = reply.json["data"]["embeds"][0]
    assert [field["name"] for field in embed["fields"]] == [f"`{n}` imagine · failed" for n in (7, 6, 5, 4, 3)]
    assert embed["fields"][0]["value"].startswith("a cat 5\n<t:")
    message = harness.response_message(token)
    assert component(message, "Previous")["disabled"] and not component(message, "Next")["disabled"]
    assert component(message, "Bring one back with its buttons")["disabled"]  # nothing finished on page 1

    press = harness.press(message["id"], component(message, "Next")["custom_id"], OWNER)
    turned = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(press) if r.method == "PATCH"), None))
    assert harness.of(press)[0].json["type"] == 6  # acknowledged first, the page edited in place after
    assert harness.response_message(press)["id"] == message["id"]
    page_two = turned.json
    assert [field["name"] for field in page_two["embeds"][0]["fields"]] == ["`2` imagine · failed", "`1` imagine"]
    assert page_two["embeds"][0]["footer"]["text"] == "Page 2"
    select = component(page_two, "Bring one back with its buttons")
    assert [option["value"] for option in select["options"]] == ["1"]

    shown = await harness.result(harness.press(message["id"], select["custom_id"], OWNER, values=["1"]))
    assert shown.content == "**a yellow star --seed 3** - <@4242> (fast)"
    assert image_of(shown).size == (128, 128)
    assert shown.custom_ids()[:5] == ["job:u:1:0", "job:u:1:1", "job:u:1:2", "job:u:1:3", "job:r:1"]

    filtered = await harness.ephemeral_reply(harness.command("history", OWNER, text="STAR"))
    assert [field["name"] for field in filtered.json["data"]["embeds"][0]["fields"]] == ["`1` imagine"]
    nobody = await harness.ephemeral_reply(harness.command("history", 999))
    assert nobody.json["data"]["embeds"][0]["description"] == "Nothing here yet."


async def test_favourites_list_the_hearted_pictures_and_bring_one_back(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="a red star --seed 5 --steps 6"))
    grid_id = harness.message_of_job(1)
    await harness.result(harness.press(grid_id, "job:u:1:1", OWNER))
    single = next(i for i, m in harness.discord.messages.items() if "job:fav:1:1" in str(m["components"]))
    heart = harness.press(single, "job:fav:1:1", OWNER)
    said = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(heart) if r.method == "POST" and r.accepted and r.content), None))
    assert said.content == "❤️ Added to your favourites." and harness.discord.is_ephemeral(said.message_id)

    def listing_of(token: str):
        return harness.discord.wait_for(lambda: next(
            (r for r in harness.of(token) if r.method == "POST" and r.accepted and (r.json or {}).get("embeds")), None))
    token = harness.command("favourites", OWNER)
    listing = await listing_of(token)
    assert harness.discord.is_ephemeral(listing.message_id)
    embed = listing.json["embeds"][0]
    assert embed["title"] == "Your favourites"
    assert [(f["name"], f["value"].split("\n")[0]) for f in embed["fields"]] == [
        ("`1` picture 2", "a red star --seed 5 --steps 6")]
    menu = harness.response_message(token)
    select = component(menu, "Bring one back with its buttons")
    shown = await harness.result(harness.press(menu["id"], select["custom_id"], OWNER,
                                               values=[select["options"][0]["value"]]))
    assert shown.content == "**a red star --seed 5 --steps 6** - Image #2 <@4242>"
    assert "job:us:1:1" in shown.custom_ids() and image_of(shown).size == (64, 64)

    empty = await listing_of(harness.command("favourites", 999))
    assert empty.json["embeds"][0]["description"] == "No favourites yet: press ❤️ under a picture."
