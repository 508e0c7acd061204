"""Driving the real discord.py stack offline.

A fake Discord REST server (aiohttp on 127.0.0.1) answers the bot's HTTP calls and
records every one of them (deferrals, followups with their image files, edits,
deletes); `discord.http.Route.BASE` points at it. Gateway events are raw payloads fed
to the bot's connection state parsers, exactly as the gateway would deliver them.
Tests assert on the recorded requests, the database and the stored images.

Known pitfalls (each cost someone an afternoon): JSON responses must carry exactly
`Content-Type: application/json`; INTERACTION_CREATE needs `attachment_size_limit`;
a component press must carry a `message` whose `components` contain the pressed
custom_id, or discord.py drops it silently.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from PIL import Image

APPLICATION_ID = 900_000_000_000_000_001
BOT_USER_ID = APPLICATION_ID
GUILD_ID = 800_000_000_000_000_001
CHANNEL_ID = 800_000_000_000_000_002
MODERATOR_ROLE_ID = 800_000_000_000_000_003
MANAGE_MESSAGES = 0x2000
SIZE_LIMIT = 10 * 1024 * 1024
CONTENT_LIMIT = 2000
DISCORD_EPOCH_MS = 1_420_070_400_000
_increments = itertools.count()


def snowflake() -> str:
    """A unique id that, like Discord's, encodes now (discord.py reads interaction times from it)."""
    return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_increments) & 0x3FFFFF))


def user_payload(user_id: int, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name or f"user{user_id % 1000}", "discriminator": "0",
            "global_name": None, "avatar": None, "bot": bot}


def member_payload(user_id: int, *, permissions: int = 0, moderator: bool = False) -> dict[str, Any]:
    roles = [str(MODERATOR_ROLE_ID)] if moderator else []
    return {"user": user_payload(user_id), "roles": roles, "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False,
            "mute": False, "flags": 0, "permissions": str(permissions)}


@dataclass
class Recorded:
    """One HTTP request the bot made."""

    method: str
    path: str
    json: Any = None
    files: dict[str, bytes] = field(default_factory=dict)  # filename -> bytes
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the fake server received it

    @property
    def content(self) -> str | None:
        return (self.json or {}).get("content") if isinstance(self.json, dict) else None

    @property
    def flags(self) -> int:
        data = self.json.get("data", self.json) if isinstance(self.json, dict) else {}
        return int((data or {}).get("flags") or 0)

    def custom_ids(self) -> list[str]:
        rows = (self.json or {}).get("components") or []
        return [c["custom_id"] for row in rows for c in row.get("components", []) if "custom_id" in c]


def component(message: dict[str, Any], label_or_placeholder: str) -> dict[str, Any]:
    """The button (by label) or select (by placeholder) in a message's components."""
    return next(c for row in message["components"] for c in row["components"]
                if label_or_placeholder in (c.get("label"), c.get("placeholder")))


def drawn_png(shape: str, colour: str, background: str = "white") -> bytes:
    """A picture of the built-in model's world, as a user would upload it."""
    from generation.builtin.world import Scene, ShapeSpec, render

    buffer = io.BytesIO()
    render(Scene(background, (ShapeSpec(shape, colour, "large"),)), 64, 64).save(buffer, format="PNG")
    return buffer.getvalue()


def image_of(record: Recorded) -> Image.Image:
    """The one picture a recorded request uploaded."""
    (data,) = record.files.values()
    return Image.open(io.BytesIO(data)).convert("RGB")


