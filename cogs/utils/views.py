"""Views, forms and buttons that fail politely.

The tree's error handler never sees what goes wrong in a View, a Modal or a dynamic
button: discord.py only logs it, and the user sees "This interaction failed". Every
View and Modal of the bot derives from these classes instead, so a failure is logged
with its traceback and the user gets a short private word; and a View that belongs to
one person says so to anyone else who presses it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import discord

log = logging.getLogger(__name__)

FAILURE_TEXT = "❌ Something went wrong on our side{where}; it has been logged. Try again in a moment."


async def tell_privately(interaction: discord.Interaction, text: str) -> None:
    """A private answer, whether or not the interaction was already answered or deferred."""
    with contextlib.suppress(discord.HTTPException):
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)


async def report_failure(interaction: discord.Interaction, error: BaseException, what: str,
                         job_id: int | None = None) -> None:
    """Log `error` with its traceback; tell the user only that it failed (and the job, if any)."""
    log.error("%s failed for user %s", what, interaction.user.id, exc_info=error)
    await tell_privately(interaction, FAILURE_TEXT.format(where=f" (job {job_id})" if job_id is not None else ""))


class ReportingView(discord.ui.View):
    """A View that reports its failures; with `owner_id`, only that user may use it."""

    def __init__(self, *, timeout: float | None = 600, owner_id: int | None = None) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if self.owner_id is None or interaction.user.id == self.owner_id:
            return True
        await tell_privately(interaction, f"❌ These controls belong to <@{self.owner_id}>: use the command yourself "
                                          "to get your own.")
        return False

    async def on_error(self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]) -> None:
        await report_failure(interaction, error, f"{type(self).__name__} ({getattr(item, 'custom_id', '?')})")


class ReportingModal(discord.ui.Modal):
    """A form that reports its failures."""

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_failure(interaction, error, f"the {self.title} form")
