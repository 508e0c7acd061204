"""The fake Discord of helpers/discord_harness.py refuses what Discord refuses.

Each rule it models is checked both ways: a valid request is accepted, an invalid one gets
Discord's status, JSON error code and (for bodies) an `errors` tree naming the field. Driven
with plain aiohttp requests, and with discord.py's own HTTP client where its handling of
rate limits and retries is the point. No bot and no model: these run in seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from typing import Any

import aiohttp
import discord
import pytest
from discord.http import HTTPClient, handle_message_parameters
from helpers import discord_rules
from helpers.discord_harness import (
    APPLICATION_ID,
    CHANNEL_ID,
    EPHEMERAL,
    NSFW_CHANNEL_ID,
    NSFW_THREAD_ID,
    SIZE_LIMIT,
    THREAD_ID,
    FakeDiscord,
    guild_create_payload,
    snowflake,
)

CHANNEL = f"/channels/{CHANNEL_ID}/messages"
BUTTON = {"type": 2, "style": 1, "label": "Go", "custom_id": "go"}


class Answer:
    def __init__(self, status: int, body: Any, headers: Any, raw: bytes) -> None:
        self.status, self.body, self.headers, self.raw = status, body, headers, raw

    @property
    def code(self) -> int | None:
        return self.body.get("code") if isinstance(self.body, dict) else None

    def refused_at(self, *path: str | int) -> dict[str, Any]:
        """The `_errors` entry of a 50035 answer at `path` (fails when the field is not named)."""
        assert (self.status, self.code) == (400, 50035), (self.status, self.body)
        node = self.body["errors"]
        for key in path:
            assert str(key) in node, (path, self.body["errors"])
            node = node[str(key)]
        assert node["_errors"], node
        return node["_errors"][0]


@pytest.fixture
async def api(fake_discord):
    """`await api(method, path, json=..., files={name: bytes}, params=...)`: one raw request to the fake."""
    async with aiohttp.ClientSession() as session:
        async def call(method: str, path: str, json_body: Any = None, *, files: dict[str, bytes] | None = None,
                       params: dict[str, str] | None = None) -> Answer:
            kwargs: dict[str, Any] = {"params": params}
            if files:
                form = aiohttp.FormData(quote_fields=False)
                form.add_field("payload_json", json.dumps(json_body or {}), content_type="application/json")
                for i, (name, data) in enumerate(files.items()):
                    form.add_field(f"files[{i}]", io.BytesIO(data), filename=name,
                                   content_type="application/octet-stream")
                kwargs["data"] = form
            elif json_body is not None:
                kwargs["json"] = json_body
            async with session.request(method, fake_discord.base_url + "/api/v10" + path, **kwargs) as response:
                raw = await response.read()
                body = json.loads(raw) if response.headers.get("Content-Type") == "application/json" else raw
                return Answer(response.status, body, response.headers, raw)
        yield call


def interaction(discord_: FakeDiscord, kind: int = 2, pressed: str | None = None, *,
                size_limit: int = SIZE_LIMIT) -> tuple[str, str]:
    """Register an interaction as the Harness does on dispatch; (its id, its token)."""
    interaction_id, token = snowflake(), f"token-{snowflake()}"
    discord_.interaction_created(token, interaction_id, kind, pressed, size_limit=size_limit)
    return interaction_id, token


def callback(interaction_id: str, token: str) -> str:
    return f"/interactions/{interaction_id}/{token}/callback"


def webhook(token: str, rest: str = "") -> str:
    return f"/webhooks/{APPLICATION_ID}/{token}{rest}"


async def answered(api, discord_: FakeDiscord, kind: int = 5, data: dict[str, Any] | None = None,
                   **options: Any) -> str:
    """A command interaction answered with callback `kind`; its token."""
    interaction_id, token = interaction(discord_, **options)
    body: dict[str, Any] = {"type": kind}
    if data is not None:
        body["data"] = data
    answer = await api("POST", callback(interaction_id, token), body, params={"with_response": "1"})
    assert answer.status == 200, answer.body
    return token


async def posted(api, content: str = "hello", channel: int | str = CHANNEL_ID, **body: Any) -> dict[str, Any]:
    answer = await api("POST", f"/channels/{channel}/messages", {"content": content, **body})
    assert answer.status == 200, answer.body
    return answer.body


# --- 1. message bodies ------------------------------------------------------------------


async def test_content_up_to_2000_characters(api):
    assert (await api("POST", CHANNEL, {"content": "x" * 2000})).status == 200
    refused = await api("POST", CHANNEL, {"content": "x" * 2001})
    assert refused.refused_at("content")["code"] == "BASE_TYPE_MAX_LENGTH"
    assert refused.body["message"] == "Invalid Form Body"


def embed(**fields: Any) -> dict[str, Any]:
    return {"title": "t", "description": "d", **fields}


@pytest.mark.parametrize(("embeds", "path"), [
    ([embed(title="x" * 257)], ("embeds", 0, "title")),
    ([embed(description="x" * 4097)], ("embeds", 0, "description")),
    ([embed(fields=[{"name": "n", "value": "v"}] * 26)], ("embeds", 0, "fields")),
    ([embed(fields=[{"name": "x" * 257, "value": "v"}])], ("embeds", 0, "fields", 0, "name")),
    ([embed(fields=[{"name": "n", "value": "x" * 1025}])], ("embeds", 0, "fields", 0, "value")),
    ([embed(fields=[{"name": "n", "value": ""}])], ("embeds", 0, "fields", 0, "value")),
    ([embed(footer={"text": "x" * 2049})], ("embeds", 0, "footer", "text")),
    ([embed(author={"name": "x" * 257})], ("embeds", 0, "author", "name")),
    ([embed()] * 11, ("embeds",)),
    ([embed(description="x" * 4000), embed(description="x" * 2000)], ("embeds",)),  # 6000 in all, with the titles
])
async def test_embed_limits(api, embeds, path):
    refused = await api("POST", CHANNEL, {"embeds": embeds})
    refused.refused_at(*path)


async def test_embeds_within_every_limit_are_accepted(api):
    full = embed(title="x" * 256, description="x" * 1000, fields=[{"name": "n" * 256, "value": "v" * 1024}] * 3,
                 footer={"text": "f" * 100}, author={"name": "a" * 256})
    assert discord_rules.embed_text(full) <= 6000
    assert (await api("POST", CHANNEL, {"embeds": [full] + [embed()] * 9})).status == 200
    refused = await api("POST", CHANNEL, {"embeds": [full, full]})
    assert refused.refused_at("embeds")["code"] == "MAX_EMBED_SIZE_EXCEEDED"


def row(*items: dict[str, Any]) -> dict[str, Any]:
    return {"type": 1, "components": list(items)}


def button(custom_id: str, **fields: Any) -> dict[str, Any]:
    return {"type": 2, "style": 2, "label": custom_id[:80], "custom_id": custom_id, **fields}


def select(custom_id: str = "pick", options: int = 2, **fields: Any) -> dict[str, Any]:
    return {"type": 3, "custom_id": custom_id, "placeholder": "Pick one",
            "options": [{"label": f"o{i}", "value": f"v{i}"} for i in range(options)], **fields}


async def test_five_rows_of_five_buttons_and_a_select_alone_are_accepted(api):
    rows = [row(*(button(f"b{r}{c}") for c in range(5))) for r in range(4)] + [row(select(options=25))]
    assert (await api("POST", CHANNEL, {"content": "ok", "components": rows})).status == 200
    link = {"type": 2, "style": 5, "label": "Docs", "url": "https://example.com"}
    emoji_only = {"type": 2, "style": 1, "custom_id": "e", "emoji": {"name": "🔄"}}
    assert (await api("POST", CHANNEL, {"components": [row(link, emoji_only)]})).status == 200


@pytest.mark.parametrize(("components", "path", "code"), [
    ([row(button("a"))] * 6, ("components",), "BASE_TYPE_MAX_LENGTH"),
    ([row(*(button(f"b{i}") for i in range(6)))], ("components", 0, "components"), "BASE_TYPE_MAX_LENGTH"),
    ([row(select(), button("b"))], ("components", 0, "components"), "COMPONENT_LAYOUT_WIDTH_EXCEEDED"),
    ([row(button("x" * 101))], ("components", 0, "components", 0, "custom_id"), "BASE_TYPE_MAX_LENGTH"),
    ([row(button("a")), row(button("a"))], ("components", 1, "components", 0, "custom_id"),
     "COMPONENT_CUSTOM_ID_DUPLICATED"),
    ([row(button("a", label="x" * 81))], ("components", 0, "components", 0, "label"), "BASE_TYPE_MAX_LENGTH"),
    ([row({"type": 2, "style": 1, "label": "no id"})], ("components", 0, "components", 0, "custom_id"),
     "BASE_TYPE_REQUIRED"),
    ([row({"type": 2, "style": 1, "custom_id": "bare"})], ("components", 0, "components", 0, "label"),
     "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED"),
    ([row(select(options=0))], ("components", 0, "components", 0, "options"), "BASE_TYPE_MIN_LENGTH"),
    ([row(select(options=26))], ("components", 0, "components", 0, "options"), "BASE_TYPE_MAX_LENGTH"),
    ([row(select(options=1) | {"options": [{"label": "x" * 101, "value": "v"}]})],
     ("components", 0, "components", 0, "options", 0, "label"), "BASE_TYPE_MAX_LENGTH"),
    ([row(select(options=1) | {"options": [{"label": "l", "value": "x" * 101}]})],
     ("components", 0, "components", 0, "options", 0, "value"), "BASE_TYPE_MAX_LENGTH"),
    ([row(select(options=1) | {"options": [{"label": "l", "value": "v", "description": "x" * 101}]})],
     ("components", 0, "components", 0, "options", 0, "description"), "BASE_TYPE_MAX_LENGTH"),
    ([row(select(placeholder="x" * 151))], ("components", 0, "components", 0, "placeholder"),
     "BASE_TYPE_MAX_LENGTH"),
    ([row(select(options=1) | {"options": [{"label": "a", "value": "v"}, {"label": "b", "value": "v"}]})],
     ("components", 0, "components", 0, "options", 1), "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED"),
])
async def test_component_limits(api, components, path, code):
    refused = await api("POST", CHANNEL, {"content": "buttons", "components": components})
    assert refused.refused_at(*path)["code"] == code


async def test_at_most_ten_files(api):
    ten = {f"f{i}.txt": b"x" for i in range(10)}
    assert (await api("POST", CHANNEL, {"content": "files"}, files=ten)).status == 200
    refused = await api("POST", CHANNEL, {"content": "files"}, files={**ten, "f10.txt": b"x"})
    refused.refused_at("files")


async def test_allowed_mentions_cannot_name_users_both_ways(api):
    assert (await api("POST", CHANNEL, {"content": "<@4242>", "allowed_mentions": {"users": ["4242"]}})).status == 200
    refused = await api("POST", CHANNEL, {"content": "<@4242>",
                                          "allowed_mentions": {"parse": ["users"], "users": ["4242"]}})
    assert refused.refused_at("allowed_mentions")["code"] == "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"


async def test_a_message_with_nothing_in_it_is_refused(api):
    refused = await api("POST", CHANNEL, {"content": ""})
    assert (refused.status, refused.code) == (400, 50006)
    message = await posted(api, "text")
    emptied = await api("PATCH", f"{CHANNEL}/{message['id']}", {"content": ""})
    assert (emptied.status, emptied.code) == (400, 50006)
    assert (await api("POST", CHANNEL, {"content": ""}, files={"a.png": b"png"})).status == 200  # a file is enough


async def test_the_body_rules_hold_on_every_message_route(api, fake_discord):
    too_long = {"content": "x" * 2001}
    message = await posted(api)
    token = await answered(api, fake_discord, 4, {"content": "first"})
    interaction_id, fresh = interaction(fake_discord)
    for method, path, body, where in [
        ("POST", CHANNEL, too_long, ()),
        ("PATCH", f"{CHANNEL}/{message['id']}", too_long, ()),
        ("POST", webhook(token), too_long, ()),
        ("PATCH", webhook(token, "/messages/@original"), too_long, ()),
        ("POST", callback(interaction_id, fresh), {"type": 4, "data": too_long}, ("data",)),
    ]:
        (await api(method, path, body)).refused_at(*where, "content")
    # a refused callback did not answer the interaction: a good one still can
    assert (await api("POST", callback(interaction_id, fresh), {"type": 4, "data": {"content": "ok"}})).status == 204


def modal(**fields: Any) -> dict[str, Any]:
    text_input = {"type": 4, "custom_id": "prompt", "style": 2, "label": "Prompt", "value": "a cat",
                  "placeholder": "what to paint", "max_length": 4000, **fields.pop("text_input", {})}
    return {"type": 9, "data": {"custom_id": "form", "title": "Remix", "components": [row(text_input)], **fields}}


@pytest.mark.parametrize(("body", "path"), [
    (modal(title="x" * 46), ("data", "title")),
    (modal(components=[]), ("data", "components")),
    (modal(components=[row({"type": 4, "custom_id": f"i{i}", "style": 1, "label": "l"}) for i in range(6)]),
     ("data", "components")),
    (modal(text_input={"label": "x" * 46}), ("data", "components", 0, "components", 0, "label")),
    (modal(text_input={"custom_id": "x" * 101}), ("data", "components", 0, "components", 0, "custom_id")),
    (modal(text_input={"value": "x" * 4001}), ("data", "components", 0, "components", 0, "value")),
    (modal(text_input={"placeholder": "x" * 101}), ("data", "components", 0, "components", 0, "placeholder")),
    (modal(text_input={"max_length": 4001}), ("data", "components", 0, "components", 0, "max_length")),
])
async def test_modal_limits(api, fake_discord, body, path):
    interaction_id, token = interaction(fake_discord)
    (await api("POST", callback(interaction_id, token), body)).refused_at(*path)
    assert (await api("POST", callback(interaction_id, token), modal())).status == 204  # not acknowledged before


async def test_bodies_are_checked_against_discords_openapi_schema(api, fake_discord):
    assert discord_rules.schema_source()["repository"] == "discord/discord-api-spec"
    refused = await api("POST", CHANNEL, {"content": "hi", "allowed_mentions": {"parse": ["everybody"]}})
    refused.refused_at("allowed_mentions", "parse", 0)
    (await api("POST", CHANNEL, {"content": 5})).refused_at("content")
    (await api("POST", "/users/@me/channels", {"recipient_id": "not a snowflake"})).refused_at("recipient_id")
    assert (await api("POST", "/users/@me/channels", {"recipient_id": 4242})).status == 200  # integers pass
    interaction_id, token = interaction(fake_discord)
    (await api("POST", callback(interaction_id, token), {"type": 4, "data": {"tts": "loud"}})).refused_at(
        "data", "tts")
    commands = [{"name": "imagine", "description": "x" * 101, "type": 1}]
    (await api("PUT", f"/applications/{APPLICATION_ID}/commands", commands)).refused_at(0, "description")


def test_the_vendored_schemas_keep_fields_named_like_keywords():
    """An embed's `title`, a command's `description`: field names, not annotations to drop."""
    (issue,) = discord_rules.schema_issues("POST /channels/{channel_id}/messages", {"embeds": [{"title": "x" * 257}]})
    assert issue[:2] == (("embeds", 0, "title"), "BASE_TYPE_MAX_LENGTH")
    (issue,) = discord_rules.schema_issues("PUT /applications/{application_id}/commands",
                                           [{"name": "imagine", "description": "x" * 101}])
    assert issue[0] == (0, "description")
    assert discord_rules.schema_issues("PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me",
                                       None) == []


async def test_discord_py_sends_what_the_schemas_accept(fake_discord):
    """discord.py's own payloads (a View, an embed, a file) pass the published schemas."""
    http = HTTPClient(asyncio.get_running_loop())
    await http.static_login("fake-token")
    try:
        view = discord.ui.View()
        view.add_item(discord.ui.Button(label="U1", custom_id="u1"))
        view.add_item(discord.ui.Select(custom_id="s", options=[discord.SelectOption(label="a", value="a")]))
        embed_ = discord.Embed(title="Your info", description="d").add_field(name="Queue", value="2 jobs")
        with handle_message_parameters(content="hi", embed=embed_, view=view,
                                       file=discord.File(__file__, "test.py"),
                                       allowed_mentions=discord.AllowedMentions(users=[discord.Object(4242)])) as p:
            message = await http.send_message(CHANNEL_ID, params=p)
        with handle_message_parameters(content="edited", attachments=[]) as p:
            await http.edit_message(CHANNEL_ID, message["id"], params=p)
        dm = await http.start_private_message(4242)
        await http.add_reaction(CHANNEL_ID, message["id"], "❤️")
    finally:
        await http.close()
    assert dm["type"] == 1
    assert [r.status for r in fake_discord.requests] == [200, 200, 200, 200, 204]


