"""Repository functions: each says what it does, takes the session, and never commits.

The caller owns the unit of work (`async with sessionmaker.begin() as session:`), one
per command or job step.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from .models import (
    AuditEntry,
    Channel,
    Delivery,
    Favourite,
    Guild,
    Image,
    Job,
    JobKind,
    JobMessage,
    JobState,
    MemberBan,
    MessageKind,
    QueueMode,
    RoleRule,
    User,
    WebSignIn,
)

UNFINISHED = (JobState.QUEUED, JobState.RUNNING)


@dataclass(frozen=True)
class NewJob:
    """A job to write: what `enqueue_job` stores besides who asked, where and in which mode."""

    kind: JobKind
    request: dict[str, Any]  # GenerationRequest.to_dict(), plus "options" for jobs made from a picture
    prompt: str = ""
    seed: int | None = None
    parent_id: int | None = None


@dataclass(frozen=True)
class NewImage:
    """What the image store wrote for one picture of a job."""

    index: int
    path: str
    width: int
    height: int
    seed: int
    sha256: str
    flagged: bool = False  # by the safety checker


def _now() -> datetime:
    return datetime.now(UTC)


async def get_user(session: AsyncSession, *, user_id: int) -> User | None:
    """The user's row, or None for someone who never used the bot (reads only)."""
    return await session.get(User, user_id)


async def ensure_user(session: AsyncSession, *, user_id: int) -> User:
    """The user's row, created when new; safe when many requests of a new user race."""
    user = await session.get(User, user_id)
    if user is None:
        dialect = session.get_bind().dialect.name
        insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[dialect]
        await session.execute(insert(User).values(id=user_id).on_conflict_do_nothing(index_elements=[User.id]))
        user = await session.get_one(User, user_id)
    return user


async def enqueue_job(session: AsyncSession, *, kind: JobKind, user_id: int, request: dict[str, Any],
                      mode: QueueMode, prompt: str = "", seed: int | None = None, parent_id: int | None = None,
                      guild_id: int | None = None, channel_id: int | None = None) -> Job:
    """Write a queued job: the durable record, made before anything else can fail."""
    await ensure_user(session, user_id=user_id)
    job = Job(kind=kind, user_id=user_id, request=request, mode=mode, prompt=prompt, seed=seed,
              parent_id=parent_id, guild_id=guild_id, channel_id=channel_id, state=JobState.QUEUED)
    session.add(job)
    await session.flush()
    return job


async def get_job(session: AsyncSession, *, job_id: int) -> Job | None:
    """A job with its images."""
    return await session.scalar(select(Job).where(Job.id == job_id).options(selectinload(Job.images)))


async def list_unfinished_jobs(session: AsyncSession) -> list[Job]:
    """Queued and running jobs in the order they were asked for: what start-up requeues."""
    result = await session.scalars(select(Job).where(Job.state.in_(UNFINISHED)).order_by(Job.id))
    return list(result)


async def mark_job_running(session: AsyncSession, *, job_id: int) -> Job:
    """Count an attempt; a job found running at start-up has its attempts to show for it."""
    job = await session.get_one(Job, job_id)
    job.state = JobState.RUNNING
    job.attempts += 1
    job.started_at = _now()
    return job


async def blame_crash(session: AsyncSession, *, job_id: int) -> int:
    """Count a process crash against a job (it was running when the bot crashed); its crashes now."""
    job = await session.get_one(Job, job_id)
    job.crashes += 1
    return job.crashes


async def requeue_job(session: AsyncSession, *, job_id: int) -> Job:
    job = await session.get_one(Job, job_id)
    job.state = JobState.QUEUED
    return job


async def record_images(session: AsyncSession, *, job_id: int, images: list[NewImage],
                        gpu_seconds: float | None = None) -> bool:
    """Store a finished job's images and mark it done, with the engine's seconds for it (what
    fast time counts). Idempotent per job: a job that already has images keeps them and False
    is returned (a redelivered task)."""
    job = await get_job(session, job_id=job_id)
    if job is None:
        raise LookupError(f"no job {job_id}")
    if job.images:
        return False
    for image in images:
        session.add(Image(job_id=job_id, index=image.index, path=image.path, width=image.width,
                          height=image.height, seed=image.seed, sha256=image.sha256, flagged=image.flagged))
    job.state = JobState.DONE
    job.error = None
    job.finished_at = _now()
    job.gpu_seconds = gpu_seconds
    job.flagged = any(image.flagged for image in images)
    await session.flush()
    return True


