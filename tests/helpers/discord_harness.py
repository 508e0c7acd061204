"""Driving the real discord.py stack offline, against a fake Discord as strict as the real one.

A fake Discord REST server (aiohttp on 127.0.0.1) answers the bot's HTTP calls and
records every one of them (deferrals, followups with their image files, edits,
deletes) with the status it answered; `discord.http.Route.BASE` points at it. Gateway
events are raw payloads fed to the bot's connection state parsers, exactly as the
gateway would deliver them. Tests assert on the recorded requests, the database and
the stored images.

The fake refuses what Discord refuses, with Discord's status, JSON error body and code
(`FakeDiscord.accepted()` / `refused()` tell them apart; every `Recorded` has its `status`):

- bodies (discord_rules.py): message and embed limits, action rows, buttons, selects,
  modals, 10 files, each as 400/50035 "Invalid Form Body" with an `errors` tree, and every
  body checked against the route's schema in Discord's OpenAPI document (vendored in
  discord_schemas.json); a message with nothing in it: 400/50006;
- interactions (registered by the cogs Harness when it dispatches one): one callback
  (else 400/40060), within `callback_window` seconds (else 404/10062), the callback type fit
  for the interaction (6 and 7 only for components and forms opened from one), the token's
  webhook routes only after the callback and for `token_lifetime` seconds (else 404/10015,
  then 401/50027), a webhook edits only its own token's messages (else 404/10008); the first
  followup after a deferral (type 5) replaces the "thinking" placeholder and keeps the
  deferral's ephemeral choice; the fake's clock moves with `advance(seconds)`;
- uploads: the files of one message against the interaction's `attachment_size_limit`, or
  the guild's limit in a channel, else 413/40005;
- channels: unknown ones 404/10003; permissions the test took away (`deny`) 403/50013, or
  50001 without view_channel; closed DMs (`close_dms`) 403/50007; ephemeral messages do not
  exist for channel routes (404/10008); only the bot's own messages can be edited (403/50005);
- rate limits: every answer carries X-RateLimit-* headers from a per-route bucket (route and
  major parameter); over a bucket (generous unless a test sets `limit`), 429 with Retry-After;
- faults on demand: `fail(status, path=..., times=..., seconds=...)`.

Known pitfalls (each cost someone an afternoon): JSON responses must carry exactly
`Content-Type: application/json`; INTERACTION_CREATE needs `attachment_size_limit`;
a component press must carry a `message` whose `components` contain the pressed
custom_id, or discord.py drops it silently; a 429 without a `Via` header is taken by
discord.py for a Cloudflare ban (HTTPException, no retry), so every answer carries
`Via: 1.1 google` as Discord's do; discord.py retries 500, 502, 504 (and webhooks every 5xx)
itself, up to 5 tries with 1, 3, 5, 7 s sleeps, so a fault injected `times=1` costs a test
a second; Discord's OpenAPI document types snowflakes as strings but the API takes integers
too (discord.py sends recipient_id and attachment ids as integers), so the vendored schema
takes both; an interaction never registered with the fake (a bench that dispatches payloads
itself) is inferred at its callback from its id's timestamp, as an application command;
a refused request is recorded too, so "the bot sent X" is `accepted(...)`, not `find(...)`
(the Harness's `result` and `ephemeral_reply` only see accepted requests, and a reply is
private only if the message Discord made is ephemeral, not because the request said 64);
`advance` moves the fake's clock only: discord.py's `Interaction.created_at` and the bot's
own token-lifetime check still read the real one, so a test of the bot after expiry patches
the bot's lifetime and advances the fake; aiohttp refuses a large `bytes` form field under
this project's warnings-are-errors setting (ResourceWarning), so tests upload through
`io.BytesIO`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from PIL import Image

from helpers import discord_rules as rules

APPLICATION_ID = 900_000_000_000_000_001
BOT_USER_ID = APPLICATION_ID
GUILD_ID = 800_000_000_000_000_001
CHANNEL_ID = 800_000_000_000_000_002
MODERATOR_ROLE_ID = 800_000_000_000_000_003
THREAD_ID = 800_000_000_000_000_004  # a public thread of CHANNEL_ID (guild_create_payload(thread=True))
SUPPORTER_ROLE_ID = 800_000_000_000_000_005  # a role with no permission of its own (for /admin role)
OTHER_CHANNEL_ID = 800_000_000_000_000_006  # a second text channel of the server
NSFW_CHANNEL_ID = 800_000_000_000_000_007  # an age-restricted text channel of the server
ADMIN_ROLE_ID = 800_000_000_000_000_008  # Manage Server and Manage Messages in the whole server
NSFW_THREAD_ID = 800_000_000_000_000_009  # a public thread of NSFW_CHANNEL_ID (guild_create_payload(thread=True))
MANAGE_GUILD = 0x20
MANAGE_MESSAGES = 0x2000
CONTENT_LIMIT = rules.CONTENT_LIMIT
SIZE_LIMIT = 10 * 1024 * 1024  # the upload limit of a guild at premium tier 0, and of a DM
DISCORD_EPOCH_MS = 1_420_070_400_000
CALLBACK_WINDOW = 3.0  # seconds an interaction waits for its callback
TOKEN_LIFETIME = 15 * 60.0  # seconds an interaction token works for webhook routes
EPHEMERAL, LOADING = 64, 128
_increments = itertools.count()

PERMISSIONS = {
    "add_reactions": 1 << 6, "view_channel": 1 << 10, "send_messages": 1 << 11, "manage_messages": 1 << 13,
    "embed_links": 1 << 14, "attach_files": 1 << 15, "read_message_history": 1 << 16,
    "mention_everyone": 1 << 17, "use_external_emojis": 1 << 18, "use_application_commands": 1 << 31,
    "manage_threads": 1 << 34, "create_public_threads": 1 << 35, "send_messages_in_threads": 1 << 38,
}
BOT_PERMISSIONS = frozenset({  # what the bot is invited with; `FakeDiscord.deny` takes some away per channel
    "add_reactions", "view_channel", "send_messages", "embed_links", "attach_files", "read_message_history",
    "use_external_emojis", "use_application_commands", "manage_threads", "send_messages_in_threads"})

ERRORS = {  # Discord's JSON error codes and their messages
    0: "General error", 10003: "Unknown Channel", 10004: "Unknown Guild", 10007: "Unknown Member",
    10008: "Unknown Message", 10015: "Unknown Webhook",
    10062: "Unknown interaction", 40005: "Request entity too large",
    40060: "Interaction has already been acknowledged.", 50001: "Missing Access",
    50005: "Cannot edit a message authored by another user", 50006: "Cannot send an empty message",
    50007: "Cannot send messages to this user", 50013: "Missing Permissions", 50027: "Invalid Webhook Token",
    50035: "Invalid Form Body", 50109: "The request body contains invalid JSON.",
}
VALID_CALLBACKS = {1: {1}, 2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5}}  # interaction type -> callbacks


def snowflake() -> str:
    """A unique id that, like Discord's, encodes now (discord.py reads interaction times from it)."""
    return str(((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_increments) & 0x3FFFFF))


