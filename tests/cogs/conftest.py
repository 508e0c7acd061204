"""The bot on the real discord.py stack, talking to a fake Discord (see helpers/discord_harness.py)."""

from __future__ import annotations

import asyncio
import gc
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from helpers.discord_harness import (
    CHANNEL_ID,
    SIZE_LIMIT,
    FakeDiscord,
    Recorded,
    attachment_payload,
    command_payload,
    component_payload,
    connect,
    modal_submit_payload,
    reaction_payload,
    with_attachments,
)
from helpers.gates import hold_jobs_at_start

from bot.bot import ImagineBot
from bot.config import DiscordSettings, StorageSettings, WebSettings, load_settings
from bot.fetch import FetchPolicy
from storage import repository as repo

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Harness:
    bot: ImagineBot
    discord: FakeDiscord

    def dispatch(self, payload: dict[str, Any]) -> str:
        """Deliver INTERACTION_CREATE as Discord would: the fake Discord learns of the interaction
        (its 3 s and 15 min windows start now, its upload limit, the message it was pressed on) and
        `app_permissions` says what the test left the bot in that channel. Returns the token."""
        payload["app_permissions"] = str(self.discord.app_permissions(payload["channel_id"]))
        if "member" in payload:  # whoever uses the bot in the server is one of its members
            self.discord.add_member(payload["member"]["user"]["id"])
        self.discord.interaction_created(payload["token"], payload["id"], payload["type"],
                                         (payload.get("message") or {}).get("id"),
                                         size_limit=payload["attachment_size_limit"], channel_id=payload["channel_id"])
        self.bot._connection.parsers["INTERACTION_CREATE"](payload)
        return payload["token"]

    def command(self, name: str, user_id: int, option_types: dict[str, int] | None = None,
                size_limit: int = SIZE_LIMIT, files: dict[str, tuple[str, bytes]] | None = None,
                channel_id: int = CHANNEL_ID, permissions: int = 0, roles: tuple[int, ...] = (),
                **options: Any) -> str:
        """Run a slash command (or a subcommand: "admin ban") as `user_id` (in `channel_id`: CHANNEL_ID,
        OTHER_CHANNEL_ID or THREAD_ID), a member with `permissions` and `roles`; returns the interaction
        token (its requests' key). `files` maps attachment options to (filename, bytes) uploaded with it."""
        payload = command_payload(name, options, user_id, option_types=option_types, size_limit=size_limit,
                                  channel_id=channel_id, permissions=permissions, roles=roles)
        if files:
            with_attachments(payload, {key: attachment_payload(self.discord, filename, data)
                                       for key, (filename, data) in files.items()})
        return self.dispatch(payload)

    def press(self, message_id: str, custom_id: str, user_id: int, values: list[str] | None = None,
              roles: tuple[int, ...] = ()) -> str:
        """Press a button (or choose `values` in a select) on a message the fake server holds."""
        return self.dispatch(component_payload(self.discord.messages[message_id], custom_id, user_id, values=values,
                                               roles=roles))

    def submit_form(self, custom_id: str, fields: dict[str, str], user_id: int, message_id: str | None = None) -> str:
        """Send a form; `message_id`: the message whose button opened it (Discord then says so)."""
        message = self.discord.messages[message_id] if message_id is not None else None
        return self.dispatch(modal_submit_payload(custom_id, fields, user_id, message))

    async def form(self, token: str) -> dict[str, Any]:
        """The form (modal) an interaction answered with."""
        callback = await self.discord.wait_for(lambda: next(
            (r for r in self.of(token) if r.path.endswith("/callback")), None))
        assert callback.json["type"] == 9, callback.json  # a form
        return callback.json["data"]

    def response_message(self, token: str) -> dict[str, Any]:
        """The message an interaction's response created (as the fake server holds it now)."""
        return self.discord.messages[self.discord.originals[token]]

    def reaction_payload(self, message_id: str, emoji: str, user_id: int, *, moderator: bool = False,
                         channel_id: int = CHANNEL_ID) -> dict[str, Any]:
        """MESSAGE_REACTION_ADD's payload, to change before delivering it."""
        return reaction_payload(message_id, emoji, user_id, moderator=moderator, channel_id=channel_id)

    def react(self, message_id: str, emoji: str, user_id: int, *, moderator: bool = False,
              channel_id: int = CHANNEL_ID) -> None:
        self.bot._connection.parsers["MESSAGE_REACTION_ADD"](
            self.reaction_payload(message_id, emoji, user_id, moderator=moderator, channel_id=channel_id))

    def message_of_job(self, job_id: int) -> str:
        """The id of the message that carries a job's buttons."""
        return next(i for i, m in self.discord.messages.items() if f":{job_id}:0" in str(m["components"]))

    def of(self, token: str) -> list[Recorded]:
        """Every request made for one interaction (its callback and its webhook calls)."""
        return [r for r in self.discord.requests if f"/{token}" in r.path]

    async def result(self, token: str, timeout: float = 120.0) -> Recorded:
        """The first followup that carries a file and that Discord accepted: the job's result message."""
        return await self.discord.wait_for(lambda: next(
            (r for r in self.of(token) if r.method == "POST" and r.path.endswith(token) and r.files and r.accepted),
            None), timeout)

    async def ephemeral_reply(self, token: str) -> Recorded:
        """The private answer to an interaction (its callback, or a followup): a request Discord
        accepted and whose message is ephemeral (a followup replacing a public deferral is not),
        with something to read (a private "thinking…" deferral is not an answer yet)."""
        def says_something(record: Recorded) -> bool:
            body = (record.json or {}).get("data") or record.json or {}
            return bool(body.get("content") or body.get("embeds") or record.files)
        return await self.discord.wait_for(lambda: next(
            (r for r in self.of(token) if r.method == "POST" and r.accepted
             and self.discord.is_ephemeral(r.message_id) and says_something(r)), None))

    async def ephemeral_text(self, token: str) -> str:
        reply = await self.ephemeral_reply(token)
        return (reply.json.get("data") or reply.json)["content"]

    async def job(self, job_id: int):
        async with self.bot.sessionmaker() as session:
            return await repo.get_job(session, job_id=job_id)

    async def job_when(self, job_id: int, condition, timeout: float = 30.0):
        """The job once `condition(job)` holds (the bot writes some things just after Discord answers)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not condition(job := await self.job(job_id)):
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"job {job_id} never reached the expected state")
            await asyncio.sleep(0.01)
        return job


@pytest.fixture
async def start_bot(fake_discord, engine, tmp_path, caplog):
    """Start a logged-in bot (setup_hook done, READY and GUILD_CREATE seen) on this test's
    database and image folder; call it again after `stop()` to restart on the same data.

    The test fails if anything logs an error: discord.py swallows exceptions in
    handlers and only logs them."""
    caplog.set_level(logging.INFO)
    settings = replace(
        load_settings(ROOT / "config.toml"),
        storage=StorageSettings(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}", tmp_path / "images"),
        images=FetchPolicy(allow_private_addresses=True),  # attachments live on the fake server, 127.0.0.1
        web=WebSettings(enabled=False),  # tests/web/ starts it where it is tested
    )
    running: list[ImagineBot] = []
    expected_errors: list[str] = []

    async def start(*, progress_edit_seconds: float = 0.0, redelivery_seconds: float = 60.0, thread: bool = False,
                    expect_errors: tuple[str, ...] = (), **changes: Any) -> Harness:
        """`expect_errors`: texts of error logs the test provokes on purpose; `changes`: settings
        other than config.toml's (`quotas=QuotaSettings(...)`, `moderation=...`, `queue=...`)."""
        expected_errors.extend(expect_errors)
        discord_settings = DiscordSettings(sync_guild_id=None, progress_edit_seconds=progress_edit_seconds,
                                           redelivery_seconds=redelivery_seconds)
        bot = ImagineBot(replace(settings, discord=discord_settings, **changes), engine=engine,
                         guild_ready_timeout=0.01)
        running.append(bot)
        await connect(bot, thread=thread)
        return Harness(bot, fake_discord)

    yield start
    for bot in running:
        if not bot.is_closed():
            await bot.close()
    gc.collect()  # a database connection the test left open is reported here, against this test
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR
              and not any(expected in r.getMessage() for expected in expected_errors)]
    assert not errors, errors


@pytest.fixture
async def harness(start_bot) -> Harness:
    return await start_bot()


@pytest.fixture
def gate(harness):
    """Hold every job at its start until the test opens the gate (the queue fills up meanwhile)."""
    opened = hold_jobs_at_start(harness.bot.jobs)
    yield opened
    opened.set()