class FakeDiscord:
    """The REST side of Discord, as far as this bot uses it."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.messages: dict[str, dict[str, Any]] = {}  # message id -> latest payload
        self.originals: dict[str, str] = {}  # interaction token -> its original response's message id
        self.pressed: dict[str, str] = {}  # a component interaction's token -> the message it was pressed on
        self.deleted: set[str] = set()
        self.runner: web.AppRunner | None = None
        self.base_url = ""
        self.attachments: dict[str, bytes] = {}  # served at /attachments/<name> (image prompts, /blend)
        self.downloads: list[str] = []  # attachment names, each time one is fetched

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # --- what tests look at ------------------------------------------------------

    def find(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll until `predicate()` is truthy (the bot works in its own tasks and threads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := predicate():
                return result
            await asyncio.sleep(0.02)
        raise AssertionError("timed out; requests so far:\n" + "\n".join(
            f"{r.method} {r.path} {r.content!r}" for r in self.requests))

    # --- the server --------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/v10")
        if path.startswith("/attachments/"):
            name = path.rsplit("/", 1)[1]
            self.downloads.append(name)
            return web.Response(body=self.attachments[name], content_type="image/png")
        body, files = await self._read_body(request)
        record = Recorded(request.method, path, body, files, dict(request.query))
        self.requests.append(record)
        if refusal := self._invalid_form(record):
            return refusal
        return self._answer(record)

    def _invalid_form(self, record: Recorded) -> web.Response | None:
        """Discord's answer to a body it refuses (only what the bot could get wrong is checked)."""
        data = record.json.get("data", record.json) if isinstance(record.json, dict) else None
        content = (data or {}).get("content") if isinstance(data, dict) else None
        if isinstance(content, str) and len(content) > CONTENT_LIMIT:
            return self._json({"code": 50035, "message": "Invalid Form Body", "errors": {"content": {"_errors": [
                {"code": "BASE_TYPE_MAX_LENGTH", "message": f"Must be {CONTENT_LIMIT} or fewer in length."}]}}},
                status=400)
        return None

    async def _read_body(self, request: web.Request) -> tuple[Any, dict[str, bytes]]:
        if request.content_type.startswith("multipart/"):
            body, files = None, {}
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "payload_json":
                    body = json.loads(await part.text())
                else:
                    files[part.filename or part.name] = bytes(await part.read())
            return body, files
        raw = await request.read()
        return (json.loads(raw) if raw else None), {}

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        # exactly this header: discord.py reads JSON only when it is "application/json", no charset
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            headers={"Content-Type": "application/json"})

    def _answer(self, record: Recorded) -> web.Response:
        method, parts = record.method, record.path.strip("/").split("/")
        if record.path == "/users/@me":
            return self._json(user_payload(BOT_USER_ID, "imagine-bot", bot=True))
        if record.path == "/oauth2/applications/@me":
            return self._json({"id": str(APPLICATION_ID), "name": "imagine-bot", "icon": None, "description": "",
                               "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                               "flags": 0, "owner": user_payload(1), "team": None, "summary": ""})
        if parts[0] == "interactions" and parts[-1] == "callback":
            return self._interaction_callback(record, interaction_id=parts[1], token=parts[2])
        if parts[0] == "webhooks":
            return self._webhook(record, token=parts[2], rest=parts[3:])
        if parts[0] == "channels" and len(parts) >= 3 and parts[2] == "messages":
            channel_id = parts[1]
            if method == "POST" and len(parts) == 3:
                return self._json(self._message(record, channel_id))
            if method == "PATCH":
                return self._edit(record, parts[3])
            if method == "DELETE":
                return self._delete(parts[3])
        if record.path == "/users/@me/channels":
            recipient = user_payload(int(record.json["recipient_id"]))
            return self._json({"id": snowflake(), "type": 1, "recipients": [recipient], "last_message_id": None})
        if parts[0] == "applications" and parts[-1] == "commands" and method == "PUT":  # a sync
            guild = parts[3] if "guilds" in parts else None
            return self._json([{**command, "id": snowflake(), "application_id": str(APPLICATION_ID), "version": "1",
                                "guild_id": guild, "default_member_permissions": None, "dm_permission": True,
                                "nsfw": False} for command in record.json])
        return self._json({"message": f"fake Discord does not know {method} {record.path}", "code": 0}, status=404)

    def _message(self, record: Recorded, channel_id: str, message_id: str | None = None) -> dict[str, Any]:
        body = record.json or {}
        message = {
            "id": message_id or snowflake(), "channel_id": channel_id, "type": 0, "content": body.get("content") or "",
            "author": user_payload(BOT_USER_ID, "imagine-bot", bot=True), "attachments": [
                {"id": snowflake(), "filename": name, "size": len(data), "url": f"{self.base_url}/attachments/{name}",
                 "proxy_url": f"{self.base_url}/attachments/{name}"} for name, data in record.files.items()],
            "embeds": [], "mentions": [], "mention_roles": [], "pinned": False, "mention_everyone": False, "tts": False,
            "timestamp": datetime.now(UTC).isoformat(), "edited_timestamp": None, "flags": body.get("flags") or 0,
            "components": body.get("components") or [],
        }
        self.messages[message["id"]] = message
        return message

    def _edit(self, record: Recorded, message_id: str) -> web.Response:
        if message_id in self.deleted or message_id not in self.messages:
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        body = record.json or {}
        message = dict(self.messages[message_id])
        for key in ("content", "components", "flags"):
            if key in body:
                message[key] = body[key]
        if record.files or "attachments" in body:
            message["attachments"] = [{"id": snowflake(), "filename": name, "size": len(data),
                                       "url": f"{self.base_url}/attachments/{name}",
                                       "proxy_url": f"{self.base_url}/attachments/{name}"}
                                      for name, data in record.files.items()]
        self.messages[message_id] = message
        return self._json(message)

    def _delete(self, message_id: str) -> web.Response:
        if message_id in self.deleted or message_id not in self.messages:
            return self._json({"message": "Unknown Message", "code": 10008}, status=404)
        self.deleted.add(message_id)
        return web.Response(status=204)

    def _interaction_callback(self, record: Recorded, interaction_id: str, token: str) -> web.Response:
        body = record.json or {}
        kind = body.get("type")
        if kind in (6, 7) and token in self.pressed:  # an update: "the original" is the pressed message
            message_id = self.originals[token] = self.pressed[token]
        else:
            message_id = self.originals[token] = snowflake()
        resource: dict[str, Any] = {"type": kind}
        if kind == 4:  # a message now
            resource["message"] = self._message(Recorded(record.method, record.path, body.get("data") or {},
                                                         record.files), str(CHANNEL_ID), message_id)
        elif kind == 7:  # the pressed message edited in place
            self._edit(Recorded(record.method, record.path, body.get("data") or {}, record.files), message_id)
            resource["message"] = self.messages[message_id]
        elif kind == 5:  # deferred: "thinking" placeholder
            self._message(Recorded(record.method, record.path, {"content": "", "flags": (body.get("data") or {})
                                   .get("flags")}), str(CHANNEL_ID), message_id)
        return self._json({"interaction": {"id": interaction_id, "type": 2, "response_message_id": message_id,
                                           "response_message_loading": kind == 5,
                                           "response_message_ephemeral": bool(
                                               ((body.get("data") or {}).get("flags") or 0) & 64)},
                           "resource": resource})

    def _webhook(self, record: Recorded, token: str, rest: list[str]) -> web.Response:
        if not rest and record.method == "POST":  # a followup message
            return self._json(self._message(record, str(CHANNEL_ID)))
        if len(rest) == 2 and rest[0] == "messages":
            message_id = self.originals.get(token, "") if rest[1] == "@original" else rest[1]
            if record.method == "PATCH":
                return self._edit(record, message_id)
            if record.method == "DELETE":
                return self._delete(message_id)
            if record.method == "GET":
                return self._json(self.messages[message_id])
        return self._json({"message": "unknown webhook route", "code": 0}, status=404)


# ---------------------------------------------------------------------------
# gateway payloads


async def connect(bot) -> None:
    """Log a bot in against the fake server (setup_hook runs) and deliver READY and GUILD_CREATE,
    as the gateway would: the bot then sees the test server and its channel."""
    await bot.login("fake-token")
    bot._connection.parsers["READY"](ready_payload())
    bot._connection.parsers["GUILD_CREATE"](guild_create_payload())


def ready_payload() -> dict[str, Any]:
    return {"v": 10, "user": user_payload(BOT_USER_ID, "imagine-bot", bot=True), "guilds": [
        {"id": str(GUILD_ID), "unavailable": True}], "session_id": "session", "resume_gateway_url": "ws://127.0.0.1",
        "shard": [0, 1], "application": {"id": str(APPLICATION_ID), "flags": 0}}


def guild_create_payload() -> dict[str, Any]:
    return {"id": str(GUILD_ID), "name": "Test server", "icon": None, "owner_id": "1", "unavailable": False,
            "member_count": 3, "large": False, "features": [], "premium_tier": 0, "roles": [
                {"id": str(GUILD_ID), "name": "@everyone", "permissions": str(0x4_0000_0000 | 0x800 | 0x400),
                 "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False},
                {"id": str(MODERATOR_ROLE_ID), "name": "Moderator", "permissions": str(MANAGE_MESSAGES),
                 "position": 1, "color": 0, "hoist": False, "managed": False, "mentionable": False}],
            "channels": [{"id": str(CHANNEL_ID), "type": 0, "name": "imagine", "position": 0,
                          "permission_overwrites": [], "guild_id": str(GUILD_ID)}],
            "members": [], "voice_states": [], "presences": [], "emojis": [], "stickers": [], "threads": [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [], "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "system_channel_id": None, "rules_channel_id": None, "preferred_locale": "en-US",
            "joined_at": "2026-01-01T00:00:00+00:00"}


def _interaction_base(kind: int, user_id: int, permissions: int, size_limit: int = SIZE_LIMIT) -> dict[str, Any]:
    return {"id": snowflake(), "application_id": str(APPLICATION_ID), "type": kind, "token": f"token-{snowflake()}",
            "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(CHANNEL_ID),
            "channel": {"id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "imagine"},
            "member": member_payload(user_id, permissions=permissions), "locale": "en-US", "guild_locale": "en-US",
            "app_permissions": str(0x4_0000_0000 | 0x800 | 0x400 | 0x8000), "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
            "attachment_size_limit": size_limit}


def command_payload(name: str, options: dict[str, Any], user_id: int, *, permissions: int = 0,
                    option_types: dict[str, int] | None = None, size_limit: int = SIZE_LIMIT) -> dict[str, Any]:
    """INTERACTION_CREATE for a slash command (string options unless `option_types` says otherwise)."""
    types = option_types or {}
    payload = _interaction_base(2, user_id, permissions, size_limit)
    payload["data"] = {"id": snowflake(), "name": name, "type": 1, "options": [
        {"name": key, "type": types.get(key, 3), "value": value} for key, value in options.items()]}
    return payload


def attachment_payload(server: FakeDiscord, filename: str, data: bytes, content_type: str = "image/png"
                       ) -> dict[str, Any]:
    """An uploaded file, served by the fake server like Discord's CDN serves attachments."""
    server.attachments[filename] = data
    url = f"{server.base_url}/attachments/{filename}"
    return {"id": snowflake(), "filename": filename, "size": len(data), "content_type": content_type,
            "url": url, "proxy_url": url}


def with_attachments(payload: dict[str, Any], attachments: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Attachment options (type 11) on a command payload, resolved as Discord sends them."""
    payload["data"]["options"] += [{"name": key, "type": 11, "value": a["id"]} for key, a in attachments.items()]
    payload["data"]["resolved"] = {"attachments": {a["id"]: a for a in attachments.values()}}
    return payload


def component_payload(message: dict[str, Any], custom_id: str, user_id: int, *, permissions: int = 0,
                      values: list[str] | None = None) -> dict[str, Any]:
    """INTERACTION_CREATE for a button press on `message` (as the fake server holds it), or for
    a choice in a select menu when `values` are given."""
    payload = _interaction_base(3, user_id, permissions)
    payload["message"] = message
    payload["data"] = {"custom_id": custom_id, "component_type": 2 if values is None else 3}
    if values is not None:
        payload["data"]["values"] = values
    return payload


def modal_submit_payload(custom_id: str, fields: dict[str, str], user_id: int) -> dict[str, Any]:
    """INTERACTION_CREATE for a submitted form: `fields` maps each text input's custom_id to its text."""
    payload = _interaction_base(5, user_id, 0)
    payload["data"] = {"custom_id": custom_id, "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]} for key, value in fields.items()]}
    return payload


def reaction_payload(message_id: str, emoji: str, user_id: int, *, moderator: bool = False) -> dict[str, Any]:
    """MESSAGE_REACTION_ADD: `user_id` (a moderator: may manage messages) reacts with a unicode `emoji`."""
    return {"user_id": str(user_id), "channel_id": str(CHANNEL_ID), "message_id": message_id,
            "guild_id": str(GUILD_ID), "member": member_payload(user_id, moderator=moderator),
            "emoji": {"id": None, "name": emoji}, "type": 0, "burst": False, "burst_colors": []}