def snowflake_time(value: str | int) -> float:
    """The Unix time a snowflake was made."""
    return ((int(value) >> 22) + DISCORD_EPOCH_MS) / 1000


def user_payload(user_id: int, name: str | None = None, *, bot: bool = False) -> dict[str, Any]:
    return {"id": str(user_id), "username": name or f"user{user_id % 1000}", "discriminator": "0",
            "global_name": None, "avatar": None, "bot": bot}


def member_payload(user_id: int, *, permissions: int = 0, moderator: bool = False,
                   roles: tuple[int, ...] = ()) -> dict[str, Any]:
    roles = [str(MODERATOR_ROLE_ID)] * moderator + [str(role) for role in roles]
    return {"user": user_payload(user_id), "roles": roles, "joined_at": "2026-01-01T00:00:00+00:00", "deaf": False,
            "mute": False, "flags": 0, "permissions": str(permissions)}


@dataclass
class Recorded:
    """One HTTP request the bot made, and what the fake answered."""

    method: str
    path: str
    json: Any = None
    files: dict[str, bytes] = field(default_factory=dict)  # filename -> bytes
    query: dict[str, str] = field(default_factory=dict)
    at: float = field(default_factory=time.monotonic)  # when the fake server received it
    status: int | None = None  # the HTTP status the fake answered (None while in flight)
    message_id: str | None = None  # the message it created, edited or deleted, if any

    @property
    def content(self) -> str | None:
        return (self.json or {}).get("content") if isinstance(self.json, dict) else None

    @property
    def flags(self) -> int:
        data = self.json.get("data", self.json) if isinstance(self.json, dict) else {}
        return int((data or {}).get("flags") or 0)

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def custom_ids(self) -> list[str]:
        rows = (self.json or {}).get("components") or []
        return [c["custom_id"] for row in rows for c in row.get("components", []) if "custom_id" in c]


@dataclass
class Interaction:
    """An interaction as Discord keeps it: its windows, its callback and its messages."""

    id: str
    token: str
    kind: int  # 2 an application command, 3 a component, 5 a submitted form
    created: float  # on the fake's clock
    channel_id: str
    size_limit: int
    message_id: str | None = None  # the message its component is on (a form's too, when opened from one)
    response: int | None = None  # the callback type it was answered with
    original: str | None = None  # the message @original names
    loading: bool = False  # a deferral's placeholder still "thinking"
    ephemeral: bool = False  # the deferral's choice, kept by the first followup
    messages: set[str] = field(default_factory=set)  # what its token may edit: the original and its followups
    registered: bool = True  # False: inferred at its callback (nobody told the fake it was created)


@dataclass
class Fault:
    """A failure the test asked for: `status` on matching routes, `times` more times or until `until`."""

    status: int
    path: str = ""
    method: str | None = None
    times: int = 1
    until: float | None = None  # time.monotonic() deadline, for "for a while"
    code: int | None = None
    retry_after: float = 1.0
    hits: int = 0

    def expired(self) -> bool:
        """True once the fault answers no more: its times used up, or its while over."""
        return time.monotonic() >= self.until if self.until is not None else self.hits >= self.times

    def matches(self, method: str, path: str) -> bool:
        return not self.expired() and (self.method is None or self.method == method) and self.path in path


@dataclass
class Bucket:
    """One rate-limit bucket (a route and its major parameter)."""

    name: str  # the X-RateLimit-Bucket hash
    limit: int
    per: float
    used: int = 0
    resets: float = 0.0  # time.monotonic() when it refills

    def refresh(self, now: float) -> None:
        if now >= self.resets:
            self.used, self.resets = 0, now + self.per

    def headers(self, now: float) -> dict[str, str]:
        after = max(0.0, self.resets - now)
        return {"X-RateLimit-Limit": str(self.limit), "X-RateLimit-Remaining": str(max(0, self.limit - self.used)),
                "X-RateLimit-Reset": f"{time.time() + after:.3f}", "X-RateLimit-Reset-After": f"{after:.3f}",
                "X-RateLimit-Bucket": self.name}


def route_of(method: str, path: str) -> tuple[str, str]:
    """(the route's template, its major parameter), as Discord buckets requests."""
    parts = path.strip("/").split("/")
    major = ""
    if parts[0] in ("channels", "guilds") and len(parts) > 1:
        major = parts[1]
    elif parts[0] in ("webhooks", "interactions") and len(parts) > 2:
        major = f"{parts[1]}/{parts[2]}"
    elif parts[0] == "applications" and "guilds" in parts:
        major = parts[parts.index("guilds") + 1] if parts.index("guilds") + 1 < len(parts) else ""
    template = []
    for i, part in enumerate(parts):
        if parts[0] in ("webhooks", "interactions") and i == 2:
            template.append("{token}")
        elif i >= 1 and parts[i - 1] == "reactions":
            template.append("{emoji}")
        elif part.isdigit():
            template.append("{id}")
        else:
            template.append(part)
    return f"{method} /{'/'.join(template)}", major


