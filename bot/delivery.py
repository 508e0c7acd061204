"""The delivery service: every job from its request to its outcome on Discord.

Owned by the bot, not by a cog, so reloading a cog loses no delivery. Cogs turn Discord
input into calls to it (`submit`, `submit_in_channel`, `post_picture`, `show_again`);
it writes the jobs, posts and edits their progress message, posts the result, and
records every message it posts for a job (`job_messages`) and whether the outcome
reached its owner (`jobs.delivery`).

Where a message goes (docs/discord.md, Delivery):
- through the interaction's webhook while its token is valid (15 minutes), else through
  the channel; a channel that refuses (403) falls back to the webhook while it is valid,
  then to a DM to the owner, and the log names the missing permission;
- 5xx, 429 and network errors are retried with backoff (after discord.py's own tries);
  a 413 is re-encoded smaller, a 400 shortened, and tried again;
- what is still not posted stays `pending` and is tried again every
  `[discord] redelivery_seconds` and at start-up: nothing is dropped silently. A job
  that nothing accepts (no channel, no webhook, DMs closed) is `undeliverable`, logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential

from bot.messages import (
    DEFAULT_SIZE_LIMIT,
    WITHHOLD,
    encode_for_upload,
    failure_text,
    headline,
    picture_message,
    preview_as_shown,
    result_message,
    shorten,
)
from bot.replies import defer_thinking, fit_content, mention_only, placeholder_filled, refuse, tell_privately
from bot.rules import Admission, Asker, Refused
from generation.executor import JobEvent, JobProgress, JobStarted, Progress
from generation.queue import QueueFull
from storage import repository as repo
from storage.models import Delivery, Job, JobState, MessageKind, QueueMode, User
from storage.repository import NewJob

if TYPE_CHECKING:
    from PIL import Image

    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

# Discord lets an interaction token be used for 15 minutes; keep a margin for slow edits
TOKEN_LIFETIME = timedelta(minutes=14, seconds=30)
INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK, REQUEST_TOO_LARGE = 50027, 10015, 40005
SHRINK_TRIES = 4  # a 413: the file is re-encoded for half the size, this many times at most
POST_ATTEMPTS = 4  # transient failures of one post, before it waits for the next redelivery round
MAX_DELIVERY_ATTEMPTS = 12  # redelivery rounds, each waiting twice as long (up to an hour): about 7 hours
MAX_RETRY_WAIT = 3600.0
PARALLEL_REDELIVERIES = 3  # a round after an outage does not load a hundred grids at once
PostBuilder = Callable[[int], Awaitable[dict[str, Any]]]  # an upload size limit -> the message's fields


def is_transient(error: BaseException) -> bool:
    """Discord errors worth trying again as they are: 5xx, 429, a dropped connection, a timeout."""
    if isinstance(error, discord.HTTPException):
        return error.status >= 500 or error.status == 429
    return isinstance(error, aiohttp.ClientError | asyncio.TimeoutError | ConnectionError)


def upload_size(fields: dict[str, Any]) -> int:
    """The bytes a message's files add up to (files are made in memory: bot/messages.py)."""
    files = fields.get("files") or ([fields["file"]] if fields.get("file") else [])
    return sum(len(file.fp.getbuffer()) for file in files)


def retrying() -> AsyncRetrying:
    """Transient failures of one request to Discord, tried again with backoff (1, 2, 4 s...)."""
    return AsyncRetrying(retry=retry_if_exception(is_transient), reraise=True, stop=stop_after_attempt(POST_ATTEMPTS),
                         wait=wait_exponential(multiplier=1, max=30))


class Undeliverable(Exception):
    """Nowhere is left to post a job's outcome: no channel, no webhook, no DM."""


