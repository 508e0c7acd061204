"""/history: your jobs, newest first, paged and filtered; any of them brought back with its
buttons (Midjourney's /show), so work can go on from a picture made weeks ago.
/favourites: the pictures you gave a ❤️, brought back the same way."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.messages import days, shorten
from bot.replies import defer_thinking, refuse
from cogs.utils.views import ReportingView
from storage import repository as repo
from storage.models import Delivery, Image, Job, JobState

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

PAGE_SIZE = 5
MAX_ROW_ID = 2**63 - 1  # the largest id the database holds (a select's value is a string: any digits)
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
        if job.delivery == Delivery.UNDELIVERABLE:  # Discord refused it everywhere: bring it back from here
            mark += " · not posted"
        embed.add_field(name=f"`{job.id}` {job.kind.value}{STATE_MARKS[job.state]}{mark}", inline=False,
                        value=f"{shorten(job.prompt, 200)}\n{when}")
    footer = f"Page {page + 1}"
    if keep_results_days:
        footer += f" · pictures are kept {days(keep_results_days)}, then show as expired"
    embed.set_footer(text=footer)
    return embed


class PagedPicker(ReportingView):
    """A page of a list (◀ ▶) with a select that brings one of its entries back; its owner's only.
    Subclasses say how to make another page (`turn_to`) and what a choice does (`bring_back`)."""

    def __init__(self, user_id: int, page: int, choices: list[discord.SelectOption], has_next: bool) -> None:
        super().__init__(timeout=600, owner_id=user_id)
        self.user_id, self.page = user_id, page
        self.previous_page.disabled = page == 0
        self.next_page.disabled = not has_next
        self.show.options = choices or [discord.SelectOption(label="nothing to show", value="0")]
        self.show.disabled = not choices

    async def turn_to(self, page: int) -> tuple[discord.Embed, discord.ui.View]:
        raise NotImplementedError

    async def bring_back(self, interaction: discord.Interaction, value: int) -> None:
        raise NotImplementedError

    async def _turn(self, interaction: discord.Interaction, page: int) -> None:
        await interaction.response.defer()  # acknowledged before the database read; the page is edited after
        embed, view = await self.turn_to(page)
        await interaction.edit_original_response(embed=embed, view=view)

    @discord.ui.button(label="Previous", emoji="◀️", row=0)
    async def previous_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page - 1)

    @discord.ui.button(label="Next", emoji="▶️", row=0)
    async def next_page(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._turn(interaction, self.page + 1)

    @discord.ui.select(placeholder="Bring one back with its buttons", row=1)
    async def show(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await self.bring_back(interaction, int(select.values[0]))


class HistoryView(PagedPicker):
    def __init__(self, cog: History, user_id: int, text: str | None, page: int, jobs: list[Job],
                 has_next: bool, keep_results_days: float = 0) -> None:
        showable = [job for job in jobs if job.state == JobState.DONE and job.images
                    and not is_expired(job, keep_results_days)]
        super().__init__(user_id, page, [discord.SelectOption(label=f"{job.id}: {shorten(job.prompt, 90)}",
                                                              value=str(job.id)) for job in showable], has_next)
        self.cog, self.text = cog, text

    async def turn_to(self, page: int) -> tuple[discord.Embed, discord.ui.View]:
        return await self.cog.page(self.user_id, self.text, page)

    async def bring_back(self, interaction: discord.Interaction, value: int) -> None:
        await self.cog.show_job(interaction, value)


def favourites_embed(images: list[Image], page: int) -> discord.Embed:
    embed = discord.Embed(title="Your favourites", colour=discord.Colour.red())
    if not images:
        embed.description = "No favourites yet: press ❤️ under a picture." if page == 0 else "No more favourites."
    for image in images:
        created = image.created_at.replace(tzinfo=image.created_at.tzinfo or UTC)
        embed.add_field(name=f"`{image.job_id}` picture {image.index + 1}", inline=False,
                        value=f"{shorten(image.job.prompt, 200)}\n{discord.utils.format_dt(created, 'R')}")
    embed.set_footer(text=f"Page {page + 1}")
    return embed


class FavouritesView(PagedPicker):
    def __init__(self, cog: History, user_id: int, page: int, images: list[Image], has_next: bool) -> None:
        super().__init__(user_id, page, [discord.SelectOption(
            label=f"{image.job_id} #{image.index + 1}: {shorten(image.job.prompt, 80)}", value=str(image.id))
            for image in images], has_next)
        self.cog = cog

    async def turn_to(self, page: int) -> tuple[discord.Embed, discord.ui.View]:
        return await self.cog.favourites_page(self.user_id, page)

    async def bring_back(self, interaction: discord.Interaction, value: int) -> None:
        await self.cog.show_favourite(interaction, value)


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
            await refuse(interaction, "❌ That job has no pictures to show.")
            return
        if not await asyncio.to_thread(lambda: all(Path(image.path).exists() for image in job.images)):
            keep = self.bot.settings.storage.keep_results_days
            await refuse(interaction, f"❌ The pictures of job {job.id} were removed: this server keeps "
                                           f"pictures for {days(keep)}." if keep else
                                           f"❌ The pictures of job {job.id} are gone from the image store.")
            return
        await self.bot.delivery.show_again(interaction, job)  # recorded: reactions on it work too

    # --- /favourites ---------------------------------------------------------------

    async def favourites_page(self, user_id: int, page: int) -> tuple[discord.Embed, FavouritesView]:
        async with self.bot.sessionmaker() as session:
            images = await repo.list_favourites(session, user_id=user_id, limit=PAGE_SIZE + 1,
                                                offset=page * PAGE_SIZE)
        shown, has_next = images[:PAGE_SIZE], len(images) > PAGE_SIZE
        return favourites_embed(shown, page), FavouritesView(self, user_id, page, shown, has_next)

    @app_commands.command(name="favourites", description="The pictures you gave a ❤️; bring any back with its buttons")
    async def favourites(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # answered before the database read
        embed, view = await self.favourites_page(interaction.user.id, 0)
        await interaction.followup.send(embed=embed, view=view, ephemeral=True)

    async def show_favourite(self, interaction: discord.Interaction, image_id: int) -> None:
        """Post one favourite picture again, in this channel, with the buttons that work on one picture."""
        await defer_thinking(interaction)
        if not 0 < image_id <= MAX_ROW_ID:
            await refuse(interaction, "❌ That picture is not among your favourites.")
            return
        async with self.bot.sessionmaker() as session:
            image = await repo.get_favourite(session, user_id=interaction.user.id, image_id=image_id)
            job = await repo.get_job(session, job_id=image.job_id) if image is not None else None
        if image is None or job is None:
            await refuse(interaction, "❌ That picture is not among your favourites.")
            return
        if not await asyncio.to_thread(Path(image.path).exists):
            await refuse(interaction, f"❌ That picture of job {job.id} was removed from the image store.")
            return
        await self.bot.delivery.post_picture(interaction, job, image.index)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(History(bot))