OPENAPI_ROUTES = {  # (method, route template) -> the OpenAPI operation whose body schema applies
    ("POST", "/channels/{id}/messages"): "POST /channels/{channel_id}/messages",
    ("PATCH", "/channels/{id}/messages/{id}"): "PATCH /channels/{channel_id}/messages/{message_id}",
    ("POST", "/webhooks/{id}/{token}"): "POST /webhooks/{webhook_id}/{webhook_token}",
    ("PATCH", "/webhooks/{id}/{token}/messages/@original"):
        "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/@original",
    ("PATCH", "/webhooks/{id}/{token}/messages/{id}"):
        "PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
    ("POST", "/interactions/{id}/{token}/callback"):
        "POST /interactions/{interaction_id}/{interaction_token}/callback",
    ("POST", "/users/@me/channels"): "POST /users/@me/channels",
    ("PUT", "/channels/{id}/messages/{id}/reactions/{emoji}/@me"):
        "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me",
    ("PUT", "/applications/{id}/commands"): "PUT /applications/{application_id}/commands",
    ("PUT", "/applications/{id}/guilds/{id}/commands"): "PUT /applications/{application_id}/guilds/{guild_id}/commands",
}


class Refusal(Exception):
    """Discord's answer to a request it refuses."""

    def __init__(self, status: int, code: int, message: str | None = None, errors: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}")
        self.status, self.code, self.message, self.errors = status, code, message or ERRORS.get(code, ""), errors


def form_inputs(form: dict[str, Any]) -> list[str]:
    """The custom_ids of a form's text inputs, in order."""
    return [c["custom_id"] for row in form["components"] for c in row["components"]]


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


def _has_content(body: dict[str, Any], files: int) -> bool:
    return bool(body.get("content") or body.get("embeds") or body.get("components") or body.get("sticker_ids")
                or body.get("poll") or files)