# --- 2. interactions: one callback, within 3 s; the token for 15 minutes ------------------------


async def test_one_callback_per_interaction(api, fake_discord):
    interaction_id, token = interaction(fake_discord)
    assert (await api("POST", callback(interaction_id, token), {"type": 5})).status == 204
    again = await api("POST", callback(interaction_id, token), {"type": 4, "data": {"content": "hi"}})
    assert (again.status, again.code, again.body["message"]) == (400, 40060, "Interaction has already been "
                                                                              "acknowledged.")


async def test_the_callback_must_come_within_3_seconds(api, fake_discord):
    assert fake_discord.callback_window == 3.0
    interaction_id, token = interaction(fake_discord)
    fake_discord.advance(2.9)
    assert (await api("POST", callback(interaction_id, token), {"type": 5})).status == 204
    late_id, late = interaction(fake_discord)
    fake_discord.advance(3.1)
    refused = await api("POST", callback(late_id, late), {"type": 5})
    assert (refused.status, refused.code, refused.body["message"]) == (404, 10062, "Unknown interaction")
    wrong = await api("POST", callback(snowflake(), token), {"type": 5})  # a token with another id
    assert (wrong.status, wrong.code) == (404, 10062)


async def test_an_unregistered_interaction_is_timed_from_its_id(api, fake_discord):
    fresh, old = snowflake(), snowflake()
    assert (await api("POST", callback(fresh, "token-bench"), {"type": 5})).status == 204
    fake_discord.advance(3.5)
    assert (await api("POST", callback(old, "token-late"), {"type": 5})).code == 10062


