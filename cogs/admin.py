"""/admin: a server's moderators stay in charge of the bot (docs/community.md).

Hidden from members by `default_permissions` (Manage Messages) and checked again on use:
settings need Manage Server, moderation Manage Messages. Every change is stored per
server, written to the audit in the same transaction, and read back into the bot's
rules (bot/rules.py) at once. Answers are private.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.messages import field_lines, shorten
from bot.replies import duration, fit_content
from bot.rules import MODES, Refused, start_of_month
from bot.wordfilter import BannedWords, normalise_entry
from storage import repository as repo
from storage.models import NsfwPolicy, QueueMode

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

MAX_WORDS = 500  # banned entries one server may keep
MAX_REASON = 200
Change = Callable[["AsyncSession"], Awaitable[str]]  # a change to make in one transaction


class AnsweringChannel(app_commands.Transformer):
    """A channel members can ask in: text, announcement, forum, voice or stage (a forum's posts and a
    channel's threads follow it). Named type by type: Discord's schema for the option refuses some
    of the types discord.py would add for `ForumChannel` (media, 16)."""

    @property
    def type(self) -> discord.AppCommandOptionType:
        return discord.AppCommandOptionType.channel

    @property
    def channel_types(self) -> list[discord.ChannelType]:
        kinds = discord.ChannelType
        return [kinds.text, kinds.news, kinds.forum, kinds.voice, kinds.stage_voice]

    async def transform(self, interaction: discord.Interaction, value: Any) -> Any:
        return value  # the resolved channel: only its id is needed


AnsweringChannelOption = app_commands.Transform[Any, AnsweringChannel]


def server_permission(name: str) -> Callable[[Any], Any]:
    """A check on the member's permission in the whole server (a permission given in one channel
    only, which `interaction.permissions` would count, is not enough to run the server's bot)."""
    async def predicate(interaction: discord.Interaction) -> bool:
        permissions = getattr(interaction.user, "guild_permissions", None)
        if permissions is None or not getattr(permissions, name):
            raise app_commands.MissingPermissions([name])
        return True
    return app_commands.check(predicate)


manage_server = server_permission("manage_guild")
manage_messages = server_permission("manage_messages")


def read_modes(text: str) -> list[str]:
    """`fast relax` -> ["fast", "relax"]; ValueError names what is not a mode."""
    words = text.replace(",", " ").lower().split()
    unknown = [word for word in words if word not in MODES]
    if unknown or not words:
        raise ValueError(f"modes are {', '.join(MODES)} (separated by spaces), not “{shorten(text, 50)}”")
    return [mode for mode in MODES if mode in words]


def may_be_banned(moderator: discord.abc.User, target: discord.abc.User) -> str | None:
    """Why a moderator may not ban this member from the bot, or None: not themselves, not the bot,
    not the server's owner or another moderator, not someone whose top role is as high as theirs."""
    if target.id == moderator.id or target.bot:
        return "that member cannot be banned from the bot"
    if isinstance(target, discord.Member) and isinstance(moderator, discord.Member):
        if target.id == target.guild.owner_id or target.guild_permissions.manage_messages:
            return "moderators and the server's owner cannot be banned from the bot"
        if moderator.id != moderator.guild.owner_id and target.top_role >= moderator.top_role:
            return "that member's top role is as high as yours"
    return None


@app_commands.default_permissions(manage_messages=True)  # hidden from members; each command checks again
@app_commands.guild_only()
class Admin(commands.GroupCog, group_name="admin", group_description="Run the bot for this server"):
    words = app_commands.Group(name="words", description="Words and phrases this server refuses in prompts")

    def __init__(self, bot: ImagineBot) -> None:
        self.bot = bot
        super().__init__()

    async def apply(self, interaction: discord.Interaction, action: str, change: Change,
                    target_user_id: int | None = None, then: Callable[[], Awaitable[None]] | None = None) -> None:
        """Answer privately at once, make the change and its audit entry in one transaction, read the
        server's rules again (and do `then`), and confirm. `change` returns what it did, or raises
        `Refused` (then nothing is written)."""
        assert interaction.guild_id is not None
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            async with self.bot.sessionmaker.begin() as session:
                detail = await change(session)
                await repo.record_audit(session, guild_id=interaction.guild_id, moderator_id=interaction.user.id,
                                        action=action, target_user_id=target_user_id, detail=detail)
        except Refused as refusal:
            await interaction.followup.send(f"❌ {refusal}", ephemeral=True)
            return
        await self.bot.rules.load(interaction.guild_id)
        if then is not None:
            await then()
        await interaction.followup.send(fit_content(f"✅ {detail}"), ephemeral=True)

    async def refuse(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(f"❌ {text}", ephemeral=True)

    # --- settings (Manage Server) ------------------------------------------------

    @app_commands.command(name="show", description="This server's settings for the bot")
    @manage_messages
    async def show(self, interaction: discord.Interaction) -> None:
        server = self.bot.rules.server(interaction.guild_id)
        catalog = self.bot.settings.catalog
        embed = discord.Embed(title="The bot on this server", colour=discord.Colour.blurple())
        embed.add_field(name="Answers in", inline=False, value=field_lines(
            [f"<#{channel}>" for channel in sorted(server.answer_channels)]) if server.answer_channels
            else "every channel")
        default_mode = server.default_mode or self.bot.settings.queue.default_mode
        embed.add_field(name="Modes", inline=False, value=field_lines(
            [f"{', '.join(server.allowed_modes)} (default {default_mode})",
             *(f"<#{channel}>: {', '.join(modes)}" for channel, modes in server.channel_modes.items())]))
        embed.add_field(name="Model version", value=server.default_version or f"{catalog.default_version} (default)")
        embed.add_field(name="NSFW pictures", value=server.nsfw_policy)
        embed.add_field(name="Banned words", inline=False, value=field_lines(list(server.own_words))
                        if server.own_words else "none (besides the bot's own list)")
        embed.add_field(name="Roles", inline=False, value=field_lines([
            f"<@&{role_id}>: {', '.join(sorted(grant.modes)) or 'no extra mode'}"
            f"{'' if grant.fast_seconds_per_day is None else f', {limit(grant.fast_seconds_per_day)} a day'}"
            f"{'' if grant.fast_seconds_per_month is None else f', {limit(grant.fast_seconds_per_month)} a month'}"
            f"{'' if grant.queued is None else f', {grant.queued} waiting'}"
            for role_id, grant in server.roles.items()]))
        embed.add_field(name="Banned members", inline=False, value=field_lines([
            f"<@{user_id}>{f' ({shorten(reason, 80)})' if reason else ''}" for user_id, reason in server.bans.items()]))
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(name="channel", description="Whether the bot answers in a channel, and its modes there")
    @app_commands.describe(channel="The channel (its threads and posts follow it)",
                           answers="Answer here; once one channel answers, the bot answers only in those",
                           modes="Modes allowed here, e.g. `relax`; `all`: the server's (empty: unchanged)")
    @manage_server
    async def channel(self, interaction: discord.Interaction, channel: AnsweringChannelOption, answers: bool,
                      modes: app_commands.Range[str, 1, 40] | None = None) -> None:
        try:
            allowed = None if modes is None or modes.strip().lower() == "all" else read_modes(modes)
        except ValueError as error:
            await self.refuse(interaction, str(error))
            return
        changes: dict[str, Any] = {"answers": answers}
        if modes is not None:
            changes["allowed_modes"] = allowed
        others = self.bot.rules.server(interaction.guild_id).answer_channels - {channel.id}

        async def change(session: AsyncSession) -> str:
            await repo.set_channel(session, guild_id=interaction.guild_id, channel_id=channel.id, **changes)
            if answers:
                said = f"<#{channel.id}> answers"
            elif others:
                said = f"<#{channel.id}> does not answer (the bot answers in the channels set to answer)"
            else:
                said = (f"<#{channel.id}> is not one of the answering channels; none is set, so the bot answers "
                        "everywhere")
            if modes is not None:
                said += f"; modes there: {' '.join(allowed) if allowed else 'the server’s'}"
            return said
        await self.apply(interaction, "channel", change)

    @app_commands.command(name="modes", description="The modes members may use, and the default")
    @app_commands.describe(allowed="Modes for everyone, e.g. `fast relax` (roles may add turbo)",
                           default="The mode members start in (empty: the first allowed of fast, relax, turbo)")
    @manage_server
    async def modes(self, interaction: discord.Interaction, allowed: app_commands.Range[str, 1, 40],
                    default: QueueMode | None = None) -> None:
        try:
            modes = read_modes(allowed)
        except ValueError as error:
            await self.refuse(interaction, str(error))
            return
        if default is not None and default.value not in modes:
            await self.refuse(interaction, f"the default mode ({default.value}) must be one of the allowed modes")
            return
        default = default or next(QueueMode(mode) for mode in ("fast", "relax", "turbo") if mode in modes)

        async def change(session: AsyncSession) -> str:
            await repo.set_guild_settings(session, guild_id=interaction.guild_id, allowed_modes=modes,
                                          default_mode=default)
            return f"modes: {', '.join(modes)}; members start in {default.value}"
        await self.apply(interaction, "modes", change)

    @app_commands.command(name="model", description="The model version for prompts that name none")
    @app_commands.describe(version="A version from the bot's config (`default`: the bot's own default)")
    @manage_server
    async def model(self, interaction: discord.Interaction, version: app_commands.Range[str, 1, 64]) -> None:
        versions = self.bot.settings.catalog.versions
        if version != "default" and version not in versions:
            await self.refuse(interaction, f"there is no version “{shorten(version, 40)}”: choose one of "
                                           f"{', '.join(sorted(versions))}, or `default`")
            return

        async def change(session: AsyncSession) -> str:
            await repo.set_guild_settings(session, guild_id=interaction.guild_id,
                                          default_version=None if version == "default" else version)
            return f"model version: {version}"
        await self.apply(interaction, "model", change)

    @model.autocomplete("version")
    async def version_choices(self, interaction: discord.Interaction, typed: str) -> list[app_commands.Choice[str]]:
        names = ["default", *sorted(self.bot.settings.catalog.versions)]
        return [app_commands.Choice(name=name[:100], value=name[:100]) for name in names if typed.lower() in name][:25]

    @app_commands.command(name="nsfw", description="What happens to pictures the safety checker flags")
    @app_commands.describe(policy="Outside age-restricted channels: blurred as spoilers, or withheld")
    @manage_server
    async def nsfw(self, interaction: discord.Interaction, policy: NsfwPolicy) -> None:
        async def change(session: AsyncSession) -> str:
            await repo.set_guild_settings(session, guild_id=interaction.guild_id, nsfw_policy=policy)
            return f"flagged pictures outside age-restricted channels: {policy.value}"
        await self.apply(interaction, "nsfw", change)

    @app_commands.command(name="role", description="What a role gives: more modes, more fast time, a bigger queue")
    @app_commands.describe(role="The role", modes="Modes beyond the server's, e.g. `turbo` (empty: none)",
                           fast_minutes_per_day="Fast time a day, more than everyone's (0: unlimited)",
                           fast_hours_per_month="Fast time a month, more than everyone's (0: unlimited)",
                           queued="Jobs a holder may have waiting per mode (empty: the usual)")
    @manage_server
    async def role(self, interaction: discord.Interaction, role: discord.Role,
                   modes: app_commands.Range[str, 1, 40] | None = None,
                   fast_minutes_per_day: app_commands.Range[float, 0, 1440] | None = None,
                   fast_hours_per_month: app_commands.Range[float, 0, 744] | None = None,
                   queued: app_commands.Range[int, 1, 100] | None = None) -> None:
        try:
            granted = read_modes(modes) if modes else []
        except ValueError as error:
            await self.refuse(interaction, str(error))
            return
        per_day = None if fast_minutes_per_day is None else round(fast_minutes_per_day * 60)
        per_month = None if fast_hours_per_month is None else round(fast_hours_per_month * 3600)
        quotas = self.bot.settings.quotas
        for given, everyone, what in ((per_day, quotas.fast_seconds_per_day, "a day"),
                                      (per_month, quotas.fast_seconds_per_month, "a month")):
            if given is not None and not everyone:
                await self.refuse(interaction, f"fast time {what} is unlimited for everyone on this bot: "
                                               "a role cannot give more")
                return
            if given and given <= everyone:
                await self.refuse(interaction, f"a role gives more fast time than everyone's ({duration(everyone)} "
                                               f"{what}), or 0 for unlimited")
                return

        async def change(session: AsyncSession) -> str:
            await repo.set_role_rule(session, guild_id=interaction.guild_id, role_id=role.id, modes=granted,
                                     fast_seconds_per_day=per_day, fast_seconds_per_month=per_month, queued=queued)
            return (f"<@&{role.id}>: modes {', '.join(granted) or 'none extra'}; fast time {limit(per_day)} a day, "
                    f"{limit(per_month)} a month; {queued or 'the usual number of'} jobs waiting")
        await self.apply(interaction, "role", change)

    @app_commands.command(name="role-clear", description="Remove what a role gives")
    @manage_server
    async def role_clear(self, interaction: discord.Interaction, role: discord.Role) -> None:
        async def change(session: AsyncSession) -> str:
            if not await repo.remove_role_rule(session, guild_id=interaction.guild_id, role_id=role.id):
                raise Refused(f"<@&{role.id}> has no rule here")
            return f"<@&{role.id}> gives nothing special any more"
        await self.apply(interaction, "role", change)

    # --- banned words (Manage Server) ----------------------------------------------

    @words.command(name="add", description="Refuse prompts with this word or phrase")
    @app_commands.describe(text="A word or a phrase of up to 6 words")
    @manage_server
    async def words_add(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 100]) -> None:
        await self.change_words(interaction, text, add=True)

    @words.command(name="remove", description="Stop refusing a word or phrase")
    @manage_server
    async def words_remove(self, interaction: discord.Interaction, text: app_commands.Range[str, 1, 100]) -> None:
        await self.change_words(interaction, text, add=False)

    async def change_words(self, interaction: discord.Interaction, text: str, *, add: bool) -> None:
        text = text.strip()
        try:
            key = normalise_entry(text)
        except ValueError as error:
            await self.refuse(interaction, str(error))
            return

        async def change(session: AsyncSession) -> str:
            own = list((await repo.ensure_guild(session, guild_id=interaction.guild_id)).banned_words or ())
            kept = [entry for entry in own if normalise_entry(entry) != key]
            if add and len(kept) != len(own):
                raise Refused(f"“{text}” is banned already")
            if not add and len(kept) == len(own):
                raise Refused(f"“{text}” is not on this server's list")
            if add and len(own) >= MAX_WORDS:
                raise Refused(f"this server's list is full ({MAX_WORDS}): remove some first")
            words = BannedWords([*kept, text] if add else kept).entries
            await repo.set_guild_settings(session, guild_id=interaction.guild_id, banned_words=list(words))
            return f"{'banned' if add else 'allowed again'}: “{text}”"
        await self.apply(interaction, "words", change)

    # --- moderation (Manage Messages) ------------------------------------------------

    @app_commands.command(name="ban", description="Shut a member out of the bot on this server")
    @app_commands.describe(member="The member (or their user id)", reason="Shown to them when they try (optional)")
    @manage_messages
    async def ban(self, interaction: discord.Interaction, member: discord.User,
                  reason: app_commands.Range[str, 0, MAX_REASON] = "") -> None:
        reason = " ".join(reason.split())
        why_not = may_be_banned(interaction.user, member)
        if why_not is not None:
            await self.refuse(interaction, why_not)
            return

        async def change(session: AsyncSession) -> str:
            if not await repo.ban_member(session, guild_id=interaction.guild_id, user_id=member.id,
                                         moderator_id=interaction.user.id, reason=reason):
                raise Refused(f"<@{member.id}> is banned already")
            return f"<@{member.id}> is banned from the bot here{f' ({reason})' if reason else ''}"
        async def cancel_their_jobs() -> None:  # what they had waiting or running here goes too
            for job_id in await self.unfinished_jobs(interaction.guild_id, member.id):
                await self.bot.jobs.cancel(job_id)
        await self.apply(interaction, "ban", change, member.id, then=cancel_their_jobs)

    @app_commands.command(name="unban", description="Let a member use the bot again")
    @app_commands.describe(member="The member (or their user id: they may have left)")
    @manage_messages
    async def unban(self, interaction: discord.Interaction, member: discord.User) -> None:
        async def change(session: AsyncSession) -> str:
            if not await repo.unban_member(session, guild_id=interaction.guild_id, user_id=member.id):
                raise Refused(f"<@{member.id}> is not banned")
            return f"<@{member.id}> may use the bot again"
        await self.apply(interaction, "unban", change, member.id)

    async def unfinished_jobs(self, guild_id: int | None, user_id: int) -> list[int]:
        async with self.bot.sessionmaker() as session:
            jobs = await repo.list_unfinished_jobs_of(session, user_id=user_id)
        return [job.id for job in jobs if job.guild_id == guild_id]

    @app_commands.command(name="jobs", description="A member's latest jobs on this server")
    @app_commands.describe(member="The member (or their user id)")
    @manage_messages
    async def jobs(self, interaction: discord.Interaction, member: discord.User) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.sessionmaker() as session:
            jobs = await repo.list_jobs_in_guild(session, guild_id=interaction.guild_id, user_id=member.id)
        lines = [f"`{job.id}` {job.state.value} · {shorten(job.prompt, 80)}" for job in jobs]
        embed = discord.Embed(title=f"Latest jobs of {member.display_name}"[:256], colour=discord.Colour.blurple(),
                              description=field_lines(lines) if lines else "none on this server")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="audit", description="What moderators and admins did with the bot here")
    @app_commands.describe(page="1 is the newest")
    @manage_messages
    async def audit(self, interaction: discord.Interaction, page: app_commands.Range[int, 1, 1000] = 1) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.sessionmaker() as session:
            entries = await repo.list_audit(session, guild_id=interaction.guild_id, limit=15, offset=(page - 1) * 15)
        lines = [f"{discord.utils.format_dt(entry.created_at.replace(tzinfo=entry.created_at.tzinfo or UTC), 'R')} "
                 f"<@{entry.moderator_id}> {entry.action}: {shorten(entry.detail, 120)}" for entry in entries]
        embed = discord.Embed(title=f"Audit, page {page}", colour=discord.Colour.blurple(),
                              description=field_lines(lines) if lines else "nothing yet")
        await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="usage", description="Who used the most engine time here this month")
    @manage_messages
    async def usage(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        async with self.bot.sessionmaker() as session:
            rows = await repo.usage_report(session, guild_id=interaction.guild_id,
                                           since=start_of_month(datetime.now(UTC)))
        lines = [f"<@{row.user_id}>: {row.jobs} jobs, {duration(row.gpu_seconds)}" for row in rows]
        embed = discord.Embed(title="Usage this month", colour=discord.Colour.blurple(),
                              description=field_lines(lines) if lines else "no jobs yet this month")
        await interaction.followup.send(embed=embed, ephemeral=True)


def limit(seconds: int | None) -> str:
    if seconds is None:
        return "the server's"
    return "unlimited" if seconds == 0 else duration(seconds)


async def setup(bot: ImagineBot) -> None:
    await bot.add_cog(Admin(bot))
