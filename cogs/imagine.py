"""/imagine and the buttons under its results: the path from a prompt to a grid and on.

Every press of a button is a new job for the person who pressed it (as on Midjourney):
the owner's job and messages are never changed by someone else's press.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import asking
from bot.asking import BLEND_DIMENSIONS, Unavailable, Upload, read_region, remix_default
from bot.buttons import Action
from bot.fetch import FetchError
from bot.replies import defer_thinking, fit_content, refuse
from bot.rules import Asker, Refused
from cogs.utils.views import ReportingModal
from generation.prompt import GenerationRequest, Params, PromptError, apply_suffix
from storage import repository as repo
from storage.job_requests import SourceGone, blend_job, imagine_job, region_job, remix, zoom_job
from storage.models import Job, JobKind, User, Variability
from storage.repository import NewJob

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

REMIXABLE = frozenset({Action.REROLL, Action.VARY, Action.VARY_SUBTLE, Action.VARY_STRONG})


class PressForm(ReportingModal):
    """A form a button press opens: sending it is the same request as the press, which already
    counted against the member's burst allowance (bot/rules.py), so it does not count again."""

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        self.cog.bot.rules.same_request(interaction.id)
        return True


class RemixForm(PressForm, title="Remix"):
    """Remix mode: V, Vary and 🔄 first let the presser edit the prompt."""

    prompt = discord.ui.TextInput(label="New prompt", style=discord.TextStyle.paragraph, max_length=4000)

    def __init__(self, cog: Imagine, prompt: str, new_job: NewJob) -> None:
        super().__init__(timeout=900)
        self.cog, self.new_job = cog, new_job
        self.prompt.default = prompt[:4000]
        self.prompt.required = new_job.kind != JobKind.BLEND  # a blend may be remixed with no words

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.start_remixed(interaction, self.new_job, self.prompt.value)


class RegionForm(PressForm, title="Vary (Region)"):
    """Which part to paint again, and with what prompt."""

    region = discord.ui.TextInput(label="Region: a name or left top right bottom (%)", default="center",
                                  max_length=40)
    prompt = discord.ui.TextInput(label="Prompt", style=discord.TextStyle.paragraph, max_length=4000)

    def __init__(self, cog: Imagine, parent: Job, index: int) -> None:
        super().__init__(timeout=900)
        self.cog, self.parent, self.index = cog, parent, index
        self.prompt.default = parent.prompt[:4000]

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.start_region(interaction, self.parent, self.index, self.region.value, self.prompt.value)


class ZoomForm(PressForm, title="Custom Zoom"):
    """Opens at once (it needs nothing stored); the picture is looked up once the form is sent."""

    factor = discord.ui.TextInput(label="Zoom out by (1 to 2)", default="1.5", max_length=5)

    def __init__(self, cog: Imagine, job_id: int, index: int) -> None:
        super().__init__(timeout=900)
        self.cog, self.job_id, self.index = cog, job_id, index

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            factor = float(self.factor.value.replace(",", ".").rstrip("xX"))
        except ValueError:
            factor = 0.0
        if not 1.0 <= factor <= 2.0:  # NaN and infinities fail this too
            await interaction.response.send_message("❌ The zoom factor is a number from 1 to 2, like 1.5.",
                                                    ephemeral=True)
            return
        await defer_thinking(interaction)
        parent = await self.cog.finished_job(interaction, self.job_id, self.index)
        if parent is None:
            return
        user = await self.cog.user(interaction.user.id)
        await self.cog.bot.delivery.submit(interaction, [zoom_job(parent, self.index, factor)], user=user)