async def test_the_token_works_for_15_minutes_and_only_after_the_callback(api, fake_discord):
    interaction_id, token = interaction(fake_discord)
    early = await api("POST", webhook(token), {"content": "too early"})
    assert (early.status, early.code) == (404, 10015)
    assert (await api("POST", callback(interaction_id, token), {"type": 4, "data": {"content": "hi"}})).status == 204
    fake_discord.advance(14 * 60)
    assert (await api("PATCH", webhook(token, "/messages/@original"), {"content": "edited"})).status == 200
    assert (await api("POST", webhook(token), {"content": "followup"})).status == 200
    fake_discord.advance(61)
    for method, path, body in [("POST", webhook(token), {"content": "late"}),
                               ("PATCH", webhook(token, "/messages/@original"), {"content": "late"}),
                               ("DELETE", webhook(token, "/messages/@original"), None)]:
        late = await api(method, path, body)
        assert (late.status, late.code, late.body["message"]) == (401, 50027, "Invalid Webhook Token")


# --- 3. callback types -----------------------------------------------------------------------


async def test_a_message_callback_answers_with_the_message_only_when_asked(api, fake_discord):
    interaction_id, token = interaction(fake_discord)
    answer = await api("POST", callback(interaction_id, token), {"type": 4, "data": {"content": "hi"}},
                       params={"with_response": "1"})
    assert answer.status == 200 and answer.headers["Content-Type"] == "application/json"
    message = answer.body["resource"]["message"]
    assert message["content"] == "hi" and answer.body["interaction"]["response_message_id"] == message["id"]
    interaction_id, token = interaction(fake_discord)
    plain = await api("POST", callback(interaction_id, token), {"type": 4, "data": {"content": "hi"}})
    assert (plain.status, plain.raw) == (204, b"")


