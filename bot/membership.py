"""Who is a member of which server, and which of its channels they may see, for the web app.

The web app never talks to Discord itself: it asks the bot. A member is looked up in the
bot's cache, else through the API (`GET /guilds/{id}/members/{user}`: no privileged intent
needed), and the answer kept a few minutes; lookups of the same member at once share one
request. What a member may see of a server's jobs follows Discord: a job posted in a channel
they cannot view, or in an age-restricted one (the web has no age gate), is not theirs to see.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
import discord

log = logging.getLogger(__name__)

KEEP_SECONDS = 300.0
MAX_KEPT = 10_000


class MembershipUnknown(Exception):
    """Discord did not answer whether someone is a member (an outage, a rate limit): ask again later."""


class Membership:
    def __init__(self, client: discord.Client, *, keep_seconds: float = KEEP_SECONDS) -> None:
        self.client = client
        self.keep_seconds = keep_seconds
        self._known: dict[tuple[int, int], tuple[float, discord.Member | None]] = {}
        self._asking: dict[tuple[int, int], asyncio.Future[discord.Member | None]] = {}  # lookups under way

    async def member(self, guild_id: int, user_id: int) -> discord.Member | None:
        """The member (with their roles now), or None when they are not one, or the bot is not
        on that server; MembershipUnknown when Discord did not say (or the bot is not connected yet)."""
        key = (guild_id, user_id)
        known = self._known.get(key)
        if known is not None and time.monotonic() - known[0] < self.keep_seconds:
            return known[1]
        if key not in self._asking:  # one lookup for every page that asks meanwhile; not cancelled with any one
            self._asking[key] = asyncio.ensure_future(self._look_up(guild_id, user_id))
            self._asking[key].add_done_callback(lambda _: self._asking.pop(key, None))
        return await asyncio.shield(self._asking[key])

    async def _look_up(self, guild_id: int, user_id: int) -> discord.Member | None:
        guild = self.client.get_guild(guild_id)
        if guild is None and not self.client.is_ready():  # its servers are not all known yet: no answer yet
            raise MembershipUnknown
        member = guild.get_member(user_id) if guild is not None else None
        if guild is not None and member is None:
            try:
                member = await guild.fetch_member(user_id)
            except discord.NotFound:
                member = None
            except (discord.HTTPException, aiohttp.ClientError, TimeoutError) as error:
                log.info("could not ask Discord whether user %s is in guild %s: %s", user_id, guild_id, error)
                raise MembershipUnknown from None
        self._known[(guild_id, user_id)] = (time.monotonic(), member)
        while len(self._known) > MAX_KEPT:
            self._known.pop(next(iter(self._known)))
        return member

    def forget(self, guild_id: int, user_id: int) -> None:
        """Ask Discord again next time (a member who was just refused, say)."""
        self._known.pop((guild_id, user_id), None)

    def sees(self, member: discord.Member, channel_id: int | None) -> bool:
        """Whether the member may see what was posted in the channel (or its thread); a job with no
        channel was made on the web, in the server itself. Age-restricted channels are out."""
        if channel_id is None:
            return True
        channel = member.guild.get_channel_or_thread(channel_id)
        if isinstance(channel, discord.Thread):
            if channel.is_private():  # its members are not known here: only the job's owner sees it
                return False
            channel = channel.parent
        if channel is None or getattr(channel, "is_nsfw", lambda: False)():
            return False
        return channel.permissions_for(member).view_channel

    def visible_channels(self, member: discord.Member) -> list[int]:
        """The channels (and known threads) of the member's server whose jobs they may see."""
        seen = [channel.id for channel in member.guild.channels if self.sees(member, channel.id)]
        return seen + [thread.id for thread in member.guild.threads if self.sees(member, thread.id)]