class FakeDiscord:
    """The REST side of Discord, as far as this bot uses it, and as strict."""

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
        # interactions and the fake's clock
        self.interactions: dict[str, Interaction] = {}  # by token
        self.callback_window = CALLBACK_WINDOW
        self.token_lifetime = TOKEN_LIFETIME
        self._offset = 0.0  # what `advance` added to the real clock
        self._advances: list[tuple[float, float]] = []  # (time.monotonic() of an advance, the offset after it)
        # channels and permissions
        self.channels: dict[str, dict[str, Any]] = {
            str(CHANNEL_ID): {"id": str(CHANNEL_ID), "type": 0, "guild_id": str(GUILD_ID), "name": "imagine",
                              "position": 0, "permission_overwrites": [], "parent_id": None},
            str(THREAD_ID): thread_payload()}
        self.dm_channels: dict[str, str] = {}  # user id -> their DM channel's id
        self.closed_dms: set[str] = set()
        self.members: set[str] = set()  # who is a member of GUILD_ID (everyone who used the bot there)
        self.denied: dict[str, set[str]] = {}  # channel id -> permissions taken from the bot there
        self.guild_size_limit = SIZE_LIMIT
        # rate limits and faults
        self.rate_limit, self.rate_window = 1000, 1.0  # the default bucket: generous
        self.rate_limits: list[tuple[str | None, str, int, float]] = []  # (method, path part, limit, per)
        self.buckets: dict[tuple[str, str], Bucket] = {}
        self.faults: list[Fault] = []

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

    # --- what tests set up -------------------------------------------------------

    def now(self) -> float:
        """The fake's clock (monotonic seconds), which `advance` moves forward."""
        return time.monotonic() + self._offset

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass for the interaction windows (3 s callback, 15 min token), at once."""
        self._offset += seconds
        self._advances.append((time.monotonic(), self._offset))

    def _at(self, unix_time: float) -> float:
        """A moment of the real clock (Unix time), read on the fake's clock."""
        moment = time.monotonic() - (time.time() - unix_time)
        return moment + next((offset for at, offset in reversed(self._advances) if at <= moment), 0.0)

    def interaction_created(self, token: str, interaction_id: str | int, kind: int,
                            pressed_message_id: str | None = None, *, size_limit: int = SIZE_LIMIT,
                            channel_id: str | int = CHANNEL_ID) -> Interaction:
        """Tell the fake that Discord just sent INTERACTION_CREATE: its windows start now.
        `kind`: 2 command, 3 component (on `pressed_message_id`), 5 form submit (from a component
        on `pressed_message_id`, or from a command when None)."""
        interaction = Interaction(str(interaction_id), token, kind, self.now(), str(channel_id), size_limit,
                                  pressed_message_id)
        self.interactions[token] = interaction
        if pressed_message_id is not None and kind == 3:
            self.pressed[token] = pressed_message_id
        return interaction

    def deny(self, channel_id: str | int, *permissions: str) -> None:
        """Take permissions (PERMISSIONS' names: "send_messages", "attach_files", "view_channel",
        "embed_links"...) from the bot in a channel; a thread inherits its parent's."""
        unknown = set(permissions) - set(PERMISSIONS)
        if unknown:
            raise ValueError(f"unknown permissions {sorted(unknown)}; known: {sorted(PERMISSIONS)}")
        self.denied.setdefault(str(channel_id), set()).update(permissions)

    def allow(self, channel_id: str | int, *permissions: str) -> None:
        """Give back what `deny` took."""
        self.denied.get(str(channel_id), set()).difference_update(permissions)

    def permissions(self, channel_id: str | int) -> set[str]:
        """The bot's permissions in a guild channel or thread (a DM has no permissions to check)."""
        channel = self.channels.get(str(channel_id)) or {}
        denied = set(self.denied.get(str(channel_id), set()))
        if channel.get("parent_id"):
            denied |= self.denied.get(str(channel["parent_id"]), set())
        return set(BOT_PERMISSIONS) - denied

    def app_permissions(self, channel_id: str | int) -> int:
        """The bits INTERACTION_CREATE's `app_permissions` carries for the bot in that channel."""
        return sum(PERMISSIONS[name] for name in self.permissions(channel_id))

    def add_member(self, user_id: str | int) -> None:
        self.members.add(str(user_id))

    def remove_member(self, user_id: str | int) -> None:
        """The user left (or was kicked from) the test server."""
        self.members.discard(str(user_id))

    def close_dms(self, user_id: str | int) -> None:
        """The user accepts no DMs (from server members, or blocked the bot): sending one answers 403/50007."""
        self.closed_dms.add(str(user_id))

    def open_dms(self, user_id: str | int) -> None:
        self.closed_dms.discard(str(user_id))

    def dm_channel(self, user_id: str | int) -> str | None:
        """The id of the DM channel the bot opened with a user, if it did."""
        return self.dm_channels.get(str(user_id))

    def limit(self, limit: int, per: float = 1.0, *, path: str = "", method: str | None = None) -> None:
        """Buckets of matching routes (`path` a part of the path after /api/v10) allow `limit` requests
        every `per` seconds; the last call that matches a route wins."""
        self.rate_limits.insert(0, (method, path, limit, per))
        self.buckets.clear()

    def fail(self, status: int, *, path: str = "", method: str | None = None, times: int = 1,
             seconds: float | None = None, code: int | None = None, retry_after: float = 1.0) -> Fault:
        """Matching routes (`path` a part of the path after /api/v10, "" every route; `method` or any)
        answer `status` with Discord's body for it, the next `times` times, or for `seconds` of real
        time when given. `code` replaces the JSON error code; a 429 says `retry_after`."""
        fault = Fault(status, path, method, times, None if seconds is None else time.monotonic() + seconds, code,
                      retry_after)
        self.faults.append(fault)
        return fault

    # --- what tests look at ------------------------------------------------------

    def find(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        return [r for r in self.requests if (method is None or r.method == method) and contains in r.path]

    def accepted(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        """The requests Discord carried out (2xx)."""
        return [r for r in self.find(method, contains) if r.accepted]

    def refused(self, method: str | None = None, contains: str = "") -> list[Recorded]:
        """The requests Discord answered with an error (4xx, 5xx)."""
        return [r for r in self.find(method, contains) if r.status is not None and r.status >= 400]

    def is_ephemeral(self, message_id: str | None) -> bool:
        return message_id in self.messages and bool(int(self.messages[message_id].get("flags") or 0) & EPHEMERAL)

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
        """Poll until `predicate()` is truthy (the bot works in its own tasks and threads)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if result := predicate():
                return result
            await asyncio.sleep(0.02)
        raise AssertionError("timed out; requests so far:\n" + "\n".join(
            f"{r.status} {r.method} {r.path} {r.content!r}" for r in self.requests))

    # --- the server --------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path.removeprefix("/api/v10")
        if path.startswith("/attachments/"):  # the CDN: no rate limits; faults only when aimed at it
            fault = next((f for f in self.faults if f.path and f.matches(request.method, path)), None)
            if fault is not None:
                fault.hits += 1
                return self._fault(fault, path)
            name = path.rsplit("/", 1)[1]
            if name not in self.attachments:
                return web.Response(status=404, text="Not Found")
            self.downloads.append(name)
            return web.Response(body=self.attachments[name], content_type="image/png")
        body, files, invalid = await self._read_body(request)
        record = Recorded(request.method, path, body, files, dict(request.query))
        self.requests.append(record)
        response = self._respond(record, invalid)
        record.status = response.status
        return response

    def _respond(self, record: Recorded, invalid_json: bool) -> web.Response:
        now = time.monotonic()
        bucket = self._bucket(record)
        bucket.refresh(now)
        fault = next((f for f in self.faults if f.matches(record.method, record.path)), None)
        if fault is not None:
            fault.hits += 1
            response = self._fault(fault, record.path)
        elif bucket.used >= bucket.limit:
            retry_after = round(max(0.001, bucket.resets - now), 3)
            response = self._rate_limited(retry_after)
        else:
            bucket.used += 1
            try:
                if invalid_json:
                    raise Refusal(400, 50109)
                response = self._answer(record)
            except Refusal as refusal:
                payload: dict[str, Any] = {"message": refusal.message, "code": refusal.code}
                if refusal.errors is not None:
                    payload["errors"] = refusal.errors
                response = self._json(payload, status=refusal.status)
        for key, value in bucket.headers(now).items():
            response.headers.setdefault(key, value)
        response.headers["Via"] = "1.1 google"
        return response

    def _bucket(self, record: Recorded) -> Bucket:
        template, major = route_of(record.method, record.path)
        name = hashlib.sha1(template.encode()).hexdigest()[:32]
        if (name, major) not in self.buckets:
            limit, per = next(((limit, per) for method, part, limit, per in self.rate_limits
                               if (method is None or method == record.method) and part in record.path),
                              (self.rate_limit, self.rate_window))
            self.buckets[name, major] = Bucket(name, limit, per)
        return self.buckets[name, major]

    def _rate_limited(self, retry_after: float, *, code: int | None = None) -> web.Response:
        payload: dict[str, Any] = {"message": "You are being rate limited.", "retry_after": retry_after,
                                   "global": False}
        if code is not None:
            payload["code"] = code
        response = self._json(payload, status=429)
        response.headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        response.headers["X-RateLimit-Scope"] = "user"
        response.headers["X-RateLimit-Remaining"] = "0"
        return response

    def _fault(self, fault: Fault, path: str) -> web.Response:
        """Discord's (or its Cloudflare front's) answer with `fault.status`."""
        status = fault.status
        if status == 429:
            return self._rate_limited(fault.retry_after, code=fault.code)
        if status in (502, 504):  # Cloudflare's page, not JSON
            reason = "Bad Gateway" if status == 502 else "Gateway Time-out"
            return web.Response(status=status, content_type="text/html",
                                text=f"<html><head><title>{status} {reason}</title></head><body><center><h1>"
                                     f"{status} {reason}</h1></center><hr><center>cloudflare</center></body></html>")
        if status == 503:
            return web.Response(status=503, content_type="text/plain",
                                text="upstream connect error or disconnect/reset before headers. reset reason: "
                                     "overflow")
        default = {400: 50035, 403: 50013, 413: 40005}.get(status, 0)
        if status == 404:
            default = (10062 if path.endswith("/callback") else 10008 if "/messages/" in path
                       else 10015 if path.startswith("/webhooks/") else 10003 if path.startswith("/channels/") else 0)
        code = default if fault.code is None else fault.code
        generic = {401: "401: Unauthorized", 404: "404: Not Found", 405: "405: Method Not Allowed",
                   500: "500: Internal Server Error"}.get(status, f"{status}: Error")
        payload: dict[str, Any] = {"message": ERRORS.get(code) if code else generic, "code": code}
        if code == 50035:
            payload["errors"] = {}
        return self._json(payload, status=status)

    async def _read_body(self, request: web.Request) -> tuple[Any, dict[str, bytes], bool]:
        try:
            if request.content_type.startswith("multipart/"):
                body, files = None, {}
                reader = await request.multipart()
                while (part := await reader.next()) is not None:
                    if part.name == "payload_json":
                        body = json.loads(await part.text())
                    else:
                        files[part.filename or part.name] = bytes(await part.read())  # type: ignore[union-attr]
                return body, files, False
            raw = await request.read()
            return (json.loads(raw) if raw else None), {}, False
        except ValueError:
            return None, {}, True

    def _json(self, payload: Any, status: int = 200) -> web.Response:
        # exactly this header: discord.py reads JSON only when it is "application/json", no charset
        return web.Response(status=status, body=json.dumps(payload).encode(),
                            headers={"Content-Type": "application/json"})

    def _answer(self, record: Recorded) -> web.Response:
        method, parts = record.method, record.path.strip("/").split("/")
        if record.path == "/users/@me" and method == "GET":
            return self._json(user_payload(BOT_USER_ID, "imagine-bot", bot=True))
        if record.path == "/oauth2/applications/@me" and method == "GET":
            return self._json({"id": str(APPLICATION_ID), "name": "imagine-bot", "icon": None, "description": "",
                               "bot_public": True, "bot_require_code_grant": False, "verify_key": "0" * 64,
                               "flags": 0, "owner": user_payload(1), "team": None, "summary": ""})
        if parts[0] == "interactions" and len(parts) == 4 and parts[-1] == "callback" and method == "POST":
            return self._interaction_callback(record, interaction_id=parts[1], token=parts[2])
        if parts[0] == "webhooks" and len(parts) >= 3:
            return self._webhook(record, application_id=parts[1], token=parts[2], rest=parts[3:])
        if parts[0] == "channels" and len(parts) >= 2:
            return self._channel(record, parts[1], parts[2:])
        if parts[0] == "guilds" and len(parts) == 4 and parts[2] == "members" and method == "GET":
            if parts[1] != str(GUILD_ID):
                raise Refusal(404, 10004)
            if parts[3] not in self.members:
                raise Refusal(404, 10007)
            member = member_payload(int(parts[3]))
            del member["permissions"]  # only an interaction's member says its permissions
            return self._json(member)
        if record.path == "/users/@me/channels" and method == "POST":
            self._check_body(record, record.json)
            return self._json(self._dm_channel(str((record.json or {}).get("recipient_id"))))
        if parts[0] == "applications" and parts[-1] == "commands" and method == "PUT":  # a sync
            self._check_body(record, record.json)
            guild = parts[3] if "guilds" in parts else None
            return self._json([{**command, "id": snowflake(), "application_id": str(APPLICATION_ID), "version": "1",
                                "guild_id": guild, "default_member_permissions": None, "dm_permission": True,
                                "nsfw": False} for command in record.json or []])
        return self._json({"message": f"fake Discord does not know {method} {record.path}", "code": 0}, status=404)

    # --- bodies --------------------------------------------------------------------

    def _check_body(self, record: Recorded, message: dict[str, Any] | None, *, prefix: tuple[str | int, ...] = (),
                    modal: dict[str, Any] | None = None) -> None:
        """400/50035 for a body Discord refuses: the documented limits first, then the OpenAPI schema."""
        issues: list[rules.Issue] = []
        if isinstance(message, dict):
            issues += rules.message_issues(message, len(record.files), prefix)
        if isinstance(modal, dict):
            issues += rules.modal_issues(modal)
        if not issues:
            template, _ = route_of(record.method, record.path)
            operation = OPENAPI_ROUTES.get(tuple(template.split(" ", 1)))  # type: ignore[arg-type]
            if operation is not None:
                issues += rules.schema_issues(operation, record.json)
        if issues:
            raise Refusal(400, 50035, errors=rules.error_tree(issues))

    def _check_size(self, record: Recorded, limit: int) -> None:
        if sum(len(data) for data in record.files.values()) > limit:
            raise Refusal(413, 40005)

    # --- channels --------------------------------------------------------------------

    def _dm_channel(self, user_id: str) -> dict[str, Any]:
        if user_id not in self.dm_channels:
            channel_id = self.dm_channels[user_id] = snowflake()
            self.channels[channel_id] = {"id": channel_id, "type": 1, "recipients": [user_payload(int(user_id))],
                                         "last_message_id": None}
        return self.channels[self.dm_channels[user_id]]

    def _require(self, channel_id: str, *needed: str) -> None:
        """403 when the bot lacks a permission in a guild channel (50001 without view_channel)."""
        channel = self.channels[channel_id]
        if channel.get("type") == 1:
            return
        have = self.permissions(channel_id)
        if "view_channel" not in have:
            raise Refusal(403, 50001)
        if any(name not in have for name in needed):
            raise Refusal(403, 50013)

    def _channel_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        """A message as channel routes see it: ephemeral ones and other channels' do not exist."""
        message = self.messages.get(message_id)
        if (message is None or message_id in self.deleted or message["channel_id"] != channel_id
                or int(message.get("flags") or 0) & EPHEMERAL):
            raise Refusal(404, 10008)
        return message

    def _channel(self, record: Recorded, channel_id: str, rest: list[str]) -> web.Response:
        method = record.method
        channel = self.channels.get(channel_id)
        if channel is None:
            raise Refusal(404, 10003)
        if not rest and method == "GET":
            self._require(channel_id)
            return self._json(channel)
        if rest == ["typing"] and method == "POST":  # "imagine-bot is typing…"
            self._require(channel_id, "send_messages_in_threads" if channel.get("type") in (10, 11, 12)
                          else "send_messages")
            return web.Response(status=204)
        if not rest or rest[0] != "messages":
            return self._json({"message": f"fake Discord does not know {method} {record.path}", "code": 0},
                              status=404)
        body = record.json if isinstance(record.json, dict) else {}
        thread = channel.get("type") in (10, 11, 12)
        if len(rest) == 1 and method == "POST":  # a new message
            self._require(channel_id, "send_messages_in_threads" if thread else "send_messages",
                          *(["attach_files"] if record.files else []), *(["embed_links"] if body.get("embeds") else []))
            if channel.get("type") == 1 and channel["recipients"][0]["id"] in self.closed_dms:
                raise Refusal(403, 50007)
            self._check_body(record, body)
            if not _has_content(body, len(record.files)):
                raise Refusal(400, 50006)
            self._check_size(record, self.guild_size_limit)
            message = self._message(record, channel_id, flags=int(body.get("flags") or 0) & ~(EPHEMERAL | LOADING))
            return self._json(message)
        if len(rest) == 1 and method == "GET":
            self._require(channel_id, "read_message_history")
            return self._json([m for i, m in reversed(self.messages.items()) if m["channel_id"] == channel_id
                               and i not in self.deleted and not int(m.get("flags") or 0) & EPHEMERAL][:50])
        self._require(channel_id)
        message = self._channel_message(channel_id, rest[1])
        own = message["author"]["id"] == str(BOT_USER_ID)
        if len(rest) == 2 and method == "GET":
            self._require(channel_id, "read_message_history")
            return self._json(message)
        if len(rest) == 2 and method == "PATCH":
            if not own:
                raise Refusal(403, 50005)
            self._require(channel_id, *(["attach_files"] if record.files else []),
                          *(["embed_links"] if body.get("embeds") else []))
            self._check_body(record, body)
            self._check_size(record, self.guild_size_limit)
            return self._json(self._edit(record, rest[1]))
        if len(rest) == 2 and method == "DELETE":
            if not own:
                self._require(channel_id, "manage_messages")
            return self._delete(record, rest[1])
        if len(rest) == 5 and rest[2] == "reactions" and rest[4] == "@me" and method in ("PUT", "DELETE"):
            if method == "PUT":
                self._require(channel_id, "read_message_history", "add_reactions")
                self._check_body(record, None)
            record.message_id = rest[1]
            return web.Response(status=204)
        return self._json({"message": f"fake Discord does not know {method} {record.path}", "code": 0}, status=404)

    # --- messages ----------------------------------------------------------------------

    def _attachments(self, files: dict[str, bytes]) -> list[dict[str, Any]]:
        return [{"id": snowflake(), "filename": name, "size": len(data), "url": f"{self.base_url}/attachments/{name}",
                 "proxy_url": f"{self.base_url}/attachments/{name}"} for name, data in files.items()]

    def _message(self, record: Recorded, channel_id: str, message_id: str | None = None, *,
                 flags: int | None = None) -> dict[str, Any]:
        """A new message from the bot in `channel_id` (or a placeholder's replacement, `message_id`)."""
        body = record.json or {}
        message = {
            "id": message_id or snowflake(), "channel_id": channel_id, "type": 0, "content": body.get("content") or "",
            "author": user_payload(BOT_USER_ID, "imagine-bot", bot=True),
            "attachments": self._attachments(record.files),
            "embeds": body.get("embeds") or [], "mentions": [], "mention_roles": [], "pinned": False,
            "mention_everyone": False, "tts": False, "timestamp": datetime.now(UTC).isoformat(),
            "edited_timestamp": None, "flags": int(body.get("flags") or 0) if flags is None else flags,
            "components": body.get("components") or [],
        }
        self.messages[message["id"]] = message
        self.deleted.discard(message["id"])
        record.message_id = message["id"]
        return message

    def _edit(self, record: Recorded, message_id: str) -> dict[str, Any]:
        """The message with an edit applied (the caller checked it may be edited); 400/50006 if the edit
        leaves it empty."""
        body = record.json or {}
        message = dict(self.messages[message_id])
        for key in ("content", "components", "embeds"):
            if key in body:
                message[key] = body[key] if body[key] is not None else ([] if key != "content" else "")
        if "flags" in body and body["flags"] is not None:  # only SUPPRESS_EMBEDS can change; ephemeral stays
            message["flags"] = (int(message.get("flags") or 0) & (EPHEMERAL | LOADING)) | (int(body["flags"]) & 4)
        if record.files or "attachments" in body:
            kept = {str(a.get("id")) for a in body.get("attachments") or [] if isinstance(a, dict)}
            message["attachments"] = ([a for a in message["attachments"] if a["id"] in kept]
                                      + self._attachments(record.files))
        if not (message.get("content") or message.get("embeds") or message.get("components")
                or message.get("attachments")):
            raise Refusal(400, 50006)
        message["flags"] = int(message.get("flags") or 0) & ~LOADING
        message["edited_timestamp"] = datetime.now(UTC).isoformat()
        self.messages[message_id] = message
        record.message_id = message_id
        return message

    def _delete(self, record: Recorded, message_id: str) -> web.Response:
        self.deleted.add(message_id)
        record.message_id = message_id
        return web.Response(status=204)

    # --- interactions ------------------------------------------------------------------

    def _interaction(self, interaction_id: str, token: str) -> Interaction:
        interaction = self.interactions.get(token)
        if interaction is None:  # nobody registered it: infer it from its id, as an application command
            if not interaction_id.isdigit():
                raise Refusal(404, 10062)
            created = self._at(snowflake_time(interaction_id))
            interaction = self.interactions[token] = Interaction(interaction_id, token, 2, created, str(CHANNEL_ID),
                                                                 SIZE_LIMIT, registered=False)
        if interaction.id != interaction_id:
            raise Refusal(404, 10062)
        return interaction

    def _interaction_callback(self, record: Recorded, interaction_id: str, token: str) -> web.Response:
        interaction = self._interaction(interaction_id, token)
        if interaction.response is not None:
            raise Refusal(400, 40060)
        if self.now() - interaction.created > self.callback_window:
            raise Refusal(404, 10062)
        body = record.json if isinstance(record.json, dict) else {}
        kind = body.get("type")
        valid = set(VALID_CALLBACKS.get(interaction.kind, set()))
        if interaction.kind == 5 and interaction.message_id is not None:
            valid |= {6, 7}  # a form opened from a component may update that component's message
        if kind not in valid:
            raise Refusal(400, 50035, errors=rules.error_tree([(("type",), "INTERACTION_RESPONSE_TYPE_INVALID",
                                                                 "Interaction response type is not valid for "
                                                                 "this interaction")]))
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        self._check_body(record, data if kind in (4, 7) else None, prefix=("data",),
                         modal=data if kind == 9 else None)
        if kind == 4 and not _has_content(data, len(record.files)):
            raise Refusal(400, 50006)
        self._check_size(record, interaction.size_limit)
        message: dict[str, Any] | None = None
        if kind == 4:  # a message now
            message = self._message(Recorded(record.method, record.path, data, record.files),
                                    interaction.channel_id, flags=int(data.get("flags") or 0) & EPHEMERAL)
        elif kind == 5:  # deferred: a "thinking" placeholder
            interaction.ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
            interaction.loading = True
            message = self._message(Recorded(record.method, record.path, {}), interaction.channel_id,
                                    flags=LOADING | (EPHEMERAL if interaction.ephemeral else 0))
        elif kind in (6, 7):  # the pressed message is the original; 7 edits it now
            pressed = interaction.message_id or ""
            if pressed not in self.messages or pressed in self.deleted:
                raise Refusal(404, 10008)
            if kind == 7:
                edit = Recorded(record.method, record.path, data, record.files)
                self._edit(edit, pressed)
            message = self.messages[pressed]
        interaction.response = kind
        if message is not None:
            interaction.original = self.originals[token] = message["id"]
            interaction.messages.add(message["id"])
            record.message_id = message["id"]
        if record.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)
        resource: dict[str, Any] = {"type": kind}
        if kind in (4, 7) and message is not None:
            resource["message"] = message
        return self._json({"interaction": {
            "id": interaction.id, "type": interaction.kind,
            **({"response_message_id": message["id"], "response_message_loading": kind == 5,
                "response_message_ephemeral": bool(int(message.get("flags") or 0) & EPHEMERAL)}
               if message is not None else {})},
            "resource": resource})

    def _webhook(self, record: Recorded, application_id: str, token: str, rest: list[str]) -> web.Response:
        interaction = self.interactions.get(token)
        if interaction is None or interaction.response is None or application_id != str(APPLICATION_ID):
            raise Refusal(404, 10015)  # no such webhook until the interaction is answered
        if self.now() - interaction.created > self.token_lifetime:
            raise Refusal(401, 50027)
        body = record.json if isinstance(record.json, dict) else {}
        if not rest and record.method == "POST":  # a followup message
            self._check_body(record, body)
            if not _has_content(body, len(record.files)):
                raise Refusal(400, 50006)
            self._check_size(record, interaction.size_limit)
            if interaction.loading and interaction.original is not None:  # it replaces the "thinking" placeholder
                flags = (int(body.get("flags") or 0) & ~(EPHEMERAL | LOADING)) | (
                    EPHEMERAL if interaction.ephemeral else 0)
                message = self._message(record, interaction.channel_id, interaction.original, flags=flags)
                interaction.loading = False
            else:
                message = self._message(record, interaction.channel_id, flags=int(body.get("flags") or 0) & ~LOADING)
            interaction.messages.add(message["id"])
            return self._json(message)
        if len(rest) == 2 and rest[0] == "messages":
            original = rest[1] == "@original"
            message_id = interaction.original if original else rest[1]
            if (message_id is None or message_id not in interaction.messages or message_id in self.deleted
                    or message_id not in self.messages):
                raise Refusal(404, 10008)
            if record.method == "GET":
                return self._json(self.messages[message_id])
            if record.method == "PATCH":
                self._check_body(record, body)
                self._check_size(record, interaction.size_limit)
                message = self._edit(record, message_id)
                if original:
                    interaction.loading = False
                return self._json(message)
            if record.method == "DELETE":
                if original:
                    interaction.loading = False
                return self._delete(record, message_id)
        return self._json({"message": "unknown webhook route", "code": 0}, status=404)