@pytest.mark.parametrize("ephemeral", [True, False])
async def test_the_first_followup_after_a_deferral_replaces_the_placeholder(api, fake_discord, ephemeral):
    token = await answered(api, fake_discord, 5, {"flags": EPHEMERAL} if ephemeral else None)
    placeholder = fake_discord.originals[token]
    assert fake_discord.messages[placeholder]["content"] == ""
    first = await api("POST", webhook(token), {"content": "done", "flags": 0 if ephemeral else EPHEMERAL})
    assert first.body["id"] == placeholder  # the same message, now with the text
    assert bool(first.body["flags"] & EPHEMERAL) is ephemeral  # the deferral's choice, whatever the followup says
    second = await api("POST", webhook(token), {"content": "more", "flags": EPHEMERAL})
    assert second.body["id"] != placeholder and second.body["flags"] & EPHEMERAL
    assert fake_discord.is_ephemeral(second.body["id"])


async def test_after_an_edit_of_the_placeholder_a_followup_is_a_new_message(api, fake_discord):
    token = await answered(api, fake_discord, 5)
    edited = await api("PATCH", webhook(token, "/messages/@original"), {"content": "progress"})
    followup = await api("POST", webhook(token), {"content": "result"})
    assert followup.body["id"] != edited.body["id"]


