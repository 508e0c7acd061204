"""/settings: a user's defaults, set with selects and toggles as on Midjourney.

Model version, stylize and raw are kept as a parameter suffix (`--v builtin --s 250
--style raw`) added to each of the user's prompts unless the prompt sets them itself;
the queue mode, the variability of V1–V4 and remix are kept as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.rules import Asker
from cogs.utils.views import ReportingView
from generation.prompt import parameter_chunks, with_parameter
from storage import repository as repo
from storage.models import QueueMode, User, Variability

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

STYLIZE_PRESETS = {"50": "Stylize low", "100": "Stylize med", "250": "Stylize high", "750": "Stylize very high"}
DEFAULT_STYLIZE = "100"


@dataclass(frozen=True)
class UserSettings:
    mode: QueueMode
    suffix: str
    variability: Variability
    remix: bool

    @classmethod
    def of(cls, user: User, mode: QueueMode) -> UserSettings:
        """`mode`: the mode the user's jobs run in by default here (their choice if they may use it)."""
        return cls(mode, user.default_suffix, user.variability, user.remix)

    @property
    def stylize(self) -> str:
        chunk = parameter_chunks(self.suffix).get("stylize")
        return chunk.split()[-1] if chunk else DEFAULT_STYLIZE

    @property
    def raw(self) -> bool:
        return parameter_chunks(self.suffix).get("style", "").split()[-1:] == ["raw"]

    @property
    def model(self) -> str | None:
        """`v:NAME`, `niji:NAME`, or None for the server's default."""
        chunks = parameter_chunks(self.suffix)
        if "niji" in chunks:
            words = chunks["niji"].split()
            return f"niji:{words[1] if len(words) > 1 else ''}"
        if "version" in chunks:
            return f"v:{chunks['version'].split()[-1]}"
        return None


def describe(settings: UserSettings) -> str:
    suffix = f"`{settings.suffix}`" if settings.suffix else "none"
    return (f"**Your settings** (added to your prompts unless a prompt sets them itself): {suffix}\n"
            f"Mode: {settings.mode.value} · Variations: {settings.variability.value} · "
            f"Remix: {'on' if settings.remix else 'off'}")


class SettingsView(ReportingView):
    """Rebuilt after every change, so it always shows what is stored."""

    def __init__(self, cog: Settings, asker: Asker, settings: UserSettings) -> None:
        super().__init__(timeout=600, owner_id=asker.user_id)
        self.cog, self.user_id, self.settings = cog, asker.user_id, settings
        catalog = cog.bot.settings.catalog
        models = [discord.SelectOption(label=f"Default ({catalog.default_version})", value="default",
                                       default=settings.model is None)]
        models += [discord.SelectOption(label=f"Version {name}", value=f"v:{name}",
                                        default=settings.model == f"v:{name}") for name in catalog.versions]
        models += [discord.SelectOption(label=f"Niji {name}", value=f"niji:{name}",
                                        default=settings.model == f"niji:{name}") for name in catalog.niji]
        self.model_select.options = models[:25]
        self.stylize_select.options = [
            discord.SelectOption(label=label, value=value, description=f"--s {value}",
                                 default=settings.stylize == value) for value, label in STYLIZE_PRESETS.items()]
        self.raw_button.style = discord.ButtonStyle.success if settings.raw else discord.ButtonStyle.secondary
        self.remix_button.style = discord.ButtonStyle.success if settings.remix else discord.ButtonStyle.secondary
        strong = settings.variability == Variability.STRONG
        self.strong_button.style = discord.ButtonStyle.success if strong else discord.ButtonStyle.secondary
        self.subtle_button.style = discord.ButtonStyle.secondary if strong else discord.ButtonStyle.success
        allowed = cog.bot.rules.modes_for(asker)  # the server's modes and the user's roles'
        for button, mode in ((self.fast_button, QueueMode.FAST), (self.relax_button, QueueMode.RELAX),
                             (self.turbo_button, QueueMode.TURBO)):
            button.style = discord.ButtonStyle.success if settings.mode == mode else discord.ButtonStyle.secondary
            button.disabled = mode.value not in allowed

    async def _save(self, interaction: discord.Interaction, **changes) -> None:
        await interaction.response.defer()  # acknowledged before the database write; the message is edited after
        asker = Asker.of(interaction)
        settings = await self.cog.save(asker, **changes)
        await interaction.edit_original_response(content=describe(settings),
                                                 view=SettingsView(self.cog, asker, settings))

    @discord.ui.select(placeholder="Model version", row=0)
    async def model_select(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        choice = select.values[0]
        if choice == "default":
            suffix = with_parameter(with_parameter(self.settings.suffix, "version", None), "niji", None)
        elif choice.startswith("niji:"):
            suffix = with_parameter(self.settings.suffix, "niji", f"--niji {choice[5:]}".strip())
        else:
            suffix = with_parameter(self.settings.suffix, "version", f"--v {choice[2:]}")
        await self._save(interaction, default_suffix=suffix)

    @discord.ui.select(placeholder="Stylize", row=1)
    async def stylize_select(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        value = select.values[0]
        chunk = None if value == DEFAULT_STYLIZE else f"--s {value}"
        await self._save(interaction, default_suffix=with_parameter(self.settings.suffix, "stylize", chunk))

    @discord.ui.button(label="Raw mode", row=2)
    async def raw_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        chunk = None if self.settings.raw else "--style raw"
        await self._save(interaction, default_suffix=with_parameter(self.settings.suffix, "style", chunk))

    @discord.ui.button(label="Remix mode", row=2)
    async def remix_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, remix=not self.settings.remix)

    @discord.ui.button(label="High variation", row=3)
    async def strong_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, variability=Variability.STRONG)

    @discord.ui.button(label="Low variation", row=3)
    async def subtle_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, variability=Variability.SUBTLE)

    @discord.ui.button(label="Fast mode", row=4)
    async def fast_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, default_mode=QueueMode.FAST)

    @discord.ui.button(label="Relax mode", row=4)
    async def relax_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, default_mode=QueueMode.RELAX)

    @discord.ui.button(label="Turbo mode", row=4)
    async def turbo_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, default_mode=QueueMode.TURBO)

    @discord.ui.button(label="Reset", style=discord.ButtonStyle.danger, row=4)
    async def reset_button(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await self._save(interaction, default_mode=None, default_suffix="", variability=Variability.SUBTLE,
                         remix=False)


class Settings(commands.Cog):
    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def load(self, asker: Asker) -> UserSettings:
        async with self.bot.sessionmaker.begin() as session:
            user = await repo.ensure_user(session, user_id=asker.user_id)
            return UserSettings.of(user, self.bot.rules.default_mode(asker, user))

    async def save(self, asker: Asker, **changes) -> UserSettings:
        async with self.bot.sessionmaker.begin() as session:
            user = await repo.set_user_settings(session, user_id=asker.user_id, **changes)
            return UserSettings.of(user, self.bot.rules.default_mode(asker, user))

    @app_commands.command(name="settings", description="Your defaults: model, stylize, raw, variations, mode")
    async def settings(self, interaction: discord.Interaction) -> None:
        asker = Asker.of(interaction)
        settings = await self.load(asker)
        await interaction.response.send_message(describe(settings), view=SettingsView(self, asker, settings),
                                                ephemeral=True)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Settings(bot))
