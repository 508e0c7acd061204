"""/web: a one-time link, sent in DMs, that signs the member in to the web app (docs/web.md).

The web session is that Discord member, in the server where they typed /web (its rules
apply to what they make there, and its gallery is theirs to see). The link is signed,
works once and expires in `[web] sign_in_minutes`; it goes by DM so that nobody reading
the channel can use it, and with previews off so that Discord's link unfurler never opens it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.replies import tell_privately
from bot.rules import Asker

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)


class Web(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    @app_commands.command(name="web", description="Get a link (in DMs) that signs you in to the web app")
    async def web(self, interaction: discord.Interaction) -> None:
        if self.bot.web is None:
            await interaction.response.send_message("❌ This bot runs without its web app (the operator's log "
                                                    "says why).", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True, thinking=True)
        asker = Asker.of(interaction)
        link = await self.bot.web.sign_in_link(asker.user_id, asker.guild_id)
        minutes = self.bot.settings.web.sign_in_minutes
        where = f" for {interaction.guild.name}" if interaction.guild is not None else ""
        text = (f"🔑 Your sign-in link to the web app{where}: {link}\nIt works once, within {minutes:g} minutes. "
                "Do not share it: whoever opens it is signed in as you.")
        if not self.bot.settings.web.public_url:  # http://127.0.0.1:8080: only a browser on the bot's machine
            text += "\n(This bot's web app has no public address yet: the link opens on the bot's own machine only.)"
        try:
            dm = await interaction.user.create_dm()
            await dm.send(text, suppress_embeds=True)
        except discord.Forbidden:
            await tell_privately(interaction, "❌ I could not DM you the link: allow direct messages from this "
                                              "server's members (Privacy Settings), then type /web again.")
            return
        await tell_privately(interaction, f"📬 I sent you a sign-in link in DMs. It works once, within "
                                          f"{minutes:g} minutes.")


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Web(bot))