async def test_update_callbacks_only_for_components(api, fake_discord):
    pressed = await posted(api, "grid", components=[row(button("u1"))])
    command_id, command = interaction(fake_discord)
    refused = await api("POST", callback(command_id, command), {"type": 6})
    refused.refused_at("type")
    form_id, form = interaction(fake_discord, 5)  # a form opened from a command
    (await api("POST", callback(form_id, form), {"type": 7, "data": {"content": "x"}})).refused_at("type")
    modal_id, modal_token = interaction(fake_discord, 5)
    (await api("POST", callback(modal_id, modal_token), modal())).refused_at("type")  # no modal for a form

    press_id, press = interaction(fake_discord, 3, pressed["id"])
    assert (await api("POST", callback(press_id, press), {"type": 6})).status == 204
    assert fake_discord.originals[press] == pressed["id"]
    assert fake_discord.messages[pressed["id"]]["content"] == "grid"  # 6 changes nothing yet
    edited = await api("PATCH", webhook(press, "/messages/@original"), {"content": "picked"})
    assert edited.body["id"] == pressed["id"] and edited.body["content"] == "picked"

    update_id, update = interaction(fake_discord, 3, pressed["id"])
    answer = await api("POST", callback(update_id, update), {"type": 7, "data": {"content": "updated"}},
                       params={"with_response": "1"})
    assert answer.body["resource"]["message"]["id"] == pressed["id"]
    assert fake_discord.messages[pressed["id"]]["content"] == "updated"

    from_button_id, from_button = interaction(fake_discord, 5, pressed["id"])  # a form opened by a button
    assert (await api("POST", callback(from_button_id, from_button), {"type": 6})).status == 204


