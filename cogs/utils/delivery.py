"""Delivering a job to Discord: the progress message, its edits, and the result.

The rules (docs/architecture.md, Delivery): the message is edited through the
interaction's webhook while its token is valid (15 minutes) and through the bot's
channel permissions after that; progress edits are throttled; a message deleted
meanwhile ends the updates quietly; files fit the interaction's `filesize_limit`
(PNG when it fits, else WebP), the full PNG always stays in the image store.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import discord
from PIL import Image

log = logging.getLogger(__name__)

# Discord lets an interaction token be used for 15 minutes; keep a margin for slow edits
TOKEN_LIFETIME = timedelta(minutes=14, seconds=30)
WEBP_QUALITIES = (95, 85, 70, 50)
CONTENT_LIMIT = 2000  # Discord refuses longer message content (400, code 50035)


def mention_only(user_id: int) -> discord.AllowedMentions:
    """The one person a message may ping: whoever it is for. A prompt that carries `<@someone>`,
    `<@&role>` or `@everyone` pings nobody else (the client's default is no mentions at all)."""
    return discord.AllowedMentions(users=[discord.Object(user_id)], roles=False, everyone=False, replied_user=False)


def fit_content(text: str) -> str:
    """Content cut to Discord's limit with an ellipsis: the last guard before a request."""
    return text if len(text) <= CONTENT_LIMIT else text[:CONTENT_LIMIT - 1] + "…"


async def defer_thinking(interaction: discord.Interaction) -> None:
    """Answer with Discord's "thinking…" placeholder, and remember its message id so the job
    message can still be edited through the channel once the interaction token expires."""
    response = await interaction.response.defer(thinking=True)
    interaction.extras["original_message_id"] = response.message_id if response is not None else None


def encode_for_upload(image: Image.Image, name: str, size_limit: int) -> discord.File:
    """PNG when it fits under `size_limit`, else the best WebP that does (else the smallest)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    if buffer.tell() <= size_limit:
        buffer.seek(0)
        return discord.File(buffer, filename=f"{name}.png")
    for quality in WEBP_QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=quality, method=4)
        if buffer.tell() <= size_limit:
            break
    buffer.seek(0)
    return discord.File(buffer, filename=f"{name}.webp")


DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024  # Discord's upload limit on a server without boosts


@dataclass
class JobMessage:
    """One message that shows a job's state; knows which way it can still be edited.

    With an interaction, its webhook is used while the token lives; without one (a job
    recovered after a restart) or after 15 minutes, the bot's own channel access."""

    client: discord.Client
    channel_id: int
    owner_id: int  # the only person its messages may ping
    interaction: discord.Interaction | None = None
    message_id: int | None = None  # None until known: the interaction's original response
    original: bool = True  # the interaction's own response (else a followup)
    min_interval: float = 3.0
    gone: bool = False  # deleted by someone: stop editing
    _last_edit: float = field(default=-1e9, repr=False)

    @property
    def token_valid(self) -> bool:
        return (self.interaction is not None
                and discord.utils.utcnow() - self.interaction.created_at < TOKEN_LIFETIME)

    @property
    def size_limit(self) -> int:
        if self.interaction is not None:
            return self.interaction.filesize_limit
        channel = self.client.get_channel(self.channel_id)
        guild = getattr(channel, "guild", None)
        return guild.filesize_limit if guild is not None else DEFAULT_SIZE_LIMIT

    def _channel(self) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(self.channel_id)

    def due(self) -> bool:
        """Whether a throttled edit may go out now."""
        return time.monotonic() - self._last_edit >= self.min_interval

    async def edit(self, **fields: Any) -> None:
        """Edit now (the caller decides about throttling with `due()`); 404 ends updates quietly."""
        if self.gone:
            return
        self._last_edit = time.monotonic()
        if "content" in fields:
            fields["content"] = fit_content(fields["content"])
        fields["allowed_mentions"] = mention_only(self.owner_id)
        try:
            if self.token_valid and self.original:
                message = await self.interaction.edit_original_response(**fields)
                self.message_id = message.id
            elif self.token_valid and self.message_id is not None:
                await self.interaction.followup.edit_message(self.message_id, **fields)
            elif self.message_id is not None:
                await self._channel().get_partial_message(self.message_id).edit(**fields)
        except discord.NotFound:
            log.info("message for channel %s was deleted; no more updates", self.channel_id)
            self.gone = True

    async def delete(self) -> None:
        if self.gone:
            return
        try:
            if self.token_valid and self.original:
                await self.interaction.delete_original_response()
            elif self.token_valid and self.message_id is not None:
                await self.interaction.followup.delete_message(self.message_id)
            elif self.message_id is not None:
                await self._channel().get_partial_message(self.message_id).delete()
        except discord.NotFound:
            pass
        self.gone = True

    async def send_result(self, **fields: Any) -> discord.Message | None:
        """A new message (so its owner is notified), then the progress message goes away."""
        fields["content"] = fit_content(fields.get("content", ""))
        mentions = mention_only(self.owner_id)
        try:
            if self.token_valid:
                message = await self.interaction.followup.send(wait=True, allowed_mentions=mentions, **fields)
            else:
                message = await self._channel().send(allowed_mentions=mentions, **fields)
        except discord.NotFound:  # the channel is gone: nobody to deliver to
            log.info("channel %s is gone; result not posted", self.channel_id)
            return None
        await self.delete()
        return message


async def load_images(paths: list[str]) -> list[Image.Image]:
    """Read stored pictures off the event loop."""
    def read() -> list[Image.Image]:
        images = []
        for path in paths:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images
    return await asyncio.to_thread(read)
