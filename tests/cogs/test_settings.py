"""/settings: defaults a user picks once and then sees in every prompt; remix mode."""

from __future__ import annotations

from helpers.discord_harness import component

from storage import repository as repo
from storage.models import QueueMode, Variability

OWNER, OTHER = 4242, 5151


async def stored_settings(harness):
    async with harness.bot.sessionmaker() as session:
        return await repo.ensure_user(session, user_id=OWNER)


async def test_settings_change_what_every_later_prompt_means(harness):
    token = harness.command("settings", OWNER)
    assert (await harness.ephemeral_text(token)).startswith("**Your settings**")
    message = harness.response_message(token)
    assert [o["label"] for o in component(message, "Stylize")["options"]] == [
        "Stylize low", "Stylize med", "Stylize high", "Stylize very high"]

    for press in (("Stylize", ["250"]), ("Raw mode", None), ("High variation", None), ("Relax mode", None)):
        name, values = press
        token = harness.press(message["id"], component(message, name)["custom_id"], OWNER, values=values)
        await harness.discord.wait_for(lambda t=token: next(
            (r for r in harness.of(t) if r.method == "PATCH"), None))
        assert harness.of(token)[0].json["type"] == 6  # acknowledged before the database write
        assert harness.response_message(token)["id"] == message["id"]  # the settings message is edited in place
        message = harness.discord.messages[message["id"]]
    assert "`--s 250 --style raw`" in message["content"] and "Mode: relax" in message["content"]
    assert component(message, "Raw mode")["style"] == 3  # shown as on

    user = await stored_settings(harness)
    assert (user.default_suffix, user.default_mode, user.variability) == (
        "--s 250 --style raw", QueueMode.RELAX, Variability.STRONG)

    result = await harness.result(harness.command("imagine", OWNER, prompt="a red circle --s 50"))
    assert result.content == "**a red circle --s 50 --style raw** - <@4242> (relaxed)"  # the prompt's --s wins

    grid_id = harness.message_of_job(1)
    varied = await harness.result(harness.press(grid_id, "job:v:1:0", OWNER))
    assert "Variations (Strong)" in varied.content  # V1 follows the high-variation setting


async def test_remix_lets_the_presser_edit_the_prompt_before_a_reroll(harness):
    await harness.result(harness.command("imagine", OWNER, prompt="a red circle on white --seed 4"))
    async with harness.bot.sessionmaker.begin() as session:
        await repo.set_user_settings(session, user_id=OWNER, remix=True)
    press = harness.press(harness.message_of_job(1), "job:r:1", OWNER)
    form = await harness.discord.wait_for(lambda: next(
        (r for r in harness.of(press) if r.path.endswith("/callback")), None))
    assert form.json["type"] == 9  # a form, not a job yet
    text_input = form.json["data"]["components"][0]["components"][0]
    assert text_input["value"] == "a red circle on white --seed 4"

    submitted = harness.submit_form(form.json["data"]["custom_id"], {text_input["custom_id"]: "a blue circle on white"},
                                    OWNER)
    result = await harness.result(submitted)
    assert result.content == "**a blue circle on white** - <@4242> (fast)"
    remixed = await harness.job(2)
    assert (remixed.parent_id, remixed.prompt) == (1, "a blue circle on white")