async def test_a_webhook_edits_only_its_own_tokens_messages(api, fake_discord):
    mine = await answered(api, fake_discord, 4, {"content": "mine"})
    theirs = await answered(api, fake_discord, 4, {"content": "theirs"})
    refused = await api("PATCH", webhook(mine, f"/messages/{fake_discord.originals[theirs]}"), {"content": "x"})
    assert (refused.status, refused.code) == (404, 10008)
    followup = await api("POST", webhook(mine), {"content": "followup"})
    assert (await api("PATCH", webhook(mine, f"/messages/{followup.body['id']}"), {"content": "y"})).status == 200
    assert (await api("DELETE", webhook(mine, "/messages/@original"))).status == 204
    gone = await api("PATCH", webhook(mine, "/messages/@original"), {"content": "z"})
    assert (gone.status, gone.code) == (404, 10008)
    modal_id, modal_token = interaction(fake_discord)
    await api("POST", callback(modal_id, modal_token), modal())
    assert (await api("GET", webhook(modal_token, "/messages/@original"))).code == 10008  # a modal is no message


async def test_reactions_and_deletes_answer_204(api):
    message = await posted(api)
    reacted = await api("PUT", f"{CHANNEL}/{message['id']}/reactions/%E2%9D%A4%EF%B8%8F/@me")
    assert (reacted.status, reacted.raw) == (204, b"")
    assert (await api("DELETE", f"{CHANNEL}/{message['id']}")).status == 204
    again = await api("DELETE", f"{CHANNEL}/{message['id']}")
    assert (again.status, again.code) == (404, 10008)
    assert (await api("POST", f"/channels/{CHANNEL_ID}/typing")).status == 204


# --- 4. uploads --------------------------------------------------------------------------------


async def test_files_of_a_followup_fit_the_interactions_upload_limit(api, fake_discord):
    token = await answered(api, fake_discord, 5, size_limit=1000)
    refused = await api("POST", webhook(token), {"content": "big"}, files={"a.png": b"x" * 600, "b.png": b"x" * 401})
    assert (refused.status, refused.code, refused.body["message"]) == (413, 40005, "Request entity too large")
    assert (await api("POST", webhook(token), {"content": "fits"}, files={"a.png": b"x" * 1000})).status == 200
    interaction_id, other = interaction(fake_discord, size_limit=10)
    big_callback = await api("POST", callback(interaction_id, other), {"type": 4, "data": {"content": "x"}},
                             files={"a.png": b"x" * 11})
    assert big_callback.status == 413


async def test_files_of_a_channel_message_fit_the_guilds_limit(api, fake_discord):
    assert fake_discord.guild_size_limit == 10 * 1024 * 1024  # premium tier 0
    half = b"x" * (5 * 1024 * 1024)
    refused = await api("POST", CHANNEL, {"content": "big"}, files={"a.bin": half, "b.bin": half + b"x"})
    assert (refused.status, refused.code) == (413, 40005)
    assert (await api("POST", CHANNEL, {"content": "fits"}, files={"a.bin": half, "b.bin": half})).status == 200


# --- 5. channels and permissions ---------------------------------------------------------------


@pytest.mark.parametrize(("permission", "body", "files", "code"), [
    ("send_messages", {"content": "hi"}, None, 50013),
    ("attach_files", {"content": "hi"}, {"a.png": b"png"}, 50013),
    ("embed_links", {"embeds": [{"title": "t"}]}, None, 50013),
    ("view_channel", {"content": "hi"}, None, 50001),
])
async def test_permissions_taken_away_in_a_channel(api, fake_discord, permission, body, files, code):
    message = await posted(api)
    fake_discord.deny(CHANNEL_ID, permission)
    refused = await api("POST", CHANNEL, body, files=files)
    assert (refused.status, refused.code) == (403, code)
    assert refused.body["message"] == ("Missing Access" if code == 50001 else "Missing Permissions")
    if permission != "send_messages":
        edit = await api("PATCH", f"{CHANNEL}/{message['id']}", body, files=files)
        assert (edit.status, edit.code) == (403, code)
    token = await answered(api, fake_discord, 5)  # interaction webhooks need no channel permission
    assert (await api("POST", webhook(token), body, files=files)).status == 200
    assert not fake_discord.app_permissions(CHANNEL_ID) & discord.Permissions(**{permission: True}).value
    fake_discord.allow(CHANNEL_ID, permission)
    assert (await api("POST", CHANNEL, body, files=files)).status == 200