@dataclass
class JobPost:
    """Where one job's messages go, and which way can still reach it.

    With an interaction, its webhook is used while the token lives; without one (a job
    recovered after a restart, a 🔄 reaction) or after 15 minutes, the bot's own channel
    access; when the channel refuses, the webhook (if still valid), then a DM to the owner."""

    client: discord.Client
    channel_id: int
    guild_id: int | None
    owner_id: int  # the only person its messages may ping
    job_id: int
    interaction: discord.Interaction | None = None
    message_id: int | None = None  # the progress message, once known
    original: bool = True  # the progress message is the interaction's own response (else a followup)
    min_interval: float = 3.0
    gone: bool = False  # the progress message was deleted (or cannot be edited): stop editing
    _last_edit: float = field(default=-1e9, repr=False)

    @property
    def token_valid(self) -> bool:
        return (self.interaction is not None
                and discord.utils.utcnow() - self.interaction.created_at < TOKEN_LIFETIME)

    def _token_died(self, error: discord.HTTPException) -> bool:
        """Whether `error` says the interaction's webhook can no longer be used (then it is dropped)."""
        if error.status == 401 or error.code in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK):
            log.info("job %s: the interaction token no longer works; using the channel", self.job_id)
            self.interaction = None
            return True
        return False

    def channel_size_limit(self) -> int:
        channel = self.client.get_channel(self.channel_id)
        guild = getattr(channel, "guild", None)
        return guild.filesize_limit if guild is not None else DEFAULT_SIZE_LIMIT

    def _channel(self) -> discord.PartialMessageable:
        return self.client.get_partial_messageable(self.channel_id, guild_id=self.guild_id)

    def due(self) -> bool:
        """Whether a throttled progress edit may go out now."""
        return time.monotonic() - self._last_edit >= self.min_interval

    async def edit(self, **fields: Any) -> None:
        """Edit the progress message now. A deleted one ends the updates quietly; a channel that
        refuses ends them too (the result still finds its way); transient errors are raised."""
        if self.gone:
            return
        self._last_edit = time.monotonic()
        if "content" in fields:
            fields["content"] = fit_content(fields["content"])
        fields["allowed_mentions"] = mention_only(self.owner_id)
        try:
            if self.token_valid and self.original:
                message = await self.interaction.edit_original_response(**fields)
                self.message_id = message.id
                placeholder_filled(self.interaction)
            elif self.token_valid and self.message_id is not None:
                await self.interaction.followup.edit_message(self.message_id, **fields)
            elif self.message_id is not None:
                await self._channel().get_partial_message(self.message_id).edit(**fields)
            else:
                self.gone = True  # never posted: nothing to edit
        except discord.HTTPException as error:
            if self.interaction is not None and self._token_died(error):
                await self.edit(**fields)
            elif isinstance(error, discord.NotFound):
                log.info("job %s: its message was deleted; no more updates", self.job_id)
                self.gone = True
            elif error.status in (400, 403):
                log.warning("job %s: its progress message cannot be edited (%s %s); no more updates",
                            self.job_id, error.status, error.text)
                self.gone = True
            else:
                raise

    async def edit_quietly(self, **fields: Any) -> None:
        """A progress edit: worth a try, not worth a retry (the next one says more)."""
        try:
            await self.edit(**fields)
        except Exception as error:
            log.info("job %s: a progress edit failed (%s); going on", self.job_id, error)

    async def delete(self) -> bool:
        """Take the progress message away (the result is a new message, so its owner is notified);
        whether it is gone. Transient errors are retried a while; a delete that still fails is
        left for the next redelivery round, and never makes the result post again."""
        if self.gone or (self.message_id is None and not (self.token_valid and self.original)):
            return self.gone
        try:
            async for attempt in retrying():
                with attempt:
                    if self.token_valid and self.original:
                        await self.interaction.delete_original_response()
                    elif self.token_valid:
                        await self.interaction.followup.delete_message(self.message_id)
                    else:
                        await self._channel().get_partial_message(self.message_id).delete()
        except discord.HTTPException as error:
            if self.interaction is not None and self._token_died(error):
                return await self.delete()
            if isinstance(error, discord.Forbidden):  # nobody will ever make that work: stop trying
                log.warning("job %s: its progress message cannot be removed (%s %s)", self.job_id, error.status,
                            error.text)
            elif not isinstance(error, discord.NotFound):
                log.warning("job %s: its progress message could not be removed yet (%s %s)", self.job_id,
                            error.status, error.text)
                return False
        except Exception as error:
            log.warning("job %s: its progress message could not be removed yet (%s)", self.job_id, error)
            return False
        self.gone = True
        return True

    async def post(self, build: PostBuilder, nonce: str) -> tuple[discord.Message, str]:
        """Post a new message with the fields `build(size_limit)` makes, wherever it still can
        go; the message and how it went ("interaction", "channel" or "dm"). The webhook comes first
        while the token is valid (it needs no channel permission); then the channel, then a DM.
        Transient errors are raised (the caller retries); Undeliverable when every way refused.
        `nonce` makes Discord take a channel or DM message sent twice (a retry after a lost
        answer) as one, for a few minutes."""
        refusals: list[str] = []
        if self.token_valid:
            try:
                return await self._post_by_webhook(build), "interaction"
            except discord.HTTPException as error:
                if not self._token_died(error):
                    raise
        try:
            return await self._shrinking(build, self.channel_size_limit(), self._channel().send, nonce), "channel"
        except discord.Forbidden as error:
            refusals.append(self._log_missing_permissions(error))
        except discord.NotFound as error:
            refusals.append(f"channel {self.channel_id} is gone ({error.code})")
        except (discord.HTTPException, Undeliverable) as error:
            if is_transient(error):
                raise
            log.warning("job %s: channel %s refused the message (%s)", self.job_id, self.channel_id, error)
            refusals.append(f"channel {self.channel_id} refused the message ({error})")
        try:
            return await self._post_by_dm(build, nonce), "dm"
        except (discord.Forbidden, discord.NotFound) as error:
            refusals.append(f"user {self.owner_id} takes no DMs from the bot ({error.code})")
        raise Undeliverable("; ".join(refusals))

    async def _post_by_webhook(self, build: PostBuilder) -> discord.Message:
        assert self.interaction is not None
        followup = self.interaction.followup
        return await self._shrinking(build, self.interaction.filesize_limit,
                                     lambda **fields: followup.send(wait=True, **fields))

    async def _post_by_dm(self, build: PostBuilder, nonce: str) -> discord.Message:
        dm = await self.client.create_dm(discord.Object(self.owner_id))

        async def with_reason(size_limit: int) -> dict[str, Any]:
            fields = await build(size_limit)
            reason = f"(job {self.job_id}: I could not post it in <#{self.channel_id}>)"
            fields["content"] = f"{fields.get('content', '')}\n{reason}".strip()
            return fields
        return await self._shrinking(with_reason, DEFAULT_SIZE_LIMIT, dm.send, nonce)

    async def _shrinking(self, build: PostBuilder, size_limit: int,
                         send: Callable[..., Coroutine[Any, Any, discord.Message]],
                         nonce: str | None = None) -> discord.Message:
        """Send; a 413 (the file over the limit) makes the file again for half the size, a 400
        (a field Discord refuses) sends the content shortened once."""
        shortened = False
        for _ in range(SHRINK_TRIES):
            fields = await build(size_limit)
            fields["content"] = fit_content(fields.get("content", ""))
            if shortened:
                fields["content"] = shorten(fields["content"], 300)
            if nonce is not None:
                fields["nonce"] = nonce
            try:
                return await send(allowed_mentions=mention_only(self.owner_id), **fields)
            except discord.HTTPException as error:
                if error.status == 413 or error.code == REQUEST_TOO_LARGE:
                    log.warning("job %s: Discord refused the upload as too large; sending it smaller", self.job_id)
                    size_limit = min(size_limit, upload_size(fields)) // 2
                elif error.status == 400 and not shortened:
                    log.warning("job %s: Discord refused the message (%s); sending it shortened", self.job_id,
                                error.text)
                    shortened = True
                else:
                    raise
        raise Undeliverable(f"Discord refused the message of job {self.job_id} even made smaller")

    def _log_missing_permissions(self, error: discord.HTTPException) -> str:
        """Tell the operator what the bot lacks in the channel; the reason, for the job's record."""
        needed = ("view_channel", "send_messages", "attach_files")
        channel = self.client.get_channel(self.channel_id)
        me = getattr(getattr(channel, "guild", None), "me", None)
        if channel is not None and me is not None and hasattr(channel, "permissions_for"):
            permissions = channel.permissions_for(me)
            if isinstance(channel, discord.Thread):
                needed += ("send_messages_in_threads",)
            missing = [name for name in needed if not getattr(permissions, name)] or list(needed)
        else:
            missing = list(needed)
        names = ", ".join(name.replace("_", " ").title() for name in missing)
        log.warning("job %s: cannot post in channel %s (Discord %s, code %s: %s); the bot needs %s there",
                    self.job_id, self.channel_id, error.status, error.code, error.text, names)
        return f"channel {self.channel_id} refused ({error.code}); the bot needs {names}"


