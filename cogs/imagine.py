"""/imagine and the buttons under its results: the path from a prompt to a grid and on.

Every press of a button is a new job for the person who pressed it (as on Midjourney):
the owner's job and messages are never changed by someone else's press.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import Action
from bot.fetch import FetchError, fetch_image, readable_size
from bot.messages import days
from bot.replies import defer_thinking, fit_content, refuse
from bot.rules import Asker, Refused
from cogs.utils.views import ReportingModal
from generation.catalog import list_loras
from generation.prompt import MAX_IMAGE_PROMPTS, GenerationRequest, Params, PromptError, apply_suffix, parse_prompt
from generation.validation import validate_request
from storage import repository as repo
from storage.job_requests import (
    SourceGone,
    blend_job,
    imagine_job,
    pan_job,
    region_job,
    remix,
    request_without_options,
    reroll_job,
    square_job,
    upscale_job,
    variation_job,
    zoom_job,
)
from storage.models import Job, JobKind, JobState, User, Variability
from storage.repository import NewJob

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

MAX_ROW_ID = 2**63 - 1  # the largest id the database can hold
REMIXABLE = frozenset({Action.REROLL, Action.VARY, Action.VARY_SUBTLE, Action.VARY_STRONG})
PANS = {Action.PAN_LEFT: "left", Action.PAN_RIGHT: "right", Action.PAN_UP: "up", Action.PAN_DOWN: "down"}


def remix_default(parent: Job) -> str:
    """What the Remix form shows to edit: the prompt; a blend's own words (none, when it had none)."""
    if parent.kind != JobKind.BLEND:
        return parent.prompt
    request = GenerationRequest.from_dict(request_without_options(parent.request))
    return request.to_prompt() if request.segments else ""


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


REGION_PRESETS = {
    "center": (0.25, 0.25, 0.75, 0.75), "left half": (0.0, 0.0, 0.5, 1.0), "right half": (0.5, 0.0, 1.0, 1.0),
    "top half": (0.0, 0.0, 1.0, 0.5), "bottom half": (0.0, 0.5, 1.0, 1.0), "top left": (0.0, 0.0, 0.5, 0.5),
    "top right": (0.5, 0.0, 1.0, 0.5), "bottom left": (0.0, 0.5, 0.5, 1.0), "bottom right": (0.5, 0.5, 1.0, 1.0),
}
BLEND_DIMENSIONS = {"square": "1:1", "portrait": "2:3", "landscape": "3:2"}