async def test_unknown_channels_closed_dms_and_threads(api, fake_discord):
    unknown = await api("POST", "/channels/123456789012345678/messages", {"content": "hi"})
    assert (unknown.status, unknown.code, unknown.body["message"]) == (404, 10003, "Unknown Channel")

    dm = (await api("POST", "/users/@me/channels", {"recipient_id": "4242"})).body
    assert dm["type"] == 1 and fake_discord.dm_channel(4242) == dm["id"]
    assert (await api("POST", "/users/@me/channels", {"recipient_id": "4242"})).body["id"] == dm["id"]
    await posted(api, "a DM", dm["id"])
    fake_discord.close_dms(4242)
    closed = await api("POST", f"/channels/{dm['id']}/messages", {"content": "hi"})
    assert (closed.status, closed.code, closed.body["message"]) == (403, 50007, "Cannot send messages to this user")

    assert (await posted(api, "in a thread", THREAD_ID))["channel_id"] == str(THREAD_ID)
    fake_discord.deny(CHANNEL_ID, "send_messages")  # a thread needs send_messages_in_threads, not this
    await posted(api, "still", THREAD_ID)
    fake_discord.deny(CHANNEL_ID, "send_messages_in_threads")  # inherited from the parent
    assert (await api("POST", f"/channels/{THREAD_ID}/messages", {"content": "hi"})).code == 50013
    thread, nsfw_thread = guild_create_payload(thread=True)["threads"]
    assert (thread["id"], thread["type"], thread["parent_id"]) == (str(THREAD_ID), 11, str(CHANNEL_ID))
    assert (nsfw_thread["id"], nsfw_thread["parent_id"]) == (str(NSFW_THREAD_ID), str(NSFW_CHANNEL_ID))
    assert guild_create_payload()["threads"] == []


async def test_an_interaction_in_a_thread_answers_in_the_thread(api, fake_discord):
    interaction_id, token = snowflake(), f"token-{snowflake()}"
    fake_discord.interaction_created(token, interaction_id, 2, channel_id=THREAD_ID)
    answer = await api("POST", callback(interaction_id, token), {"type": 4, "data": {"content": "hi"}},
                       params={"with_response": "1"})
    assert answer.body["resource"]["message"]["channel_id"] == str(THREAD_ID)
    assert (await api("POST", webhook(token), {"content": "more"})).body["channel_id"] == str(THREAD_ID)


async def test_channel_routes_see_no_ephemeral_message_nor_another_channels(api, fake_discord):
    token = await answered(api, fake_discord, 4, {"content": "secret", "flags": EPHEMERAL})
    secret = fake_discord.originals[token]
    hidden = await api("PATCH", f"{CHANNEL}/{secret}", {"content": "x"})
    assert (hidden.status, hidden.code) == (404, 10008)
    in_thread = await posted(api, "thread message", THREAD_ID)
    assert (await api("DELETE", f"{CHANNEL}/{in_thread['id']}")).code == 10008
    fake_discord.messages[in_thread["id"]]["author"] = {"id": "4242"}  # someone else's message
    other = await api("PATCH", f"/channels/{THREAD_ID}/messages/{in_thread['id']}", {"content": "x"})
    assert (other.status, other.code) == (403, 50005)
    assert (await api("DELETE", f"/channels/{THREAD_ID}/messages/{in_thread['id']}")).code == 50013


# --- 6. rate limits ---------------------------------------------------------------------------


async def test_every_answer_carries_rate_limit_headers(api):
    for answer in [await api("POST", CHANNEL, {"content": "hi"}), await api("POST", CHANNEL, {"content": ""}),
                   await api("GET", "/users/@me")]:
        assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "X-RateLimit-Reset-After",
                "X-RateLimit-Bucket"} <= set(answer.headers)
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.headers["Via"] == "1.1 google"
    first, second = await api("GET", "/users/@me"), await api("GET", "/users/@me")
    assert int(second.headers["X-RateLimit-Remaining"]) == int(first.headers["X-RateLimit-Remaining"]) - 1
    assert int(first.headers["X-RateLimit-Limit"]) >= 1000  # generous unless a test says otherwise


async def test_over_a_bucket_is_429_per_route_and_major_parameter(api, fake_discord):
    fake_discord.limit(2, 0.3, path="/messages")
    dm = (await api("POST", "/users/@me/channels", {"recipient_id": "4242"})).body
    assert [(await api("POST", CHANNEL, {"content": "hi"})).status for _ in range(2)] == [200, 200]
    limited = await api("POST", CHANNEL, {"content": "hi"})
    assert limited.status == 429
    assert limited.body["message"] == "You are being rate limited." and limited.body["global"] is False
    assert 0 < limited.body["retry_after"] <= 0.3 and limited.headers["Retry-After"] == "1"
    assert (await api("POST", f"/channels/{dm['id']}/messages", {"content": "hi"})).status == 200  # another channel
    await asyncio.sleep(limited.body["retry_after"] + 0.02)
    assert (await api("POST", CHANNEL, {"content": "hi"})).status == 200