class Imagine(commands.Cog):
    """Reads what members ask for and hands it to the bot's delivery service (bot/delivery.py),
    which owns the jobs from there: reloading this cog loses no delivery."""

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.job_buttons = self  # the persistent buttons (bot/buttons.py) call on_job_button

    async def cog_unload(self) -> None:
        if self.bot.job_buttons is self:
            self.bot.job_buttons = None

    # --- /imagine ----------------------------------------------------------------

    @app_commands.command(name="imagine", description="Make four pictures from a prompt")
    @app_commands.describe(prompt="What to draw, then --parameters: a lighthouse at dusk --ar 16:9 --no fog",
                           image="A picture to start from (an image prompt; --iw sets how strongly)")
    async def imagine(self, interaction: discord.Interaction, prompt: str,
                      image: discord.Attachment | None = None) -> None:
        await self.imagine_prompt(interaction, prompt, image)

    async def imagine_prompt(self, interaction: discord.Interaction, prompt: str,
                             image: discord.Attachment | None = None) -> None:
        """/imagine's work, also started by /describe's buttons.

        The prompt alone is read before anything else, so that a mistake in it is answered
        at once and privately; then the interaction is deferred before any database or
        network wait (Discord drops interactions not answered within 3 s, and a burst of
        them queues up on the database)."""
        attached = (image.url,) if image is not None else ()
        try:
            requests = self.read_prompt(prompt, attached)
            self.screen(interaction, [shown for _, shown in requests], requests[0][0].params.mode)
        except (PromptError, Refused) as error:
            await interaction.response.send_message(fit_content(f"❌ {error}"), ephemeral=True)
            return
        await defer_thinking(interaction)
        user = await self.user(interaction.user.id)
        personal = self.personal(interaction, prompt, user)
        if personal != prompt:
            try:
                requests = self.read_prompt(personal, attached)
            except PromptError as error:
                await refuse(interaction, f"❌ {error} (with your /settings)")
                return
        inputs: list[str] = []
        if requests[0][0].image_urls:  # the same pictures for every job of the prompt
            try:
                inputs = await self.keep_pictures(interaction.user.id, requests[0][0].image_urls,
                                                  [image] if image else [])
            except FetchError as error:
                await refuse(interaction, f"❌ {error}")
                return
        new_jobs = [imagine_job(request.to_dict(), shown, request.params.seed, inputs)
                    for request, shown in requests]
        await self.bot.delivery.submit(interaction, new_jobs, user=user, asked=requests[0][0].params.mode)

    @app_commands.command(name="blend", description="Blend 2 to 5 pictures into four new ones")
    @app_commands.describe(image1="A picture", image2="Another picture", image3="(optional)", image4="(optional)",
                           image5="(optional)", dimensions="The shape of the result (default: square)",
                           prompt="Words that steer the blend (optional)")
    @app_commands.choices(dimensions=[app_commands.Choice(name=name.title(), value=name)
                                      for name in BLEND_DIMENSIONS])
    async def blend(self, interaction: discord.Interaction, image1: discord.Attachment, image2: discord.Attachment,
                    image3: discord.Attachment | None = None, image4: discord.Attachment | None = None,
                    image5: discord.Attachment | None = None, dimensions: str = "square",
                    prompt: str | None = None) -> None:
        pictures = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        aspect = BLEND_DIMENSIONS.get(dimensions, "1:1")
        version = self.bot.rules.default_version(Asker.of(interaction))  # the server's, when it chose one
        try:
            if prompt and prompt.strip():
                words = f"{prompt} --ar {aspect}"
                (request, shown), *more = self.read_prompt(apply_suffix(words, f"--v {version}") if version else words)
                if more or request.image_urls:
                    raise PromptError("a blend takes words that steer it: no {permutations}, --repeat or image "
                                      "links (attach the pictures instead)")
            else:
                request, shown = GenerationRequest((), Params(aspect=aspect, version=version)), ""
            self.screen(interaction, [shown], request.params.mode)
        except (PromptError, Refused) as error:
            await interaction.response.send_message(fit_content(f"❌ {error}"), ephemeral=True)
            return
        await defer_thinking(interaction)
        user = await self.user(interaction.user.id)
        try:
            inputs = await self.keep_pictures(interaction.user.id, [a.url for a in pictures], pictures)
        except FetchError as error:
            await refuse(interaction, f"❌ {error}")
            return
        shown = shown or f"blend of {len(inputs)} pictures --ar {aspect}"
        await self.bot.delivery.submit(interaction, [blend_job(request.to_dict(), shown, inputs)], user=user,
                                       asked=request.params.mode)

    async def keep_pictures(self, user_id: int, urls: Sequence[str],
                            attachments: list[discord.Attachment]) -> list[str]:
        """The pictures of a request kept in the image store (bot/asking.py); FetchError says why not."""
        uploads = {a.url: Upload(a.url, a.filename, a.size, a.content_type) for a in attachments}
        return await asking.keep_pictures(self.bot, user_id, urls, uploads)

    def read_prompt(self, prompt: str, attached: Sequence[str] = ()) -> list[tuple[GenerationRequest, str]]:
        return asking.read_prompt(self.bot.settings, prompt, attached)

    async def user(self, user_id: int) -> User:
        """The user's row with their /settings (made on first use)."""
        return await asking.member_settings(self.bot, user_id)

    def screen(self, interaction: discord.Interaction, prompts: list[str], asked: str | None = None) -> None:
        """The rules that need no database, before the deferral (bot/asking.py: screen)."""
        asking.screen(self.bot.rules, Asker.of(interaction), prompts, asked)

    def personal(self, interaction: discord.Interaction, prompt: str, user: User) -> str:
        return asking.personal(self.bot.rules, Asker.of(interaction), prompt, user)

    # --- buttons -----------------------------------------------------------------

    async def on_job_button(self, interaction: discord.Interaction, action: Action, job_id: int,
                            index: int | None) -> None:
        """A press is answered before any database wait (Discord drops it after 3 s), except by
        the buttons that may open a form: a form must be the first answer, so they first read
        the rows it needs (by primary key, which takes no write lock)."""
        index = index or 0
        try:  # every press counts against the member's burst allowance (a U posts a whole picture)
            self.bot.rules.check_burst(Asker.of(interaction))
        except Refused as refusal:
            await refuse(interaction, f"❌ {refusal}")
            return
        if action == Action.ZOOM_CUSTOM:
            await interaction.response.send_modal(ZoomForm(self, job_id, index))
            return
        may_open_form = action == Action.VARY_REGION or action in REMIXABLE
        if not may_open_form:
            await self.acknowledge(interaction, action)
        presser = await self.stored_user(interaction.user.id) if may_open_form else None
        parent = await self.finished_job(interaction, job_id, index)
        if parent is None:
            return
        if action == Action.VARY_REGION:
            await interaction.response.send_modal(RegionForm(self, parent, index))
            return
        try:
            new_job = self.job_for_button(presser.variability if presser else Variability.SUBTLE, action, parent,
                                          index) if action not in (Action.PICK, Action.FAVOURITE) else None
        except SourceGone:
            await refuse(interaction, "❌ The picture this grid was made from is gone: run /imagine again.")
            return
        if presser is not None and presser.remix and new_job is not None and action in REMIXABLE:
            await interaction.response.send_modal(RemixForm(self, remix_default(parent), new_job))
            return
        if not interaction.response.is_done():
            await self.acknowledge(interaction, action)
        if action == Action.PICK:
            await self.bot.delivery.post_picture(interaction, parent, index)
            return
        if action == Action.FAVOURITE:
            async with self.bot.sessionmaker.begin() as session:
                added = await repo.add_favourite(session, user_id=interaction.user.id, image_id=parent.images[index].id)
            await interaction.followup.send("❤️ Added to your favourites." if added else
                                            "❤️ Already in your favourites.", ephemeral=True)
            return
        user = await self.user(interaction.user.id)
        if action == Action.VARY:  # V1–V4 follow the presser's /settings, made now
            new_job = self.job_for_button(user.variability, action, parent, index)
        await self.bot.delivery.submit(interaction, [new_job], user=user)

    @staticmethod
    async def acknowledge(interaction: discord.Interaction, action: Action) -> None:
        """❤️ is answered privately; every other button with a public "thinking…" that becomes its message."""
        if action == Action.FAVOURITE:
            await interaction.response.defer(ephemeral=True, thinking=True)
        else:
            await defer_thinking(interaction)

    async def finished_job(self, interaction: discord.Interaction, job_id: int, index: int) -> Job | None:
        """The job a button or form works on, with its pictures; None after telling the presser why not."""
        try:
            return await asking.finished_job(self.bot, job_id, index)
        except Unavailable as error:
            await refuse(interaction, f"❌ {error}")
            return None

    async def stored_user(self, user_id: int) -> User | None:
        """The user's row if there is one, read without writing (a form may follow)."""
        async with self.bot.sessionmaker() as session:
            return await repo.get_user(session, user_id=user_id)

    @staticmethod
    def job_for_button(variability: Variability, action: Action, parent: Job, index: int) -> NewJob:
        return asking.job_for_press(variability, action, parent, index)

    async def start_region(self, interaction: discord.Interaction, parent: Job, index: int, region_text: str,
                           prompt: str) -> None:
        """Vary (Region) once its form is sent."""
        try:
            box = read_region(region_text)
        except PromptError as error:
            await interaction.response.send_message(fit_content(f"❌ {error}"), ephemeral=True)
            return
        new_job = region_job(parent, index, box)
        read = await self.read_form_prompt(interaction, prompt, "Vary (Region)", new_job.request.get("image_urls", ()))
        if read is not None:
            user, request, shown = read
            await self.bot.delivery.submit(interaction, [remix(new_job, request.to_dict(), shown)], user=user,
                                           asked=request.params.mode)

    async def start_remixed(self, interaction: discord.Interaction, new_job: NewJob, prompt: str) -> None:
        """Remix mode: the job the button asked for, with the prompt as the user edited it (a blend's
        may be left empty: the same pictures, blended again)."""
        if not prompt.strip() and new_job.kind == JobKind.BLEND:
            await defer_thinking(interaction)
            user = await self.user(interaction.user.id)
            await self.bot.delivery.submit(interaction, [new_job], user=user)
            return
        read = await self.read_form_prompt(interaction, prompt, "A remix", new_job.request.get("image_urls", ()))
        if read is not None:
            user, request, shown = read
            await self.bot.delivery.submit(interaction, [remix(new_job, request.to_dict(), shown)], user=user,
                                           asked=request.params.mode)

    async def read_form_prompt(self, interaction: discord.Interaction, prompt: str, what: str,
                               kept_links: Sequence[str] = ()) -> tuple[User, GenerationRequest, str] | None:
        """A form's prompt, read alone before any wait (a mistake is answered at once, privately),
        then again with the user's /settings after the deferral; None once the user was told why not."""
        try:
            request, shown = self.one_prompt(prompt, what, kept_links)
            self.screen(interaction, [shown], request.params.mode)
        except (PromptError, Refused) as error:
            await interaction.response.send_message(fit_content(f"❌ {error}"), ephemeral=True)
            return None
        await defer_thinking(interaction)
        user = await self.user(interaction.user.id)
        try:
            request, shown = self.one_prompt(self.personal(interaction, prompt, user), what, kept_links)
        except PromptError as error:
            await refuse(interaction, f"❌ {error} (with your /settings)")
            return None
        return user, request, shown

    def one_prompt(self, prompt: str, what: str, kept_links: Sequence[str] = ()) -> tuple[GenerationRequest, str]:
        return asking.one_prompt(self.bot.settings, prompt, what, kept_links)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