# ---------------------------------------------------------------------------
# gateway payloads


async def connect(bot, *, thread: bool = False) -> None:
    """Log a bot in against the fake server (setup_hook runs) and deliver READY and GUILD_CREATE,
    as the gateway would: the bot then sees the test server and its channels (and, with `thread`,
    the public threads THREAD_ID and NSFW_THREAD_ID in two of them)."""
    await bot.login("fake-token")
    bot._connection.parsers["READY"](ready_payload())
    bot._connection.parsers["GUILD_CREATE"](guild_create_payload(thread=thread))


def ready_payload() -> dict[str, Any]:
    return {"v": 10, "user": user_payload(BOT_USER_ID, "imagine-bot", bot=True), "guilds": [
        {"id": str(GUILD_ID), "unavailable": True}], "session_id": "session", "resume_gateway_url": "ws://127.0.0.1",
        "shard": [0, 1], "application": {"id": str(APPLICATION_ID), "flags": 0}}


THREADS = {THREAD_ID: (CHANNEL_ID, "imagine-thread"), NSFW_THREAD_ID: (NSFW_CHANNEL_ID, "after-dark-thread")}


def thread_payload(thread_id: int = THREAD_ID) -> dict[str, Any]:
    """A public thread (THREAD_ID of CHANNEL_ID, NSFW_THREAD_ID of NSFW_CHANNEL_ID), as GUILD_CREATE
    and the REST API give it."""
    parent_id, name = THREADS[thread_id]
    return {"id": str(thread_id), "type": 11, "guild_id": str(GUILD_ID), "parent_id": str(parent_id),
            "name": name, "owner_id": "1", "last_message_id": None, "message_count": 0,
            "member_count": 1, "rate_limit_per_user": 0, "flags": 0, "total_message_sent": 0,
            "thread_metadata": {"archived": False, "auto_archive_duration": 1440, "locked": False,
                                "archive_timestamp": "2026-01-01T00:00:00+00:00"}}


