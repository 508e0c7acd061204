"""/history: your jobs, newest first, paged and filtered; any of them brought back with its
buttons (Midjourney's /show), so work can go on from a picture made weeks ago."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from cogs.utils.delivery import defer_thinking, mention_only
from cogs.utils.messages import days, result_message, shorten
from cogs.utils.views import ReportingView
from storage import repository as repo
from storage.models import Job, JobState

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

PAGE_SIZE = 5
STATE_MARKS = {JobState.DONE: "", JobState.QUEUED: " · queued", JobState.RUNNING: " · running",
               JobState.FAILED: " · failed", JobState.CANCELLED: " · cancelled"}


def is_expired(job: Job, keep_results_days: float) -> bool:
    """Whether a job's pictures are past the server's retention (`[storage] keep_results_days`)."""
    if not keep_results_days:
        return False
    created = job.created_at.replace(tzinfo=job.created_at.tzinfo or UTC)  # SQLite hands back naive UTC
    return created < datetime.now(UTC) - timedelta(days=keep_results_days)


def history_embed(jobs: list[Job], text: str | None, page: int, keep_results_days: float = 0) -> discord.Embed:
    title = f"Your jobs matching “{shorten(text, 200)}”" if text else "Your jobs"  # titles stop at 256
    embed = discord.Embed(title=title, colour=discord.Colour.blurple())
    if not jobs:
        embed.description = "Nothing here yet." if page == 0 else "No more jobs."
    for job in jobs:
        created = job.created_at.replace(tzinfo=job.created_at.tzinfo or UTC)  # SQLite hands back naive UTC
        when = discord.utils.format_dt(created, "R")
        mark = " · expired" if job.state == JobState.DONE and is_expired(job, keep_results_days) else ""
        embed.add_field(name=f"`{job.id}` {job.kind.value}{STATE_MARKS[job.state]}{mark}", inline=False,
                        value=f"{shorten(job.prompt, 200)}\n{when}")
    footer = f"Page {page + 1}"
    if keep_results_days:
        footer += f" · pictures are kept {days(keep_results_days)}, then show as expired"
    embed.set_footer(text=footer)
    return embed


class HistoryView(ReportingView):
    def __init__(self, cog: History, user_id: int, text: str | None, page: int, jobs: list[Job],
                 has_next: bool, keep_results_days: float = 0) -> None:
        super().__init__(timeout=600, owner_id=user_id)
        self.cog, self.user_id, self.text, self.page = cog, user_id, text, page
        self.previous_page.disabled = page == 0
        self.next_page.disabled = not has_next
        showable = [job for job in jobs if job.state == JobState.DONE and job.images
                    and not is_expired(job, keep_results_days)]
        self.show.options = [discord.SelectOption(label=f"{job.id}: {shorten(job.prompt, 90)}", value=str(job.id))
                             for job in showable] or [discord.SelectOption(label="nothing to show", value="0")]
        self.show.disabled = not showable

    async def _turn(self, interaction: discord.Interaction, page: int) -> None:
        await interaction.response.defer()  # acknowledged before the database read; the page is edited after
        embed, view = await self.cog.page(self.user_id, self.text, page)
        await interaction.edit_original_response(embed=embed, view=view)

    @discord.ui.button(label="Previous", emoji="◀️", row=0)
    async def previous_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page - 1)

    @discord.ui.button(label="Next", emoji="▶️", row=0)
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page + 1)

    @discord.ui.select(placeholder="Bring one back with its buttons", row=1)
    async def show(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await self.cog.show_job(interaction, int(select.values[0]))


class History(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def page(self, user_id: int, text: str | None, page: int) -> tuple[discord.Embed, HistoryView]:
        async with self.bot.sessionmaker() as session:
            jobs = await repo.list_history(session, user_id=user_id, text=text, limit=PAGE_SIZE + 1,
                                           offset=page * PAGE_SIZE)
        shown, has_next = jobs[:PAGE_SIZE], len(jobs) > PAGE_SIZE
        keep = self.bot.settings.storage.keep_results_days
        return (history_embed(shown, text, page, keep),
                HistoryView(self, user_id, text, page, shown, has_next, keep))

    @staticmethod
    async def refuse(interaction: discord.Interaction, text: str) -> None:
        """Private, after the public "thinking…" placeholder is taken away."""
        with contextlib.suppress(discord.NotFound):
            await interaction.delete_original_response()
        await interaction.followup.send(text, ephemeral=True)

    @app_commands.command(name="history", description="Your jobs, newest first; bring any back with its buttons")
    @app_commands.describe(text="Only jobs whose prompt contains this")
    async def history(self, interaction: discord.Interaction, text: str | None = None) -> None:
        embed, view = await self.page(interaction.user.id, text.strip() if text else None, 0)
        await interaction.response.send_message(embed=embed, view=view, ephemeral=True)

    async def show_job(self, interaction: discord.Interaction, job_id: int) -> None:
        """Post a finished job again, in this channel, with its buttons (which work like the first ones)."""
        await defer_thinking(interaction)
        async with self.bot.sessionmaker() as session:
            job = await repo.get_job(session, job_id=job_id)
        if job is None or job.user_id != interaction.user.id or not job.images:
            await self.refuse(interaction, "❌ That job has no pictures to show.")
            return
        if not await asyncio.to_thread(lambda: all(Path(image.path).exists() for image in job.images)):
            keep = self.bot.settings.storage.keep_results_days
            await self.refuse(interaction, f"❌ The pictures of job {job.id} were removed: this server keeps "
                                           f"pictures for {days(keep)}." if keep else
                                           f"❌ The pictures of job {job.id} are gone from the image store.")
            return
        message = await interaction.followup.send(wait=True, allowed_mentions=mention_only(job.user_id),
                                                  **await result_message(job, interaction.filesize_limit))
        async with self.bot.sessionmaker.begin() as session:  # reactions on the new message work too
            await repo.set_job_message(session, job_id=job.id, message_id=message.id)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(History(bot))
