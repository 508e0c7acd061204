"""Your place in the queue: /info, /cancel, and /fast /relax /turbo to pick your default mode."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.messages import field_lines, shorten
from bot.replies import duration
from bot.rules import Asker, FastTime
from storage import repository as repo
from storage.models import JobState, QueueMode

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

MODE_HELP = {
    QueueMode.FAST: "Fast: your jobs go ahead of relaxed ones.",
    QueueMode.RELAX: "Relax: your jobs wait behind fast and turbo ones.",
    QueueMode.TURBO: "Turbo: your jobs go first.",
}


def fast_time_text(fast: FastTime) -> str:
    """What /info says of a member's fast time: used, left, and when it comes back."""
    if not fast.per_day and not fast.per_month:
        return f"unlimited ({duration(fast.used_today)} used today)"
    lines = []
    for what, used, limit, back in (("today", fast.used_today, fast.per_day, "at 00:00 UTC"),
                                    ("this month", fast.used_this_month, fast.per_month, "on the 1st, 00:00 UTC")):
        if limit:
            left = max(0.0, limit - used - fast.reserved)
            held = f" (+ about {duration(fast.reserved)} for your jobs not finished)" if fast.reserved else ""
            lines.append(f"{what}: {duration(used)} used{held} of {duration(limit)}, {duration(left)} left"
                         f"{'' if left else f' (relax until it comes back {back})'}")
    return "\n".join(lines)


class Queue(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="info", description="Your running and queued jobs, your mode and your usage")
    async def info(self, interaction: discord.Interaction) -> None:
        user_id = interaction.user.id
        async with self.bot.sessionmaker.begin() as session:
            user = await repo.ensure_user(session, user_id=user_id)
            unfinished = await repo.list_unfinished_jobs_of(session, user_id=user_id)
            usage = await repo.usage_of(session, user_id=user_id)
        asker = Asker.of(interaction)
        mode = self.bot.rules.default_mode(asker, user)
        fast = await self.bot.rules.fast_time(asker)
        embed = discord.Embed(title="Your info", colour=discord.Colour.blurple())
        embed.add_field(name="Mode", value=MODE_HELP[mode], inline=False)
        running = [job for job in unfinished if job.state == JobState.RUNNING]
        queued = [job for job in unfinished if job.state == JobState.QUEUED]
        embed.add_field(name=f"Running ({len(running)})", inline=False, value=field_lines(
            [f"`{job.id}` {shorten(job.prompt)}" for job in running]))
        lines = []
        for job in queued:
            position = self.bot.jobs.position(job.id)
            estimate = self.bot.jobs.estimate_seconds(job.id)
            where = f"{position + 1} in the queue" if position is not None else "waiting"
            about = f", about {duration(estimate)}" if estimate is not None else ""
            lines.append(f"`{job.id}` {shorten(job.prompt)} ({where}{about})")
        embed.add_field(name=f"Queued ({len(queued)})", value=field_lines(lines), inline=False)
        embed.add_field(name="Usage", inline=False, value=(
            f"{usage.jobs_done} jobs, {usage.images} pictures, {duration(usage.generation_seconds)} of generation"))
        embed.add_field(name="Fast time", inline=False, value=fast_time_text(fast))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel your newest unfinished job, or the one you name")
    @app_commands.describe(job="The job's number (see /info); leave empty for your newest one")
    async def cancel(self, interaction: discord.Interaction, job: int | None = None) -> None:
        async with self.bot.sessionmaker() as session:
            unfinished = await repo.list_unfinished_jobs_of(session, user_id=interaction.user.id)
        if not unfinished:
            await interaction.response.send_message("You have no queued or running jobs.", ephemeral=True)
            return
        target = unfinished[-1] if job is None else next((j for j in unfinished if j.id == job), None)
        if target is None:
            await interaction.response.send_message(
                f"❌ Job {job} is not one of your queued or running jobs: see /info.", ephemeral=True)
            return
        await self.bot.jobs.cancel(target.id)
        how = "stops at its next step" if target.state == JobState.RUNNING else "will not run"
        await interaction.response.send_message(f"Cancelled job `{target.id}` ({shorten(target.prompt)}): it {how}.",
                                                ephemeral=True)

    async def _set_mode(self, interaction: discord.Interaction, mode: QueueMode) -> None:
        allowed_modes = self.bot.rules.modes_for(Asker.of(interaction))
        if mode.value not in allowed_modes:
            allowed = ", ".join("/" + m for m in allowed_modes) or "none"
            await interaction.response.send_message(f"❌ {mode.value.title()} mode is not available to you here: "
                                                    f"use {allowed}.", ephemeral=True)
            return
        async with self.bot.sessionmaker.begin() as session:
            await repo.set_user_settings(session, user_id=interaction.user.id, default_mode=mode)
        await interaction.response.send_message(
            f"{MODE_HELP[mode]} This is now your default; `--{mode.value}` in a prompt still wins.", ephemeral=True)

    @app_commands.command(name="fast", description="Switch to fast mode")
    async def fast(self, interaction: discord.Interaction) -> None:
        await self._set_mode(interaction, QueueMode.FAST)

    @app_commands.command(name="relax", description="Switch to relax mode (your jobs wait behind fast ones)")
    async def relax(self, interaction: discord.Interaction) -> None:
        await self._set_mode(interaction, QueueMode.RELAX)

    @app_commands.command(name="turbo", description="Switch to turbo mode (your jobs go first)")
    async def turbo(self, interaction: discord.Interaction) -> None:
        await self._set_mode(interaction, QueueMode.TURBO)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Queue(bot))