def guild_create_payload(*, thread: bool = False) -> dict[str, Any]:
    return {"id": str(GUILD_ID), "name": "Test server", "icon": None, "owner_id": "1", "unavailable": False,
            "member_count": 3, "large": False, "features": [], "premium_tier": 0, "roles": [
                {"id": str(GUILD_ID), "name": "@everyone", "permissions": str(0x4_0000_0000 | 0x800 | 0x400),
                 "position": 0, "color": 0, "hoist": False, "managed": False, "mentionable": False},
                role_payload(MODERATOR_ROLE_ID),
                role_payload(SUPPORTER_ROLE_ID), role_payload(ADMIN_ROLE_ID)],
            "channels": [{"id": str(CHANNEL_ID), "type": 0, "name": "imagine", "position": 0,
                          "permission_overwrites": [], "guild_id": str(GUILD_ID)},
                         {"id": str(OTHER_CHANNEL_ID), "type": 0, "name": "general", "position": 1,
                          "permission_overwrites": [], "guild_id": str(GUILD_ID)},
                         {"id": str(NSFW_CHANNEL_ID), "type": 0, "name": "after-dark", "position": 2, "nsfw": True,
                          "permission_overwrites": [], "guild_id": str(GUILD_ID)}],
            "members": [], "voice_states": [], "presences": [], "emojis": [], "stickers": [],
            "threads": [thread_payload(thread_id) for thread_id in THREADS] if thread else [],
            "stage_instances": [], "guild_scheduled_events": [], "soundboard_sounds": [], "verification_level": 0,
            "default_message_notifications": 0, "explicit_content_filter": 0, "mfa_level": 0, "nsfw_level": 0,
            "system_channel_id": None, "rules_channel_id": None, "preferred_locale": "en-US",
            "joined_at": "2026-01-01T00:00:00+00:00"}


