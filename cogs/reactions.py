"""Reactions on the bot's messages, as on Midjourney: ✉️ ❌ ❤️ 🔄.

Every message the bot posts for a job is recorded (`job_messages`), so these work on
each of them: the grid, a U1–U4 post, a /history or /favourites bring-back. ✉️ sends
the reactor the job's full parameters in a DM; ❌ by the one the message is for (or
someone who may manage messages there) cancels a job still in the queue or deletes the
message (the pictures stay in the store and in /history); ❤️ adds the pictures to the
reactor's favourites (on a U1–U4 post, that picture); 🔄 rerolls the job as a new job of
the reactor's. A member the server banned from the bot, or a reaction in a channel the bot
does not answer in, gets nothing (a reaction has no private answer, and a public one would
say why to everyone); ❌ works everywhere, and a moderator's ❌ on someone else's message
(a delete, or the cancel of a job still running) is written to the audit.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.messages import shorten
from bot.replies import CONTENT_LIMIT
from bot.rules import Asker, Refused
from storage import repository as repo
from storage.images import read_parameters
from storage.job_requests import SourceGone, reroll_job
from storage.models import Job, JobMessage, JobState

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

ENVELOPE, CROSS, HEART, REROLL = "✉", "❌", "❤", "🔄"  # compared without the emoji variation selector


class Reactions(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        if self.bot.user is not None and payload.user_id == self.bot.user.id:
            return
        emoji = str(payload.emoji).replace("\ufe0f", "")
        if emoji not in (ENVELOPE, CROSS, HEART, REROLL):
            return
        async with self.bot.sessionmaker() as session:
            job = await repo.get_job_by_message(session, message_id=payload.message_id)
            message = await repo.get_message(session, message_id=payload.message_id)
        if job is None or message is None:  # not a message of ours, or one we no longer track
            return
        asker = Asker.of_reaction(self.bot, payload)
        if emoji != CROSS:  # ❌ is the owner's and the moderators' wherever the message is
            try:
                self.bot.rules.check_access(asker)
                if emoji == ENVELOPE:  # a DM per reaction: counted like any request
                    self.bot.rules.check_burst(asker)
            except Refused:
                # a banned member, or a channel the bot no longer answers in: a reaction has no private
                # answer, and a public one would tell the channel why (or let anyone make the bot talk)
                return
        try:
            if emoji == ENVELOPE:
                await self.send_parameters(payload.user_id, job)
            elif emoji == CROSS:
                await self.cancel_or_delete(payload, job, message)
            elif emoji == HEART:
                await self.favourite(payload.user_id, job, message.index)
            elif job.state == JobState.DONE:
                await self.reroll(asker, job)
        except Exception:
            log.exception("reaction %s on job %s by user %s failed", emoji, job.id, payload.user_id)

    async def send_parameters(self, user_id: int, job: Job) -> None:
        """✉️: everything needed to make the pictures again, privately."""
        try:
            parameters = await asyncio.to_thread(read_parameters, job.images[0].path) if job.images else None
        except OSError:  # the pictures expired (or were removed): the prompt and seeds are still worth sending
            parameters = None
        seeds = ", ".join(str(image.seed) for image in job.images) or str(job.seed)
        lines = [f"**{job.prompt}**", f"Job ID: `{job.id}`", f"Seed: {job.seed} (pictures: {seeds})"]
        if job.parent_id is not None:
            lines.append(f"Made from job `{job.parent_id}`")
        if parameters:
            lines.append(f"```\n{parameters}\n```")
        message: dict = {"content": "\n".join(lines)}
        if len(message["content"]) > CONTENT_LIMIT:  # the whole text as a file; the message says what it is
            message = {"content": f"**{shorten(job.prompt, 1500)}**\nJob ID: `{job.id}` · Seed: {job.seed}\n"
                                  "The full prompt and parameters are in the attached file.",
                       "file": discord.File(io.BytesIO(message["content"].encode()),
                                            filename=f"job-{job.id}-parameters.txt")}
        try:
            dm = await self.bot.create_dm(discord.Object(user_id))
            await dm.send(**message)
        except discord.Forbidden:
            log.info("user %s does not take DMs; parameters of job %s not sent", user_id, job.id)

    async def cancel_or_delete(self, payload: discord.RawReactionActionEvent, job: Job, message: JobMessage) -> None:
        """❌: only the one the message is for (the job's owner; whoever pressed U1–U4 or brought it
        back), or a member who may manage messages in that channel."""
        if payload.user_id != message.user_id and not self._may_manage_messages(payload):
            return
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            await self.bot.jobs.cancel(job.id)
            if payload.user_id != message.user_id and payload.guild_id is not None:
                await self.audit(payload, message.user_id, "cancel", job)
            return
        channel = self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id)
        with contextlib.suppress(discord.NotFound):
            await channel.get_partial_message(payload.message_id).delete()
        if payload.user_id != message.user_id and payload.guild_id is not None:  # a moderator's doing: audited
            await self.audit(payload, message.user_id, "delete", job)

    async def audit(self, payload: discord.RawReactionActionEvent, owner_id: int, action: str, job: Job) -> None:
        assert payload.guild_id is not None
        async with self.bot.sessionmaker.begin() as session:
            await repo.record_audit(session, guild_id=payload.guild_id, moderator_id=payload.user_id, action=action,
                                    target_user_id=owner_id, detail=f"job {job.id}: {shorten(job.prompt, 200)}")

    def _may_manage_messages(self, payload: discord.RawReactionActionEvent) -> bool:
        member = payload.member
        if member is None:
            return False
        # a thread's permissions are its parent channel's (Thread.permissions_for reads them there)
        channel = member.guild.get_channel_or_thread(payload.channel_id)
        if channel is None or (isinstance(channel, discord.Thread) and channel.parent is None):
            return False  # a channel the bot does not know: its overwrites cannot be read, so no
        return channel.permissions_for(member).manage_messages

    async def reroll(self, asker: Asker, job: Job) -> None:
        """🔄: the job made again as a new job of the reactor's, in their default mode."""
        try:
            new_job = reroll_job(job)
        except SourceGone:
            await self.bot.delivery.say_in_channel(asker.channel_id or 0, asker.guild_id, asker.user_id,
                                                   "The picture this grid was made from is gone: run /imagine again.")
            return
        async with self.bot.sessionmaker.begin() as session:
            user = await repo.ensure_user(session, user_id=asker.user_id)
        await self.bot.delivery.submit_in_channel(asker, user, [new_job])

    async def favourite(self, user_id: int, job: Job, index: int | None) -> None:
        """❤️ on a U1–U4 post: that picture; on a grid: all of its pictures."""
        async with self.bot.sessionmaker.begin() as session:
            for image in job.images:
                if index is None or image.index == index:
                    await repo.add_favourite(session, user_id=user_id, image_id=image.id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Reactions(bot))