async def fail_job(session: AsyncSession, *, job_id: int, error: str) -> Job:
    job = await session.get_one(Job, job_id)
    job.state = JobState.FAILED
    job.error = error
    job.finished_at = _now()
    return job


async def cancel_job(session: AsyncSession, *, job_id: int, gpu_seconds: float | None = None) -> bool:
    """Cancel a queued or running job; False when it had already finished. `gpu_seconds`: the engine
    time it ran before it stopped, which counts as fast time like a finished job's (else cancelling
    near the end would be free)."""
    job = await session.get_one(Job, job_id)
    if gpu_seconds is not None:
        job.gpu_seconds = gpu_seconds
    if job.state not in UNFINISHED:
        return False
    job.state = JobState.CANCELLED
    job.finished_at = _now()
    return True


async def record_message(session: AsyncSession, *, job_id: int, message_id: int, channel_id: int,
                         kind: MessageKind, via: str, user_id: int, index: int | None = None) -> None:
    """Remember a message posted for a job, for `user_id` (reactions on it then reach the job)."""
    if await session.get(JobMessage, message_id) is None:
        session.add(JobMessage(message_id=message_id, job_id=job_id, channel_id=channel_id, kind=kind, via=via,
                               index=index, user_id=user_id))
        await session.flush()


async def progress_message(session: AsyncSession, *, job_id: int) -> JobMessage | None:
    """The message that shows a job's progress (the newest one, if it had several)."""
    query = (select(JobMessage).where(JobMessage.job_id == job_id, JobMessage.kind == MessageKind.PROGRESS)
             .order_by(JobMessage.created_at.desc(), JobMessage.message_id.desc()).limit(1))
    return await session.scalar(query)


async def forget_message(session: AsyncSession, *, message_id: int) -> None:
    """A message deleted from Discord: nothing can react to it any more."""
    if (message := await session.get(JobMessage, message_id)) is not None:
        await session.delete(message)


async def list_leftover_progress_messages(session: AsyncSession, *, limit: int = 100) -> list[JobMessage]:
    """Progress messages of delivered pictures, still on Discord (its delete failed), with their jobs."""
    query = (select(JobMessage).join(Job, JobMessage.job_id == Job.id)
             .where(JobMessage.kind == MessageKind.PROGRESS, Job.state == JobState.DONE,
                    Job.delivery == Delivery.DELIVERED)
             .order_by(JobMessage.message_id).limit(limit).options(selectinload(JobMessage.job)))
    return list(await session.scalars(query))


async def get_message(session: AsyncSession, *, message_id: int) -> JobMessage | None:
    return await session.get(JobMessage, message_id)


async def messages_of(session: AsyncSession, *, job_id: int) -> list[JobMessage]:
    """Every message posted for a job, oldest first."""
    query = select(JobMessage).where(JobMessage.job_id == job_id).order_by(JobMessage.created_at,
                                                                             JobMessage.message_id)
    return list(await session.scalars(query))


async def mark_delivered(session: AsyncSession, *, job_id: int) -> None:
    job = await session.get_one(Job, job_id)
    job.delivery, job.delivered_at, job.delivery_error, job.next_delivery_at = (
        Delivery.DELIVERED, _now(), None, None)
    job.delivery_attempts += 1


async def settle_web_jobs(session: AsyncSession) -> int:
    """Finished jobs made in the web app (no channel: their page shows them) still marked pending,
    as a process killed between a job's end and its settling leaves them: delivered; how many."""
    result = await session.execute(
        update(Job).where(Job.channel_id.is_(None), Job.delivery == Delivery.PENDING, Job.state.not_in(UNFINISHED))
        .values(delivery=Delivery.DELIVERED, delivered_at=_now()).execution_options(synchronize_session=False))
    return result.rowcount