def role_payload(role_id: int) -> dict[str, Any]:
    names = {MODERATOR_ROLE_ID: "Moderator", SUPPORTER_ROLE_ID: "Supporter", ADMIN_ROLE_ID: "Admin"}
    permissions = {MODERATOR_ROLE_ID: MANAGE_MESSAGES, ADMIN_ROLE_ID: MANAGE_GUILD | MANAGE_MESSAGES}
    positions = {SUPPORTER_ROLE_ID: 1, MODERATOR_ROLE_ID: 2, ADMIN_ROLE_ID: 3}
    return {"id": str(role_id), "name": names.get(role_id, f"role{role_id % 1000}"),
            "permissions": str(permissions.get(role_id, 0)), "position": positions.get(role_id, 1), "color": 0,
            "hoist": False, "managed": False, "mentionable": False}


def _channel_of(channel_id: int) -> dict[str, Any]:
    if channel_id in THREADS:
        thread = thread_payload(channel_id)
        return {key: thread[key] for key in ("id", "type", "guild_id", "name", "parent_id", "thread_metadata")}
    names = {OTHER_CHANNEL_ID: "general", NSFW_CHANNEL_ID: "after-dark"}
    return {"id": str(channel_id), "type": 0, "guild_id": str(GUILD_ID), "name": names.get(channel_id, "imagine"),
            "nsfw": channel_id == NSFW_CHANNEL_ID}


