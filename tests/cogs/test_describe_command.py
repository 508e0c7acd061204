"""/describe in Discord: four prompts, each a button that imagines it."""

from __future__ import annotations

from helpers.discord_harness import drawn_png

OWNER = 4242


async def test_describe_suggests_four_prompts_and_a_button_imagines_one(harness):
    picture = drawn_png("square", "blue", "white")
    token = harness.command("describe", OWNER, files={"image": ("shape.png", picture)})
    answer = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(token) if r.method == "PATCH" and "**Describe**" in (r.content or "")), None))
    lines = answer.content.splitlines()
    assert lines[0] == "**Describe** for <@4242>: press a number to imagine that prompt"
    assert [line[:3] for line in lines[1:]] == ["1️⃣", "2️⃣", "3️⃣", "4️⃣"]
    assert "blue" in lines[1] and "white" in lines[1]
    assert answer.custom_ids() == ["describe:1", "describe:2", "describe:3", "describe:4"]

    message_id = harness.discord.originals[token]
    chosen = lines[2].split(" ", 1)[1]
    result = await harness.result(harness.press(message_id, "describe:2", OWNER))
    assert result.content == f"**{chosen}** - <@4242> (fast)"


async def test_describe_needs_exactly_one_picture(harness):
    assert await harness.ephemeral_text(harness.command("describe", OWNER)) == (
        "❌ Give one picture: attach it, or paste its link.")