class DeliveryService:
    """Starts jobs for Discord, follows them and posts what they made (see the module docstring)."""

    def __init__(self, bot: ImagineBot, *, redelivery_seconds: float = 60.0) -> None:
        self.bot = bot
        self.redelivery_seconds = redelivery_seconds
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivering: set[int] = set()  # jobs a task follows or posts now: the timer leaves them be
        self._posted: dict[int, tuple[discord.Message, str]] = {}  # results posted, not yet recorded
        self._redelivering = asyncio.Semaphore(PARALLEL_REDELIVERIES)
        self._timer: asyncio.Task[None] | None = None
        self._admitting: dict[int, tuple[asyncio.Lock, list[int]]] = {}  # user id -> lock, [requests using it]
        self.to_discord = True  # False while the web app runs alone (no token): nothing is posted

    # --- lifecycle ---------------------------------------------------------------

    async def start(self, *, to_discord: bool = True) -> None:
        """Follow the jobs the runner found unfinished, and post what a past run could not.
        Without Discord (the web app alone: `to_discord=False`) only the web app's jobs are
        followed; Discord's wait, pending, for the next run with a token."""
        self.to_discord = to_discord
        async with self.bot.sessionmaker.begin() as session:
            await repo.settle_web_jobs(session)
        for job_id in self.bot.jobs.recovered:
            self._spawn(self._follow_recovered(job_id), job_id)
        if to_discord:
            self._timer = asyncio.create_task(self._redeliver_forever(), name="redelivery")

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *([self._timer] if self._timer else []), return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], job_id: int) -> None:
        self._delivering.add(job_id)
        task = asyncio.create_task(work, name=f"deliver-{job_id}")
        self._tasks.add(task)

        def done(finished: asyncio.Task[None]) -> None:
            self._tasks.discard(finished)
            self._delivering.discard(job_id)
            if not finished.cancelled() and finished.exception() is not None:
                log.error("delivering job %s failed", job_id, exc_info=finished.exception())
        task.add_done_callback(done)

    def _ignore(self, events: AsyncIterator[JobEvent]) -> None:
        """Drain the events of a job nobody follows (its listener goes when the job ends)."""
        async def drain() -> None:
            async for _ in events:
                pass
        task = asyncio.create_task(drain())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redeliver_forever(self) -> None:
        while True:
            try:
                await self.redeliver()
            except Exception:
                log.exception("the redelivery round failed; trying again later")
            await asyncio.sleep(self.redelivery_seconds)

    async def redeliver(self) -> int:
        """Post the outcome of every finished job that is not posted yet (and not being posted),
        and remove the progress messages of posted results that Discord would not delete before;
        how many outcomes were taken up."""
        async with self.bot.sessionmaker() as session:
            jobs = await repo.list_undelivered_jobs(session)
            leftovers = await repo.list_leftover_progress_messages(session)
        waiting = [job for job in jobs if job.id not in self._delivering]
        for job in waiting:
            self._spawn(self._deliver_later(job), job.id)
        for job in {message.job_id: message.job for message in leftovers}.values():
            if job.id not in self._delivering:
                self._spawn(self._remove_leftovers(job), job.id)
        return len(waiting)

    async def _remove_leftovers(self, job: Job) -> None:
        async with self._redelivering:
            await self._remove_progress(await self._post_for(job))

    async def _post_for(self, job: Job) -> JobPost:
        """How to reach a job with no interaction at hand: its channel and its progress message."""
        async with self.bot.sessionmaker() as session:
            progress = await repo.progress_message(session, job_id=job.id)
        return JobPost(self.bot, job.channel_id or 0, job.guild_id, job.user_id, job.id,
                       message_id=progress.message_id if progress else None, original=False,
                       min_interval=self.bot.settings.discord.progress_edit_seconds)

    async def _deliver_later(self, job: Job) -> None:
        async with self._redelivering:
            await self.deliver_outcome(job.id, await self._post_for(job))

    async def _follow_recovered(self, job_id: int) -> None:
        """A job queued or running when the bot stopped: its interaction is gone, so its
        message is edited and its outcome posted through the channel."""
        events = self.bot.jobs.events(job_id)  # listening before reading its state
        async with self.bot.sessionmaker() as session:
            job = await repo.get_job(session, job_id=job_id)
        if job is not None and job.channel_id is None:  # made in the web app: shown there, nothing to post
            await self._settle_web_job(job_id, events)
            return
        if job is None or not self.to_discord:
            self._ignore(events)
            return
        post = await self._post_for(job)
        if job.state in (JobState.QUEUED, JobState.RUNNING):
            await post.edit_quietly(content=headline(job, self.waiting_text(job_id)))
            await self.follow(job, post, events)
        else:
            await self.deliver_outcome(job.id, post)

    # --- starting jobs -----------------------------------------------------------

    def mode_for(self, asker: Asker, user: User, asked: str | None) -> QueueMode:
        """--fast/--relax/--turbo in the prompt, else the member's /settings, else the server's default."""
        return QueueMode(asked) if asked is not None else self.bot.rules.default_mode(asker, user)

    @contextlib.asynccontextmanager
    async def one_request_at_a_time(self, user_id: int) -> AsyncIterator[None]:
        """A member's requests pass from their admission to their jobs' rows one at a time, so the
        next one's fast time and caps count this one's jobs: a burst cannot slip past them."""
        lock, users = self._admitting.setdefault(user_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if not users[0]:
                del self._admitting[user_id]

    async def admit(self, asker: Asker, user: User, asked: str | None, new_jobs: list[NewJob]) -> Admission:
        """The server's rules (bot/rules.py) and the queue's caps for these jobs: `Refused` or
        `QueueFull` say why not; nothing is written before this passes."""
        admission = await self.bot.rules.admit(asker, self.mode_for(asker, user, asked), new_jobs)
        self.bot.jobs.scheduler.check_caps([(asker.user_id, admission.mode.value)] * len(new_jobs),
                                           guild_id=asker.guild_id, queued=admission.queued_caps)
        return admission

    async def submit(self, interaction: discord.Interaction, new_jobs: list[NewJob], *, user: User,
                     asked: str | None = None) -> None:
        """Queue the jobs in the mode asked (`asked`, else the member's or the server's default) if
        the server's rules and the caps let them (else a private refusal, nothing written), then one
        progress message per job, followed until its outcome is posted."""
        asker = Asker.of(interaction)
        async with self.one_request_at_a_time(asker.user_id):
            try:
                admission = await self.admit(asker, user, asked, new_jobs)
            except (Refused, QueueFull) as error:
                await refuse(interaction, f"❌ {error}")
                return
            if not interaction.response.is_done():
                await defer_thinking(interaction)
            try:
                job_ids = await self.bot.jobs.submit(user_id=interaction.user.id, mode=admission.mode, jobs=new_jobs,
                                                     guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                                                     queued_caps=admission.queued_caps)
            except QueueFull as error:  # the server's cap, filled by another member meanwhile
                await refuse(interaction, f"❌ {error}")
                return
        events = {job_id: self.bot.jobs.events(job_id) for job_id in job_ids}  # listening before any await
        waiting = set(job_ids)
        self._delivering.update(waiting)  # the timer must not post what this call is about to follow
        try:
            async with self.bot.sessionmaker() as session:
                jobs = [await repo.get_job(session, job_id=job_id) for job_id in job_ids]
            for number, job in enumerate(jobs):
                post = JobPost(self.bot, interaction.channel_id or 0, interaction.guild_id, job.user_id, job.id,
                               interaction, original=number == 0,
                               min_interval=self.bot.settings.discord.progress_edit_seconds)
                try:
                    await self._post_progress(post, job, interaction, first=number == 0)
                except Exception as error:  # the job is queued: its outcome still gets posted
                    log.warning("job %s: its progress message could not be posted (%s)", job.id, error)
                self._spawn(self.follow(job, post, events[job.id]), job.id)
                waiting.discard(job.id)
        finally:  # jobs this call could not follow: the redelivery rounds post their outcome
            self._delivering.difference_update(waiting)
            for job_id in waiting:
                self._ignore(events[job_id])
        if admission.notice is not None:  # privately, whatever became of the "thinking…" placeholder
            await tell_privately(interaction, admission.notice)

    async def _post_progress(self, post: JobPost, job: Job, interaction: discord.Interaction, *, first: bool) -> None:
        waiting = headline(job, self.waiting_text(job.id))
        if first:  # the "thinking…" placeholder becomes the progress message
            post.message_id = interaction.extras.get("original_message_id")  # known now: edits outlive the token
            await post.edit(content=waiting)
        else:
            sent = await interaction.followup.send(waiting, wait=True, allowed_mentions=mention_only(job.user_id))
            post.message_id = sent.id
        if post.message_id is not None:
            await self._record(job.id, post.message_id, post.channel_id, MessageKind.PROGRESS, "interaction",
                               job.user_id)

    async def submit_from_web(self, asker: Asker, user: User, new_jobs: list[NewJob], *,
                              asked: str | None = None) -> tuple[list[int], str | None]:
        """Jobs asked for in the web app (web/): the same rules and caps as on Discord (`Refused`
        or `QueueFull` say why not, nothing written), in the server the member chose (`asker`).
        Their progress and outcome are shown on the job's page, which follows the job runner's
        events itself, so a finished job counts as delivered. The job ids, and a line to show
        the member (fast time spent, say) or None."""
        async with self.one_request_at_a_time(asker.user_id):
            admission = await self.admit(asker, user, asked, new_jobs)
            job_ids = await self.bot.jobs.submit(user_id=asker.user_id, mode=admission.mode, jobs=new_jobs,
                                                 guild_id=asker.guild_id, channel_id=None,
                                                 queued_caps=admission.queued_caps)
        for job_id in job_ids:
            self._spawn(self._settle_web_job(job_id, self.bot.jobs.events(job_id)), job_id)
        return job_ids, admission.notice

    async def _settle_web_job(self, job_id: int, events: AsyncIterator[JobEvent]) -> None:
        async for _ in events:
            pass
        async with self.bot.sessionmaker.begin() as session:
            await repo.mark_delivered(session, job_id=job_id)

    async def submit_in_channel(self, asker: Asker, user: User, new_jobs: list[NewJob]) -> None:
        """Jobs asked for without an interaction (a 🔄 reaction): messages go through the channel,
        and a refusal (or a notice) is a short message there that goes away by itself."""
        user_id, channel_id, guild_id = asker.user_id, asker.channel_id or 0, asker.guild_id
        try:
            async with self.one_request_at_a_time(user_id):
                admission = await self.admit(asker, user, None, new_jobs)
                job_ids = await self.bot.jobs.submit(user_id=user_id, mode=admission.mode, jobs=new_jobs,
                                                     guild_id=guild_id, channel_id=channel_id,
                                                     queued_caps=admission.queued_caps)
        except (Refused, QueueFull) as error:  # said where everyone reads it: never the banned word itself
            await self.say_in_channel(channel_id, guild_id, user_id,
                                      error.in_public if isinstance(error, Refused) else str(error))
            return
        if admission.notice is not None:
            await self.say_in_channel(channel_id, guild_id, user_id, admission.notice, refusal=False)
        channel = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        events = {job_id: self.bot.jobs.events(job_id) for job_id in job_ids}
        waiting = set(job_ids)
        self._delivering.update(waiting)
        try:
            for job_id in job_ids:
                async with self.bot.sessionmaker() as session:
                    job = await repo.get_job(session, job_id=job_id)
                post = JobPost(self.bot, channel_id, guild_id, user_id, job_id, original=False,
                               min_interval=self.bot.settings.discord.progress_edit_seconds)
                try:
                    sent = await channel.send(headline(job, self.waiting_text(job_id)),
                                              allowed_mentions=mention_only(user_id))
                    post.message_id = sent.id
                    await self._record(job_id, sent.id, channel_id, MessageKind.PROGRESS, "channel", user_id)
                except discord.HTTPException as error:
                    log.warning("job %s: its progress message could not be posted (%s)", job_id, error)
                self._spawn(self.follow(job, post, events[job_id]), job_id)
                waiting.discard(job_id)
        finally:
            self._delivering.difference_update(waiting)
            for job_id in waiting:
                self._ignore(events[job_id])

    async def say_in_channel(self, channel_id: int, guild_id: int | None, user_id: int, text: str, *,
                             refusal: bool = True) -> None:
        """A refusal (or a notice) with no interaction to answer privately (a reaction): a short
        message in the channel, pinging only the member, that goes away by itself."""
        channel = self.bot.get_partial_messageable(channel_id, guild_id=guild_id)
        try:
            await channel.send(fit_content(f"<@{user_id}> {'❌ ' if refusal else ''}{text}"), delete_after=30,
                               allowed_mentions=mention_only(user_id))
        except discord.HTTPException as error:
            log.info("could not tell user %s in channel %s: %s", user_id, channel_id, error)

    def waiting_text(self, job_id: int) -> str:
        position = self.bot.jobs.position(job_id)
        if position is None:
            return "Waiting to start"
        estimate = self.bot.jobs.estimate_seconds(job_id)
        about = f", about {round(estimate)} s" if estimate is not None else ""
        return f"Waiting to start: {position + 1} in the queue{about}"

    # --- following and posting ---------------------------------------------------

    async def follow(self, job: Job, post: JobPost, events: AsyncIterator[JobEvent]) -> None:
        """Edit the progress message as the job runs, then post its outcome."""
        async for event in events:
            try:
                if isinstance(event, JobStarted):
                    await post.edit_quietly(content=headline(job, "0%"))
                elif (isinstance(event, JobProgress) and not post.gone and post.due()
                      and event.progress.step < event.progress.total):
                    fields: dict[str, Any] = {"content": headline(job, f"{event.progress.percent}%")}
                    preview = await self.preview_shown(event.progress, post)
                    if preview is not None:
                        limit = post.interaction.filesize_limit if post.token_valid else post.channel_size_limit()
                        fields["attachments"] = [await asyncio.to_thread(encode_for_upload, preview, "preview", limit)]
                    await post.edit_quietly(**fields)
            except Exception:  # a progress update is not worth losing the job over: on to the next event
                log.exception("showing the progress of job %s failed", job.id)
        await self.deliver_outcome(job.id, post)

    async def preview_shown(self, progress: Progress, post: JobPost) -> Image.Image | None:
        """The preview as this channel may see it (bot/messages.py: `preview_as_shown`)."""
        if progress.preview is None or progress.flagged is None:
            return progress.preview
        policy = self.nsfw_policy_in(post.channel_id, post.guild_id)
        return await asyncio.to_thread(preview_as_shown, progress.preview, progress.flagged, policy)

    async def deliver_outcome(self, job_id: int, post: JobPost) -> None:
        """Post a finished job's result (or edit its message to say why there is none), retrying
        transient failures; what still fails stays pending for the next redelivery round."""
        async with self.bot.sessionmaker() as session:
            job = await repo.get_job(session, job_id=job_id)
        if job is None or job.delivery != Delivery.PENDING or job.state in (JobState.QUEUED, JobState.RUNNING):
            return
        try:
            async for attempt in retrying():
                with attempt:
                    await self._post_outcome(job, post)
        except Undeliverable as error:
            log.warning("job %s of user %s could not be delivered anywhere: %s", job.id, job.user_id, error)
            async with self.bot.sessionmaker.begin() as session:
                await repo.note_delivery_failure(session, job_id=job.id, error=str(error), retry_in=None)
        except Exception as error:
            if job.delivery_attempts + 1 >= MAX_DELIVERY_ATTEMPTS:
                retry_in = None
                log.warning("job %s of user %s given up after %s delivery attempts: %s", job.id, job.user_id,
                            job.delivery_attempts + 1, error)
            else:
                retry_in = min(self.redelivery_seconds * 2 ** job.delivery_attempts, MAX_RETRY_WAIT)
                log.warning("job %s not delivered yet (%s: %s); trying again in %g s", job.id,
                            type(error).__name__, error, retry_in, exc_info=not is_transient(error))
            async with self.bot.sessionmaker.begin() as session:
                await repo.note_delivery_failure(session, job_id=job.id, error=f"{type(error).__name__}: {error}",
                                                 retry_in=retry_in)

    async def _post_outcome(self, job: Job, post: JobPost) -> None:
        if job.state == JobState.DONE:
            if job.id not in self._posted:  # posted already (its recording failed): never posted twice
                self._posted[job.id] = await post.post(lambda size_limit: self._result(job, size_limit),
                                                       nonce=f"job{job.id}")
            message, via = self._posted[job.id]
            await self._record(job.id, message.id, message.channel.id, MessageKind.RESULT, via, job.user_id,
                               delivered=True)
            del self._posted[job.id]
            await self._remove_progress(post)
            return
        text = failure_text(job)
        if post.message_id is not None or (post.token_valid and post.original):
            await post.edit(content=text, attachments=[])
        if post.gone or post.message_id is None:  # nothing to edit: say it in a new message
            async def notice(size_limit: int) -> dict[str, Any]:
                return {"content": f"<@{job.user_id}> {text}"}
            message, via = await post.post(notice, nonce=f"job{job.id}")
            await self._record(job.id, message.id, message.channel.id, MessageKind.NOTICE, via, job.user_id)
        async with self.bot.sessionmaker.begin() as session:
            await repo.mark_delivered(session, job_id=job.id)

    def nsfw_shown_as(self, job: Job, channel_id: int | None, guild_id: int | None) -> str | None:
        """What a job's flagged pictures become where it is posted: None (shown as made: nothing
        flagged, an age-restricted channel or its thread, a DM), else the server's policy."""
        return self.nsfw_policy_in(channel_id, guild_id) if job.flagged else None

    def nsfw_policy_in(self, channel_id: int | None, guild_id: int | None) -> str | None:
        """The server's policy for flagged pictures in a channel; None where they are shown as made."""
        if guild_id is None:
            return None
        channel = self.bot.get_channel(channel_id) if channel_id else None
        if channel is not None and getattr(channel, "is_nsfw", lambda: False)():
            return None
        return self.bot.rules.nsfw_policy(guild_id)

    async def _result(self, job: Job, size_limit: int) -> dict[str, Any]:
        """The result's message; Undeliverable when its pictures are gone from the store."""
        try:
            return await result_message(job, size_limit, self.nsfw_shown_as(job, job.channel_id, job.guild_id))
        except OSError as error:
            raise Undeliverable(f"the pictures of job {job.id} are gone from the image store ({error})") from None

    async def _remove_progress(self, post: JobPost) -> None:
        """Delete a done job's progress message and forget it (Discord has it no more); one that
        Discord would not delete yet is tried again by the next redelivery round."""
        if await post.delete() and post.message_id is not None:
            async with self.bot.sessionmaker.begin() as session:
                await repo.forget_message(session, message_id=post.message_id)

    async def _record(self, job_id: int, message_id: int, channel_id: int, kind: MessageKind, via: str,
                      user_id: int, *, index: int | None = None, delivered: bool = False) -> None:
        async with self.bot.sessionmaker.begin() as session:
            await repo.record_message(session, job_id=job_id, message_id=message_id, channel_id=channel_id,
                                      kind=kind, via=via, user_id=user_id, index=index)
            if delivered:
                await repo.mark_delivered(session, job_id=job_id)

    # --- pictures posted again ---------------------------------------------------

    async def post_picture(self, interaction: discord.Interaction, job: Job, index: int) -> None:
        """U1–U4 (and a favourite brought back): one picture with the buttons that work on one; a
        flagged picture the server withholds here is refused privately."""
        nsfw = self.nsfw_shown_as(job, interaction.channel_id, interaction.guild_id)
        if nsfw == WITHHOLD and job.images[index].flagged:
            await refuse(interaction, "❌ The safety checker flagged that picture, and this server shows such pictures "
                                      "only in age-restricted channels.")
            return
        fields = await picture_message(job, index, interaction.user.id, interaction.filesize_limit, nsfw)
        message = await interaction.followup.send(wait=True, allowed_mentions=mention_only(interaction.user.id),
                                                  **fields)
        placeholder_filled(interaction)  # the first followup took the "thinking…" placeholder's place
        await self._record(job.id, message.id, message.channel.id, MessageKind.PICTURE, "interaction",
                           interaction.user.id, index=index)

    async def show_again(self, interaction: discord.Interaction, job: Job) -> None:
        """/history's bring-back: the finished job posted again with its buttons."""
        fields = await result_message(job, interaction.filesize_limit,
                                      self.nsfw_shown_as(job, interaction.channel_id, interaction.guild_id))
        message = await interaction.followup.send(wait=True, allowed_mentions=mention_only(job.user_id), **fields)
        placeholder_filled(interaction)
        await self._record(job.id, message.id, message.channel.id, MessageKind.SHOWN, "interaction",
                           interaction.user.id)