async def note_delivery_failure(session: AsyncSession, *, job_id: int, error: str, retry_in: float | None) -> Job:
    """A delivery attempt failed: try again in `retry_in` seconds, or (None) never: nowhere is
    left to post it, and the job is undeliverable."""
    job = await session.get_one(Job, job_id)
    job.delivery_attempts += 1
    job.delivery_error = error[:1000]
    if retry_in is None:
        job.delivery, job.next_delivery_at = Delivery.UNDELIVERABLE, None
    else:
        job.next_delivery_at = _now() + timedelta(seconds=retry_in)
    return job


async def count_undelivered_jobs(session: AsyncSession) -> int:
    """Finished jobs whose outcome has not reached its owner yet (`delivery` pending)."""
    return int(await session.scalar(select(func.count()).select_from(Job).where(
        Job.delivery == Delivery.PENDING, Job.state.not_in(UNFINISHED))) or 0)


async def list_undelivered_jobs(session: AsyncSession, *, limit: int = 20) -> list[Job]:
    """Finished jobs whose outcome is not posted yet and is due to be tried, those never tried
    first (so jobs that keep failing hold up no others), with their images."""
    query = (select(Job).where(Job.delivery == Delivery.PENDING, Job.state.not_in(UNFINISHED),
                               Job.channel_id.is_not(None),
                               or_(Job.next_delivery_at.is_(None), Job.next_delivery_at <= _now()))
             .order_by(Job.next_delivery_at.is_not(None), Job.next_delivery_at, Job.id).limit(limit)
             .options(selectinload(Job.images)))
    return list(await session.scalars(query))


async def list_history(session: AsyncSession, *, user_id: int, text: str | None = None, limit: int = 10,
                       offset: int = 0) -> list[Job]:
    """A user's jobs, newest first, optionally those whose prompt contains `text`."""
    query = select(Job).where(Job.user_id == user_id)
    if text:
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(Job.prompt.ilike(f"%{escaped}%", escape="\\"))
    query = query.order_by(Job.id.desc()).limit(limit).offset(offset).options(selectinload(Job.images))
    return list(await session.scalars(query))


async def parent_chain(session: AsyncSession, *, job_id: int) -> list[Job]:
    """The job, its parent, its parent's parent... (what an upscale of a variation came from)."""
    chain: list[Job] = []
    seen: set[int] = set()
    current: int | None = job_id
    while current is not None and current not in seen:
        job = await get_job(session, job_id=current)
        if job is None:
            break
        chain.append(job)
        seen.add(current)
        current = job.parent_id
    return chain


async def add_favourite(session: AsyncSession, *, user_id: int, image_id: int) -> bool:
    """False when it was a favourite already; safe when two presses of ❤️ race."""
    await ensure_user(session, user_id=user_id)
    insert = {"sqlite": sqlite_insert, "postgresql": postgresql_insert}[session.get_bind().dialect.name]
    added = await session.execute(insert(Favourite).values(user_id=user_id, image_id=image_id)
                                  .on_conflict_do_nothing(index_elements=[Favourite.user_id, Favourite.image_id]))
    return added.rowcount == 1


async def remove_favourite(session: AsyncSession, *, user_id: int, image_id: int) -> bool:
    """False when it was not a favourite."""
    favourite = await session.get(Favourite, (user_id, image_id))
    if favourite is None:
        return False
    await session.delete(favourite)
    await session.flush()
    return True


async def list_favourites(session: AsyncSession, *, user_id: int, limit: int = 25, offset: int = 0) -> list[Image]:
    """A user's favourite pictures, the newest favourite first, each with its job."""
    query = (select(Image).join(Favourite, Favourite.image_id == Image.id).where(Favourite.user_id == user_id)
             .order_by(Favourite.created_at.desc(), Image.id.desc()).limit(limit).offset(offset)
             .options(selectinload(Image.job)))
    return list(await session.scalars(query))


async def get_favourite(session: AsyncSession, *, user_id: int, image_id: int) -> Image | None:
    """The picture, if it is one of the user's favourites."""
    if await session.get(Favourite, (user_id, image_id)) is None:
        return None
    return await session.get(Image, image_id)


USER_SETTINGS = frozenset({"default_mode", "default_suffix", "variability", "remix"})