def _interaction_base(kind: int, user_id: int, permissions: int, size_limit: int = SIZE_LIMIT,
                      channel_id: int = CHANNEL_ID, roles: tuple[int, ...] = ()) -> dict[str, Any]:
    return {"id": snowflake(), "application_id": str(APPLICATION_ID), "type": kind, "token": f"token-{snowflake()}",
            "version": 1, "guild_id": str(GUILD_ID), "channel_id": str(channel_id), "channel": _channel_of(channel_id),
            "member": member_payload(user_id, permissions=permissions, roles=roles), "locale": "en-US",
            "guild_locale": "en-US",
            "app_permissions": str(0x4_0000_0000 | 0x800 | 0x400 | 0x8000), "entitlements": [],
            "authorizing_integration_owners": {"0": str(GUILD_ID)}, "context": 0,
            "attachment_size_limit": size_limit}


USER, CHANNEL, ROLE = 6, 7, 8  # option types whose values Discord resolves into objects


def command_payload(name: str, options: dict[str, Any], user_id: int, *, permissions: int = 0,
                    option_types: dict[str, int] | None = None, size_limit: int = SIZE_LIMIT,
                    channel_id: int = CHANNEL_ID, roles: tuple[int, ...] = ()) -> dict[str, Any]:
    """INTERACTION_CREATE for a slash command (string options unless `option_types` says otherwise).
    `name` may name a subcommand ("admin ban", "admin words add"); a USER, CHANNEL or ROLE option's
    value is an id, resolved as Discord resolves it (a member of the test server, its channel, its role)."""
    types = option_types or {}
    payload = _interaction_base(2, user_id, permissions, size_limit, channel_id, roles)
    given = [{"name": key, "type": types.get(key, 3), "value": str(value) if types.get(key) in (USER, CHANNEL, ROLE)
              else value} for key, value in options.items()]
    root, *path = name.split()
    for depth, part in reversed(list(enumerate(path))):  # the innermost subcommand holds the options
        given = [{"name": part, "type": 1 if depth == len(path) - 1 else 2, "options": given}]
    payload["data"] = {"id": snowflake(), "name": root, "type": 1, "options": given}
    resolved: dict[str, dict[str, Any]] = {}
    for key, value in options.items():
        kind = types.get(key)
        if kind == USER:
            resolved.setdefault("users", {})[str(value)] = user_payload(int(value))
            member = member_payload(int(value))
            del member["user"]
            resolved.setdefault("members", {})[str(value)] = member
        elif kind == CHANNEL:
            resolved.setdefault("channels", {})[str(value)] = {**_channel_of(int(value)), "permissions": "0"}
        elif kind == ROLE:
            resolved.setdefault("roles", {})[str(value)] = role_payload(int(value))
    if resolved:
        payload["data"]["resolved"] = resolved
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
                      values: list[str] | None = None, roles: tuple[int, ...] = ()) -> dict[str, Any]:
    """INTERACTION_CREATE for a button press on `message` (as the fake server holds it), or for
    a choice in a select menu when `values` are given."""
    payload = _interaction_base(3, user_id, permissions, channel_id=int(message.get("channel_id") or CHANNEL_ID),
                                roles=roles)
    payload["message"] = message
    payload["data"] = {"custom_id": custom_id, "component_type": 2 if values is None else 3}
    if values is not None:
        payload["data"]["values"] = values
    return payload


def modal_submit_payload(custom_id: str, fields: dict[str, str], user_id: int,
                         message: dict[str, Any] | None = None) -> dict[str, Any]:
    """INTERACTION_CREATE for a submitted form: `fields` maps each text input's custom_id to its text;
    `message`: the message whose button opened the form (Discord sends it then)."""
    payload = _interaction_base(5, user_id, 0)
    payload["data"] = {"custom_id": custom_id, "components": [
        {"type": 1, "components": [{"type": 4, "custom_id": key, "value": value}]} for key, value in fields.items()]}
    if message is not None:
        payload["message"] = message
    return payload


def reaction_payload(message_id: str, emoji: str, user_id: int, *, moderator: bool = False,
                     channel_id: int = CHANNEL_ID) -> dict[str, Any]:
    """MESSAGE_REACTION_ADD: `user_id` (a moderator: may manage messages) reacts with a unicode `emoji`
    on a message in `channel_id` (CHANNEL_ID or THREAD_ID)."""
    return {"user_id": str(user_id), "channel_id": str(channel_id), "message_id": message_id,
            "guild_id": str(GUILD_ID), "member": member_payload(user_id, moderator=moderator),
            "emoji": {"id": None, "name": emoji}, "type": 0, "burst": False, "burst_colors": []}
