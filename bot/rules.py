"""What a server lets its members do, checked in one place (docs/community.md).

Every front end passes its requests through `CommunityRules`: the delivery service
asks `admit` before it writes a job, and the cogs call `check_access` / `check_words`
before they answer, so that a refusal is private and immediate. The rules live in
memory, read from the database at start-up and again after each /admin change, so a
check costs no database wait (only the fast-time count in `admit` reads it).

Whom a rule concerns is an `Asker`: the member, the server, the channel and the roles
they hold there; the web app makes one from its signed-in member, with no channel.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import discord
from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from bot.replies import duration, tell_privately
from bot.wordfilter import BannedWords, merged
from storage import repository as repo
from storage.models import QueueMode, User
from storage.repository import NewJob

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

    from bot.config import Settings

log = logging.getLogger(__name__)

MODES = ("turbo", "fast", "relax")


class Refused(Exception):
    """A rule says no; the message is for the member, said privately. `in_public` is what may be
    said where everyone reads it (a reaction has no private answer): by default the same."""

    def __init__(self, message: str, *, in_public: str | None = None) -> None:
        super().__init__(message)
        self.in_public = in_public or message


@dataclass(frozen=True)
class Asker:
    """Who asks, and where: what every rule needs to know of a request."""

    user_id: int
    guild_id: int | None = None
    channel_id: int | None = None  # None: the web app (web/), which posts nothing in any channel
    parent_id: int | None = None  # the channel a thread is in: threads follow their channel's rules
    role_ids: frozenset[int] = frozenset()
    request_id: int | None = None  # the interaction: its checks count once against the burst allowance

    @classmethod
    def of(cls, interaction: discord.Interaction) -> Asker:
        roles = getattr(interaction.user, "roles", ())  # a Member in a server; a User in DMs has none
        return cls(interaction.user.id, interaction.guild_id, interaction.channel_id,
                   getattr(interaction.channel, "parent_id", None), frozenset(role.id for role in roles),
                   interaction.id)

    @classmethod
    def of_reaction(cls, client: discord.Client, payload: discord.RawReactionActionEvent) -> Asker:
        channel = client.get_channel(payload.channel_id)
        roles = payload.member.roles if payload.member is not None else ()
        return cls(payload.user_id, payload.guild_id, payload.channel_id, getattr(channel, "parent_id", None),
                   frozenset(role.id for role in roles))


@dataclass(frozen=True)
class RoleGrant:
    """What holding a role gives (a `RoleRule` row)."""

    modes: frozenset[str] = frozenset()
    fast_seconds_per_day: int | None = None  # None: the server's; 0: unlimited
    fast_seconds_per_month: int | None = None
    queued: int | None = None


@dataclass
class ServerRules:
    """One server's rules as the checks read them: config.toml's defaults with its /admin changes."""

    allowed_modes: tuple[str, ...]
    default_mode: str | None = None
    default_version: str | None = None
    nsfw_policy: str = "blur"
    own_words: tuple[str, ...] = ()  # the server's list (the global one is in `words` too)
    words: BannedWords = field(default_factory=lambda: BannedWords(()))
    answer_channels: frozenset[int] = frozenset()  # empty: the bot answers everywhere
    channel_modes: dict[int, tuple[str, ...]] = field(default_factory=dict)
    roles: dict[int, RoleGrant] = field(default_factory=dict)
    bans: dict[int, str] = field(default_factory=dict)  # member -> the moderator's reason


@dataclass(frozen=True)
class Admission:
    """What `admit` decided: the mode the jobs run in, and a line to tell the member (or None)."""

    mode: QueueMode
    notice: str | None = None
    queued_caps: dict[str, int] | None = None  # a role's bigger allowance of waiting jobs


@dataclass(frozen=True)
class FastTime:
    """A member's fast time: what is used and what the limits are (0: unlimited), in seconds."""

    used_today: float
    used_this_month: float
    per_day: int
    per_month: int
    reserved: float = 0.0  # the estimated cost of their fast jobs not finished yet

    @property
    def spent(self) -> str | None:
        """"today" or "this month" when that limit is reached (counting the jobs not finished yet), else None."""
        if self.per_day and self.used_today + self.reserved >= self.per_day:
            return "today"
        if self.per_month and self.used_this_month + self.reserved >= self.per_month:
            return "this month"
        return None


def start_of_day(now: datetime) -> datetime:
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def start_of_month(now: datetime) -> datetime:
    return start_of_day(now).replace(day=1)