async def test_discord_py_waits_on_the_headers_and_never_meets_a_429(fake_discord):
    fake_discord.limit(2, 0.25, path="/messages")
    http = HTTPClient(asyncio.get_running_loop())
    await http.static_login("fake-token")
    try:
        for i in range(5):
            with handle_message_parameters(content=f"message {i}") as params:
                await http.send_message(CHANNEL_ID, params=params)
    finally:
        await http.close()
    assert [r.status for r in fake_discord.find("POST", "/messages")] == [200] * 5


# --- 7. faults on demand ----------------------------------------------------------------------


async def test_a_fault_once_then_normal_answers(api, fake_discord):
    fault = fake_discord.fail(503, path="/channels/", method="POST")
    assert (await api("GET", "/users/@me")).status == 200  # another route
    unavailable = await api("POST", CHANNEL, {"content": "hi"})
    assert unavailable.status == 503 and unavailable.headers["Content-Type"].startswith("text/plain")
    assert (await api("POST", CHANNEL, {"content": "hi"})).status == 200
    assert fault.hits == 1 and fault.expired()


@pytest.mark.parametrize(("status", "path", "code"), [
    (403, CHANNEL, 50013), (404, CHANNEL + "/1", 10008), (404, "/interactions/1/t/callback", 10062),
    (413, CHANNEL, 40005), (500, CHANNEL, 0), (400, CHANNEL, 50035),
])
async def test_faults_answer_discords_body_for_their_status(api, fake_discord, status, path, code):
    fake_discord.fail(status)
    answer = await api("POST", path, {"content": "hi"})
    assert (answer.status, answer.code) == (status, code)
    assert answer.headers["Content-Type"] == "application/json" and answer.body["message"]


async def test_faults_for_a_while_and_with_a_given_code(api, fake_discord):
    fake_discord.fail(502, path="/webhooks/", seconds=0.2)
    fake_discord.fail(404, path="/callback", code=10015, times=2)
    interaction_id, token = interaction(fake_discord)
    assert (await api("POST", callback(interaction_id, token), {"type": 5})).code == 10015
    assert (await api("POST", callback(interaction_id, token), {"type": 5})).code == 10015
    assert (await api("POST", callback(interaction_id, token), {"type": 5})).status == 204
    bad_gateway = [await api("POST", webhook(token), {"content": "hi"}) for _ in range(3)]
    assert [a.status for a in bad_gateway] == [502] * 3 and b"cloudflare" in bad_gateway[0].raw
    await asyncio.sleep(0.25)
    assert (await api("POST", webhook(token), {"content": "hi"})).status == 200
    assert all(fault.expired() for fault in fake_discord.faults)


async def test_discord_py_retries_an_injected_429_and_500(fake_discord):
    fake_discord.fail(429, path="/messages", retry_after=0.05)
    fake_discord.fail(500, path="/users/@me/channels")
    http = HTTPClient(asyncio.get_running_loop())
    await http.static_login("fake-token")
    started = time.monotonic()
    try:
        with handle_message_parameters(content="after a 429") as params:
            await http.send_message(CHANNEL_ID, params=params)
        await http.start_private_message(4242)  # discord.py sleeps 1 s after a 500, then tries again
        fake_discord.fail(403, path="/messages", seconds=5)
        with pytest.raises(discord.Forbidden) as refused, handle_message_parameters(content="no") as params:
            await http.send_message(CHANNEL_ID, params=params)
    finally:
        await http.close()
    assert refused.value.code == 50013
    assert [r.status for r in fake_discord.find(contains="/messages")] == [429, 200, 403]
    assert [r.status for r in fake_discord.find(contains="/users/@me/channels")] == [500, 200]
    assert time.monotonic() - started < 5


async def test_faults_leave_the_cdn_alone_unless_aimed_at_it(api, fake_discord):
    fake_discord.attachments["cat.png"] = b"png"
    fake_discord.fail(500, times=10)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{fake_discord.base_url}/attachments/cat.png") as response:
            assert response.status == 200
        fake_discord.fail(404, path="/attachments/cat.png")
        fake_discord.faults.pop(0)
        async with session.get(f"{fake_discord.base_url}/attachments/cat.png") as response:
            assert response.status == 404


# --- 8. what tests read back --------------------------------------------------------------------


async def test_every_request_records_the_status_it_got(api, fake_discord):
    await api("POST", CHANNEL, {"content": "yes"})
    await api("POST", CHANNEL, {"content": "x" * 2001})
    assert [r.status for r in fake_discord.requests] == [200, 400]
    (accepted,) = fake_discord.accepted("POST", "/messages")
    (refused,) = fake_discord.refused("POST", "/messages")
    assert accepted.content == "yes" and accepted.message_id in fake_discord.messages
    assert refused.content == "x" * 2001 and not refused.accepted