async def set_user_settings(session: AsyncSession, *, user_id: int, **changes: Any) -> User:
    """Change some of a user's /settings (default_mode, default_suffix, variability, remix)."""
    unknown = set(changes) - USER_SETTINGS
    if unknown:
        raise ValueError(f"not user settings: {sorted(unknown)}")
    user = await ensure_user(session, user_id=user_id)
    for name, value in changes.items():
        setattr(user, name, value)
    await session.flush()
    return user


async def recorded_files(session: AsyncSession) -> tuple[set[tuple[int, int]], set[str]]:
    """What the store must hold: every recorded picture as (job id, index), and the names of the
    users' pictures that jobs name (their `options.inputs`). A full scan: run once, at start-up."""
    pictures = {(job_id, index) for job_id, index in await session.execute(select(Image.job_id, Image.index))}
    inputs = {name for request in await session.scalars(select(Job.request))
              for name in (request or {}).get("options", {}).get("inputs", ())}
    return pictures, inputs


async def get_job_by_message(session: AsyncSession, *, message_id: int) -> Job | None:
    """The job a Discord message of the bot's shows (any of them: progress, result, U pick,
    /history), with its images."""
    query = (select(Job).join(JobMessage, JobMessage.job_id == Job.id).where(JobMessage.message_id == message_id)
             .options(selectinload(Job.images)))
    return await session.scalar(query)


async def list_unfinished_jobs_of(session: AsyncSession, *, user_id: int) -> list[Job]:
    """A user's queued and running jobs, oldest first (what /info and /cancel show)."""
    query = select(Job).where(Job.user_id == user_id, Job.state.in_(UNFINISHED)).order_by(Job.id)
    return list(await session.scalars(query))


@dataclass(frozen=True)
class Usage:
    jobs_done: int
    images: int
    generation_seconds: float


async def usage_of(session: AsyncSession, *, user_id: int) -> Usage:
    """What a user has made so far: finished jobs, their pictures, and the engine's time for them."""
    rows = (await session.execute(select(Job.gpu_seconds, Job.started_at, Job.finished_at)
                                  .where(Job.user_id == user_id, Job.state == JobState.DONE))).all()
    images = await session.scalar(select(func.count(Image.id)).join(Job).where(Job.user_id == user_id)) or 0
    seconds = sum(gpu if gpu is not None else (finished - started).total_seconds()  # jobs from before 0004
                  for gpu, started, finished in rows if gpu is not None or (started and finished))
    return Usage(len(rows), images, seconds)


RECENT_JOBS = 50  # finished jobs whose engine time makes the estimate of a job not run yet


async def fast_seconds(session: AsyncSession, *, user_id: int, since: tuple[datetime, ...],
                       turbo_cost: float) -> tuple[tuple[float, ...], float]:
    """A user's fast time, in one read: what they spent since each of `since` (a day's start, a
    month's) — the engine's seconds of their fast jobs, turbo ones counted `turbo_cost` times,
    relax free, as on Midjourney — and what their fast and turbo jobs not finished yet (queued or
    running) will cost at the mean engine time of the last RECENT_JOBS jobs that ran (all members),
    so that a burst is counted as it is queued, not once it has run."""
    weight = case((Job.mode == QueueMode.TURBO, turbo_cost), else_=1.0)
    fast = Job.mode.in_((QueueMode.FAST, QueueMode.TURBO))
    spent = func.coalesce(Job.gpu_seconds, 0.0) * weight
    used = [select(func.coalesce(func.sum(spent), 0.0)).where(Job.user_id == user_id, fast, Job.finished_at >= start)
            .scalar_subquery() for start in since]
    pending = (select(func.coalesce(func.sum(weight), 0.0))
               .where(Job.user_id == user_id, fast, Job.state.in_(UNFINISHED)).scalar_subquery())
    recent = (select(Job.gpu_seconds).where(Job.gpu_seconds.is_not(None))  # newest first, by the primary key
              .order_by(Job.id.desc()).limit(RECENT_JOBS).subquery())
    mean = select(func.coalesce(func.avg(recent.c.gpu_seconds), 0.0)).scalar_subquery()
    *spent_since, waiting, per_job = (await session.execute(select(*used, pending, mean))).one()
    return tuple(float(value) for value in spent_since), float(waiting) * float(per_job)


# --- servers: settings, role rules, bans, audit ----------------------------------