class CommunityRules:
    def __init__(self, settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.global_words = BannedWords(settings.moderation.banned_words)
        self._servers: dict[int, ServerRules] = {}
        self._burst = parse_rate(settings.queue.burst)
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._counted: OrderedDict[int, None] = OrderedDict()  # requests already counted against the burst

    # --- reading the rules -------------------------------------------------------

    async def load(self, guild_id: int | None = None) -> None:
        """Read every server's rules (at start-up), or one server's again (after an /admin change)."""
        async with self.sessionmaker() as session:
            community = await repo.load_community(session, guild_id=guild_id)
        servers: dict[int, ServerRules] = {}
        if guild_id is not None:
            servers[guild_id] = self._defaults()
        for guild in community.guilds:
            rules = servers.setdefault(guild.id, self._defaults())
            if guild.allowed_modes:
                rules.allowed_modes = tuple(mode for mode in MODES if mode in guild.allowed_modes)
            rules.default_mode = guild.default_mode.value if guild.default_mode else None
            if guild.default_version in self.settings.catalog.versions:
                rules.default_version = guild.default_version
            elif guild.default_version is not None:  # config.toml no longer has it: the bot's default, said once
                log.warning("server %s chose model version %r, which config.toml no longer has; using the default",
                            guild.id, guild.default_version)
            if guild.nsfw_policy is not None:
                rules.nsfw_policy = guild.nsfw_policy.value
            rules.own_words = tuple(guild.banned_words or ())
            rules.words = merged(self.global_words, BannedWords(rules.own_words))
        for channel in community.channels:
            rules = servers.setdefault(channel.guild_id or 0, self._defaults())
            if channel.answers:
                rules.answer_channels |= {channel.id}
            if channel.allowed_modes:
                rules.channel_modes[channel.id] = tuple(m for m in MODES if m in channel.allowed_modes)
        for rule in community.role_rules:
            servers.setdefault(rule.guild_id, self._defaults()).roles[rule.role_id] = RoleGrant(
                frozenset(rule.modes or ()), rule.fast_seconds_per_day, rule.fast_seconds_per_month, rule.queued)
        for ban in community.bans:
            servers.setdefault(ban.guild_id, self._defaults()).bans[ban.user_id] = ban.reason
        if guild_id is None:
            self._servers = servers
        else:
            self._servers[guild_id] = servers[guild_id]

    def _defaults(self) -> ServerRules:
        return ServerRules(allowed_modes=tuple(self.settings.queue.allowed_modes),
                           nsfw_policy=self.settings.moderation.nsfw_policy, words=self.global_words)

    def server(self, guild_id: int | None) -> ServerRules:
        """A server's rules (config.toml's for a server that changed nothing, and for DMs)."""
        if guild_id is None or guild_id not in self._servers:
            return self._defaults()
        return self._servers[guild_id]

    # --- checks that need no database ------------------------------------------------

    def check_access(self, asker: Asker) -> None:
        """Banned members and channels where the bot does not answer: `Refused`. A ban is one
        server's: in DMs only the operator's `[moderation] allow_dms` decides."""
        if asker.guild_id is None:
            if not self.settings.moderation.allow_dms:
                raise Refused("The bot takes requests on servers only, not in DMs.")
            return
        server = self.server(asker.guild_id)
        if asker.user_id in server.bans:
            reason = server.bans[asker.user_id]
            raise Refused("This server's moderators have banned you from the bot"
                          f"{f' ({reason})' if reason else ''}.")
        # a request with no channel comes from the web app: the channels the bot answers in are
        # about where it talks on Discord, and nothing is posted there for it
        if (server.answer_channels and asker.channel_id is not None
                and not ({asker.channel_id, asker.parent_id} & server.answer_channels)):
            places = ", ".join(f"<#{channel}>" for channel in sorted(server.answer_channels))
            raise Refused(f"The bot answers only in {places} on this server.")

    def check_words(self, asker: Asker, texts: Iterable[str]) -> None:
        """A banned word or phrase in any of the texts (a prompt, its --no, a remix): `Refused`, naming it."""
        words = self.server(asker.guild_id).words
        for text in texts:
            found = words.find(text)
            if found is not None:
                raise Refused(f"“{found}” is not allowed on this server: take it out of your prompt.",
                              in_public="That prompt has a word this server does not allow (/imagine it to "
                                        "see which, privately).")

    def allowed_words(self, asker: Asker, texts: Iterable[str]) -> list[bool]:
        """For each text, whether it is free of banned words (/describe hides the others)."""
        words = self.server(asker.guild_id).words
        return [words.find(text) is None for text in texts]

    def modes_for(self, asker: Asker) -> tuple[str, ...]:
        """The modes this member may use here: the server's and their roles', narrowed by the channel's."""
        server = self.server(asker.guild_id)
        granted = set(server.allowed_modes)
        for role_id in asker.role_ids:
            if role_id in server.roles:
                granted |= server.roles[role_id].modes
        narrowed = server.channel_modes.get(asker.channel_id or 0) or server.channel_modes.get(asker.parent_id or 0)
        if narrowed:
            granted &= set(narrowed)
        return tuple(mode for mode in MODES if mode in granted)

    def default_mode(self, asker: Asker, user: User) -> QueueMode:
        """The member's /settings mode, else the server's, else config.toml's: the first of them
        the member may use here (a default is a preference, never a reason to refuse)."""
        server = self.server(asker.guild_id)
        preferences = (user.default_mode.value if user.default_mode else None, server.default_mode,
                       self.settings.queue.default_mode, "fast", "relax", "turbo")
        allowed = self.modes_for(asker)
        chosen = next((mode for mode in preferences if mode in allowed), None)
        return QueueMode(chosen or next(mode for mode in preferences if mode))  # none allowed: admit says so

    def default_version(self, asker: Asker) -> str | None:
        """The model version the server chose for prompts that name none (None: config.toml's)."""
        return self.server(asker.guild_id).default_version

    def nsfw_policy(self, guild_id: int | None) -> str:
        return self.server(guild_id).nsfw_policy

    def _grants(self, asker: Asker) -> list[RoleGrant]:
        server = self.server(asker.guild_id)
        return [server.roles[role_id] for role_id in asker.role_ids if role_id in server.roles]

    def queued_caps(self, asker: Asker) -> dict[str, int] | None:
        """The waiting jobs a member may have per mode when a role allows more than config.toml."""
        allowances = [grant.queued for grant in self._grants(asker) if grant.queued]
        if not allowances:
            return None
        return {mode: max(cap, *allowances) for mode, cap in self.settings.queue.caps.queued.items()}

    def fast_limits(self, asker: Asker) -> tuple[int, int]:
        """Fast seconds per day and per month (0: unlimited): config.toml's, or more by a role."""
        quotas = self.settings.quotas
        limits = [quotas.fast_seconds_per_day, quotas.fast_seconds_per_month]
        for grant in self._grants(asker):
            for number, granted in enumerate((grant.fast_seconds_per_day, grant.fast_seconds_per_month)):
                if granted is not None and limits[number] and (granted == 0 or granted > limits[number]):
                    limits[number] = granted
        return limits[0], limits[1]

    def check_mode(self, asker: Asker, mode: str) -> None:
        """A mode the member asked for (`--turbo`) that they may not use here: `Refused`."""
        allowed = self.modes_for(asker)
        if mode not in allowed:
            raise Refused(f"{mode.title()} mode is not available to you here: use "
                          f"{' or '.join('--' + m for m in allowed) or 'nothing (no mode is open to you)'}"
                          f"{'; /settings changes your default' if allowed else ''}.")

    def same_request(self, request_id: int) -> None:
        """`request_id` continues a request already counted (a form opened by a counted press)."""
        self._counted[request_id] = None
        while len(self._counted) > 10_000:
            self._counted.popitem(last=False)

    def check_burst(self, asker: Asker) -> None:
        """Counts a request against the member's burst allowance (once per request, however
        many checks it passes); `Refused` past it."""
        if asker.request_id is not None:
            if asker.request_id in self._counted:
                return
            self.same_request(asker.request_id)
        if not self._limiter.hit(self._burst, "burst", str(asker.user_id)):
            reset = self._limiter.get_window_stats(self._burst, "burst", str(asker.user_id)).reset_time
            wait = max(1, round(reset - datetime.now(UTC).timestamp()))
            raise Refused(f"You are sending requests too fast: wait {wait} s and try again.")

    # --- the one gate every job passes ---------------------------------------------

    async def fast_time(self, asker: Asker, now: datetime | None = None) -> FastTime:
        now = now or datetime.now(UTC)
        per_day, per_month = self.fast_limits(asker)
        turbo_cost = self.settings.quotas.turbo_cost
        async with self.sessionmaker() as session:
            (today, month), reserved = await repo.fast_seconds(
                session, user_id=asker.user_id, turbo_cost=turbo_cost, since=(start_of_day(now), start_of_month(now)))
        return FastTime(today, month, per_day, per_month, reserved)

    async def admit(self, asker: Asker, mode: QueueMode, new_jobs: list[NewJob]) -> Admission:
        """Whether these jobs may be made, and in which mode; `Refused` says why not.

        Bans and channels, banned words in every job's prompt (its --no and a remix's edits
        are in it), the modes this member may use, their burst allowance, then their fast time:
        when it is spent a fast or turbo request runs in relax, with a notice."""
        self.check_access(asker)
        self.check_words(asker, [job.prompt for job in new_jobs])
        self.check_mode(asker, mode.value)
        self.check_burst(asker)
        allowed = self.modes_for(asker)
        notice = None
        if mode != QueueMode.RELAX and any(self.fast_limits(asker)):  # unlimited: no count to read
            fast = await self.fast_time(asker)
            if fast.spent is not None:
                limit = fast.per_day if fast.spent == "today" else fast.per_month
                if "relax" not in allowed:
                    raise Refused(f"Your fast time for {fast.spent} ({duration(limit)}) is used up and relax mode "
                                  "is not open here.")
                mode = QueueMode.RELAX
                notice = (f"⏳ Your fast time for {fast.spent} ({duration(limit)}) is used up: this runs in relax "
                          "mode. /info shows when it comes back.")
        return Admission(mode, notice, self.queued_caps(asker))


async def let_in(interaction: discord.Interaction) -> bool:
    """The access check for a press or a command: a banned member, or a channel the bot does not
    answer in, gets a private refusal and False."""
    rules: CommunityRules | None = getattr(interaction.client, "rules", None)
    if rules is None:
        return True
    try:
        rules.check_access(Asker.of(interaction))
    except Refused as refusal:
        await tell_privately(interaction, f"❌ {refusal}")
        return False
    return True
