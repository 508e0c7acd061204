"""Views, forms and buttons that fail politely.

The tree's error handler never sees what goes wrong in a View, a Modal or a dynamic
button: discord.py only logs it, and the user sees "This interaction failed". Every
View and Modal of the bot derives from these classes instead, so a failure is logged
with its traceback and the user gets a short private word; and a View that belongs to
one person says so to anyone else who presses it.
"""

from __future__ import annotations

from typing import Any

import discord

from bot.replies import report_failure, tell_privately
from bot.rules import let_in


class ReportingView(discord.ui.View):
    """A View that reports its failures; with `owner_id`, only that user may use it."""

    def __init__(self, *, timeout: float | None = 600, owner_id: int | None = None) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not await let_in(interaction):  # banned since the view was opened
            return False
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