@dataclass(frozen=True)
class Community:
    """Every server's rules, read at start-up into the bot's memory (bot/rules.py)."""

    guilds: list[Guild]
    channels: list[Channel]
    role_rules: list[RoleRule]
    bans: list[MemberBan]


async def load_community(session: AsyncSession, *, guild_id: int | None = None) -> Community:
    """Every server's rules, or one server's (`guild_id`)."""
    def of(model: Any, column: Any) -> Any:
        return select(model) if guild_id is None else select(model).where(column == guild_id)
    return Community(list(await session.scalars(of(Guild, Guild.id))),
                     list(await session.scalars(of(Channel, Channel.guild_id))),
                     list(await session.scalars(of(RoleRule, RoleRule.guild_id))),
                     list(await session.scalars(of(MemberBan, MemberBan.guild_id))))


async def ensure_guild(session: AsyncSession, *, guild_id: int) -> Guild:
    guild = await session.get(Guild, guild_id)
    if guild is None:
        guild = Guild(id=guild_id)
        session.add(guild)
        await session.flush()
    return guild


GUILD_SETTINGS = frozenset({"default_mode", "allowed_modes", "default_version", "nsfw_policy", "banned_words"})


async def set_guild_settings(session: AsyncSession, *, guild_id: int, **changes: Any) -> Guild:
    """Change some of a server's settings (None: back to config.toml's)."""
    unknown = set(changes) - GUILD_SETTINGS
    if unknown:
        raise ValueError(f"not server settings: {sorted(unknown)}")
    guild = await ensure_guild(session, guild_id=guild_id)
    for name, value in changes.items():
        setattr(guild, name, value)
    await session.flush()
    return guild


async def set_channel(session: AsyncSession, *, guild_id: int, channel_id: int, **changes: Any) -> Channel:
    """Change a channel's rules (`answers`, `allowed_modes`)."""
    unknown = set(changes) - {"answers", "allowed_modes"}
    if unknown:
        raise ValueError(f"not channel settings: {sorted(unknown)}")
    await ensure_guild(session, guild_id=guild_id)
    channel = await session.get(Channel, channel_id)
    if channel is None:
        channel = Channel(id=channel_id, guild_id=guild_id)
        session.add(channel)
    for name, value in changes.items():
        setattr(channel, name, value)
    await session.flush()
    return channel


async def set_role_rule(session: AsyncSession, *, guild_id: int, role_id: int, modes: list[str],
                        fast_seconds_per_day: int | None, fast_seconds_per_month: int | None,
                        queued: int | None) -> RoleRule:
    await ensure_guild(session, guild_id=guild_id)
    rule = await session.get(RoleRule, (guild_id, role_id))
    if rule is None:
        rule = RoleRule(guild_id=guild_id, role_id=role_id)
        session.add(rule)
    rule.modes, rule.queued = modes, queued
    rule.fast_seconds_per_day, rule.fast_seconds_per_month = fast_seconds_per_day, fast_seconds_per_month
    await session.flush()
    return rule


async def remove_role_rule(session: AsyncSession, *, guild_id: int, role_id: int) -> bool:
    rule = await session.get(RoleRule, (guild_id, role_id))
    if rule is None:
        return False
    await session.delete(rule)
    return True


async def ban_member(session: AsyncSession, *, guild_id: int, user_id: int, moderator_id: int,
                     reason: str) -> bool:
    """False when the member was banned already (the first ban's reason stays)."""
    if await session.get(MemberBan, (guild_id, user_id)) is not None:
        return False
    session.add(MemberBan(guild_id=guild_id, user_id=user_id, moderator_id=moderator_id, reason=reason))
    await session.flush()
    return True


async def unban_member(session: AsyncSession, *, guild_id: int, user_id: int) -> bool:
    ban = await session.get(MemberBan, (guild_id, user_id))
    if ban is None:
        return False
    await session.delete(ban)
    return True


async def record_audit(session: AsyncSession, *, guild_id: int, moderator_id: int, action: str,
                       target_user_id: int | None = None, detail: str = "") -> AuditEntry:
    entry = AuditEntry(guild_id=guild_id, moderator_id=moderator_id, action=action, target_user_id=target_user_id,
                       detail=detail)
    session.add(entry)
    await session.flush()
    return entry


