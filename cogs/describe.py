"""/describe: four prompts for a picture, each one button away from an /imagine.

The suggestions live in the message itself (one per line, after its number), so the
buttons under it need nothing else and keep working after a restart.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.fetch import FetchError, fetch_image, readable_size
from bot.messages import shorten
from bot.replies import fit_content, report_failure
from bot.rules import Asker, Refused, let_in
from generation.describe import Describer, load_describer

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
HIDDEN = "— hidden: it names a word this server does not allow —"  # a suggestion the banned words refuse


def describe_message(user_id: int, suggestions: list[str]) -> str:
    lines = [f"{NUMBERS[n]} {shorten(' '.join(text.split()), 400)}" for n, text in enumerate(suggestions)]
    return "\n".join([f"**Describe** for <@{user_id}>: press a number to imagine that prompt", *lines])


def suggestion_in(content: str, number: int) -> str | None:
    """The prompt after the number's keycap in a /describe message."""
    match = re.search(rf"^{re.escape(NUMBERS[number - 1])} (.+)$", content, flags=re.MULTILINE)
    return match[1].strip() if match and match[1].strip() != HIDDEN else None


class DescribeButton(discord.ui.DynamicItem[discord.ui.Button], template=r"describe:(?P<number>[1-4])$"):
    def __init__(self, number: int) -> None:
        super().__init__(discord.ui.Button(label=str(number), style=discord.ButtonStyle.secondary,
                                           custom_id=f"describe:{number}"))
        self.number = number

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button,
                             match: re.Match[str]) -> DescribeButton:
        return cls(int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        if not await let_in(interaction):
            return
        prompt = suggestion_in(interaction.message.content if interaction.message else "", self.number)
        imagine = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined]
        if prompt is None or imagine is None:
            await interaction.response.send_message("❌ This button no longer works: run /describe again.",
                                                    ephemeral=True)
            return
        try:
            await imagine.imagine_prompt(interaction, prompt)
        except Exception as error:
            await report_failure(interaction, error, f"describe button {self.number}")


class Describe(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        self._describer: Describer | None = None
        self._loading = asyncio.Lock()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(DescribeButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(DescribeButton)

    async def describer(self) -> Describer:
        async with self._loading:  # loaded once, off the event loop, on first use
            if self._describer is None:
                self._describer = await asyncio.to_thread(load_describer, self.bot.settings.catalog.describe_model)
            return self._describer

    @app_commands.command(name="describe", description="Four prompts that would make a picture like this one")
    @app_commands.describe(image="The picture", link="Or a link to it")
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment | None = None,
                       link: str | None = None) -> None:
        policy = self.bot.settings.images
        try:
            self.bot.rules.check_burst(Asker.of(interaction))
        except Refused as refusal:
            await interaction.response.send_message(f"❌ {refusal}", ephemeral=True)
            return
        if (image is None) == (link is None):
            await interaction.response.send_message("❌ Give one picture: attach it, or paste its link.",
                                                    ephemeral=True)
            return
        if image is not None and image.size > policy.max_bytes:
            await interaction.response.send_message(
                f"❌ the picture is larger than {readable_size(policy.max_bytes)}", ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        try:
            async with self.bot.fetch_limiter.slot(interaction.user.id):
                fetched = await fetch_image(self.bot.http_session, image.url if image else link.strip(), policy)
        except FetchError as error:
            await interaction.delete_original_response()
            await interaction.followup.send(fit_content(f"❌ {error}"), ephemeral=True)
            return
        describer = await self.describer()
        suggestions = await asyncio.to_thread(describer.suggestions, fetched.image)
        allowed = self.bot.rules.allowed_words(Asker.of(interaction), suggestions)
        suggestions = [text if ok else HIDDEN for text, ok in zip(suggestions, allowed, strict=True)]
        view = discord.ui.View(timeout=None)
        for number, text in enumerate(suggestions, start=1):
            if text != HIDDEN:
                view.add_item(DescribeButton(number))
        await interaction.edit_original_response(content=describe_message(interaction.user.id, suggestions),
                                                 view=view, allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Describe(bot))