def read_region(text: str) -> tuple[float, float, float, float]:
    """A preset name ("center", "top left"...) or four percentages "left top right bottom"."""
    words = " ".join(text.lower().replace(",", " ").split())
    if words in REGION_PRESETS:
        return REGION_PRESETS[words]
    try:
        left, top, right, bottom = (float(word) / 100 for word in words.split())
    except ValueError:
        raise PromptError(f"the region is a name ({', '.join(REGION_PRESETS)}) or four percentages: "
                          "left top right bottom, like 25 25 75 75") from None
    if not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise PromptError("the region's percentages must go from 0 to 100, left before right and top before bottom")
    return left, top, right, bottom


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

    async def keep_pictures(self, user_id: int, urls: tuple[str, ...] | list[str],
                            attachments: list[discord.Attachment]) -> list[str]:
        """Fetch the pictures (links and attachments get the same checks; a user has only a few
        fetches under way at once) and keep them in the image store, as sent when the format
        is already fine; their names, in order. FetchError says what was wrong with which."""
        policy = self.bot.settings.images
        by_url = {attachment.url: attachment for attachment in attachments}
        names = []
        for number, url in enumerate(urls, start=1):
            attachment = by_url.get(url)
            which = f"picture {number}" if len(urls) > 1 else "the picture"
            if attachment is not None and attachment.size > policy.max_bytes:
                raise FetchError(f"{which} is larger than {readable_size(policy.max_bytes)}")
            if attachment is not None and not (attachment.content_type or "image/").startswith("image/"):
                raise FetchError(f"{which} ({attachment.filename}) is not a picture")
            try:
                async with self.bot.fetch_limiter.slot(user_id):
                    fetched = await fetch_image(self.bot.http_session, url, policy)
            except FetchError as error:
                raise FetchError(f"{which}: {error}") from None
            original = (fetched.data, fetched.format) if fetched.original_is_faithful else None
            names.append(await asyncio.to_thread(self.bot.store.save_input, fetched.image, original))
        return names

    def read_prompt(self, prompt: str, attached: tuple[str, ...] = ()) -> list[tuple[GenerationRequest, str]]:
        """Each job of a prompt, checked against the configured models, with the prompt to show
        for it (as the user wrote it, permutations expanded; defaults filled in are not shown).
        `attached` are attachment URLs, image prompts like the links the prompt starts with.
        PromptError says what is wrong."""
        settings = self.bot.settings
        loras = list_loras(settings.catalog.lora_dir)
        requests = []
        for request in parse_prompt(prompt, settings.limits):
            request = replace(request, image_urls=request.image_urls + attached)
            if len(request.image_urls) > MAX_IMAGE_PROMPTS:
                raise PromptError(f"at most {MAX_IMAGE_PROMPTS} image prompts (links and attachments together)")
            shown = request.to_prompt()
            if len(shown) > settings.limits.max_input_length:  # with the attachment's link: Remix must show it
                raise PromptError(f"with the attached picture's link the prompt is {len(shown)} characters; "
                                  f"the limit is {settings.limits.max_input_length}")
            requests.append((validate_request(request, settings.catalog, available_loras=loras), shown))
        if len({request.image_urls for request, _ in requests}) > 1:  # the pictures are fetched once, for all
            raise PromptError("every job of a {permutation} needs the same image links: put the links outside "
                              "the braces")
        return requests

    async def user(self, user_id: int) -> User:
        """The user's row with their /settings (made on first use)."""
        async with self.bot.sessionmaker.begin() as session:
            return await repo.ensure_user(session, user_id=user_id)

    def screen(self, interaction: discord.Interaction, prompts: list[str], asked: str | None = None) -> None:
        """The server's rules that need no database (bans, channels, banned words, the mode the
        prompt asks for, the burst allowance), checked before the deferral and before any picture
        is fetched, so that a refusal is private at once and costs nothing; `Refused` says why. The
        delivery service checks them again with the rest when the jobs are submitted (the request
        counts once against the burst allowance)."""
        asker = Asker.of(interaction)
        self.bot.rules.check_access(asker)
        self.bot.rules.check_words(asker, prompts)
        if asked is not None:
            self.bot.rules.check_mode(asker, asked)
        self.bot.rules.check_burst(asker)

    def personal(self, interaction: discord.Interaction, prompt: str, user: User) -> str:
        """The prompt with the member's /settings, then the server's default version (/admin), added
        where the prompt does not set them itself."""
        prompt = apply_suffix(prompt, user.default_suffix) if user.default_suffix else prompt
        version = self.bot.rules.default_version(Asker.of(interaction))
        return apply_suffix(prompt, f"--v {version}") if version else prompt

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
        parent = None
        if 0 < job_id <= MAX_ROW_ID:  # a forged button id can carry any number of digits
            async with self.bot.sessionmaker() as session:
                parent = await repo.get_job(session, job_id=job_id)
        if parent is None or parent.state != JobState.DONE:
            await refuse(interaction, "❌ That job's pictures are gone: run /imagine again.")
            return None
        if index >= len(parent.images):
            await refuse(interaction, "❌ That picture does not exist.")
            return None
        if not await asyncio.to_thread(Path(parent.images[index].path).exists):
            keep = self.bot.settings.storage.keep_results_days
            await refuse(interaction, f"❌ That picture was removed: this server keeps pictures for {days(keep)}. "
                                           "Run /imagine again." if keep else
                                           "❌ That picture is gone from the image store: run /imagine again.")
            return None
        return parent

    async def stored_user(self, user_id: int) -> User | None:
        """The user's row if there is one, read without writing (a form may follow)."""
        async with self.bot.sessionmaker() as session:
            return await repo.get_user(session, user_id=user_id)

    @staticmethod
    def job_for_button(variability: Variability, action: Action, parent: Job, index: int) -> NewJob:
        if action == Action.REROLL:
            return reroll_job(parent)
        if action in (Action.VARY_SUBTLE, Action.VARY_STRONG):
            return variation_job(parent, index, "subtle" if action == Action.VARY_SUBTLE else "strong")
        if action == Action.VARY:  # V1–V4 follow the presser's /settings
            return variation_job(parent, index, variability.value)
        if action in PANS:
            return pan_job(parent, index, PANS[action])
        if action in (Action.ZOOM_2, Action.ZOOM_15):
            return zoom_job(parent, index, 2.0 if action == Action.ZOOM_2 else 1.5)
        if action == Action.SQUARE:
            return square_job(parent, index)
        return upscale_job(parent, index, "subtle" if action == Action.UPSCALE_SUBTLE else "creative")

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
        """A prompt that makes exactly one job (forms on a picture take one), whose image links
        are among `kept_links`: the pictures the job was made from are kept, new ones are not fetched."""
        requests = self.read_prompt(prompt)
        if len(requests) != 1:
            raise PromptError(f"{what} takes one prompt: no {{permutations}} or --repeat.")
        if any(url not in kept_links for url in requests[0][0].image_urls):
            raise PromptError(f"{what} keeps the pictures the job started from (or drops them) but takes no new "
                              "links: to start from other pictures, run /imagine with them.")
        return requests[0]


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Imagine(bot))