async def list_audit(session: AsyncSession, *, guild_id: int, limit: int = 15, offset: int = 0) -> list[AuditEntry]:
    """A server's audit entries, newest first."""
    query = (select(AuditEntry).where(AuditEntry.guild_id == guild_id).order_by(AuditEntry.id.desc())
             .limit(limit).offset(offset))
    return list(await session.scalars(query))


async def list_jobs_in_guild(session: AsyncSession, *, guild_id: int, user_id: int, limit: int = 15) -> list[Job]:
    """A member's jobs in one server, newest first (what a moderator looks at)."""
    query = (select(Job).where(Job.guild_id == guild_id, Job.user_id == user_id).order_by(Job.id.desc())
             .limit(limit))
    return list(await session.scalars(query))


@dataclass(frozen=True)
class MemberUsage:
    user_id: int
    jobs: int
    gpu_seconds: float


async def usage_report(session: AsyncSession, *, guild_id: int, since: datetime, limit: int = 15) -> list[MemberUsage]:
    """The members who used the most engine time in a server since `since`, most first."""
    seconds = func.coalesce(func.sum(Job.gpu_seconds), 0.0)
    query = (select(Job.user_id, func.count(Job.id), seconds)
             .where(Job.guild_id == guild_id, Job.state == JobState.DONE, Job.finished_at >= since)
             .group_by(Job.user_id).order_by(seconds.desc(), Job.user_id).limit(limit))
    return [MemberUsage(user_id, jobs, float(total)) for user_id, jobs, total in await session.execute(query)]


async def get_image(session: AsyncSession, *, image_id: int) -> Image | None:
    """A picture with its job (not the job's other pictures): one query, for serving it."""
    return await session.scalar(select(Image).where(Image.id == image_id).options(joinedload(Image.job)))


@dataclass(frozen=True)
class GalleryPicture:
    """One picture of a server's gallery: what its tile needs, read without loading rows as objects."""

    image_id: int
    job_id: int
    index: int
    prompt: str


async def list_guild_pictures(session: AsyncSession, *, guild_id: int, channel_ids: list[int], limit: int = 50,
                              offset: int = 0) -> list[GalleryPicture]:
    """A server's pictures (of its finished jobs made on the web there, or in `channel_ids`), newest
    first: its gallery as one member may see it."""
    query = (select(Image.id, Image.job_id, Image.index, Job.prompt).join(Job, Job.id == Image.job_id)
             .where(Job.guild_id == guild_id, Job.state == JobState.DONE,
                    or_(Job.channel_id.is_(None), Job.channel_id.in_(channel_ids)))
             .order_by(Job.id.desc(), Image.index).limit(limit).offset(offset))
    return [GalleryPicture(*row) for row in await session.execute(query)]


async def record_sign_in(session: AsyncSession, *, token_hash: str, user_id: int, guild_id: int | None,
                         expires_at: datetime) -> None:
    """A sign-in link `/web` sent (by its token's hash); the expired ones go at the same time."""
    await session.execute(delete(WebSignIn).where(WebSignIn.expires_at < _now())
                          .execution_options(synchronize_session=False))
    session.add(WebSignIn(token_hash=token_hash, user_id=user_id, guild_id=guild_id, expires_at=expires_at))
    await session.flush()


async def peek_sign_in(session: AsyncSession, *, token_hash: str) -> WebSignIn | None:
    """The sign-in link with this hash if it is still good, left as it is (its page, before the press)."""
    return await session.scalar(select(WebSignIn).where(WebSignIn.token_hash == token_hash,
                                                        WebSignIn.expires_at >= _now()))


async def take_sign_in(session: AsyncSession, *, token_hash: str) -> WebSignIn | None:
    """The sign-in link with this hash, used up (deleted) by this call; None if it was used or never
    sent, or has expired. Two uses at once: the delete that removes the row is the one that counts."""
    sign_in = await session.get(WebSignIn, token_hash)
    if sign_in is None:
        return None
    removed = await session.execute(delete(WebSignIn).where(WebSignIn.token_hash == token_hash,
                                                             WebSignIn.expires_at >= _now())
                                    .execution_options(synchronize_session=False))
    return sign_in if removed.rowcount == 1 else None
