"""The database: users, guilds and their rules, jobs, images, favourites, the moderators' audit.

The job table is the durable record of every request: written (queued) before anything
else can fail, and read back at start-up to rebuild the in-memory queue.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import func as sql_func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobKind(enum.StrEnum):
    IMAGINE = "imagine"
    REROLL = "reroll"
    VARIATION = "variation"
    UPSCALE = "upscale"
    ZOOM = "zoom"
    PAN = "pan"
    SQUARE = "square"
    REGION = "region"
    BLEND = "blend"


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class QueueMode(enum.StrEnum):
    TURBO = "turbo"
    FAST = "fast"
    RELAX = "relax"


class Delivery(enum.StrEnum):
    """Whether a finished job's outcome (its pictures, or why there are none) reached its owner."""

    PENDING = "pending"  # not finished, or finished and not posted yet: retried until it is
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"  # no channel, no webhook and no DM took it (the log says why)


class MessageKind(enum.StrEnum):
    """What a message the bot posted for a job shows."""

    PROGRESS = "progress"  # "(42%)", edited as the job runs; deleted (and forgotten) once the result is posted
    RESULT = "result"  # the grid (or the one picture) with its buttons
    PICTURE = "picture"  # U1–U4: one picture of the grid
    SHOWN = "shown"  # brought back by /history or /favourites
    NOTICE = "notice"  # a failure or a cancellation, posted anew when the progress message was gone


class Variability(enum.StrEnum):
    SUBTLE = "subtle"
    STRONG = "strong"


def _enum(kind: type[enum.Enum], name: str) -> Enum:
    # stored as plain strings (no database enum type), so adding a value needs no migration
    return Enum(kind, name=name, native_enum=False, create_constraint=False, length=16,
                values_callable=lambda members: [m.value for m in members])


class Timestamped:
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=sql_func.now())


class User(Timestamped, Base):
    """A Discord user and their /settings."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    default_mode: Mapped[QueueMode | None] = mapped_column(_enum(QueueMode, "queue_mode"))
    default_suffix: Mapped[str] = mapped_column(Text, default="", server_default="")
    variability: Mapped[Variability] = mapped_column(_enum(Variability, "variability"), default=Variability.SUBTLE,
                                                     server_default=Variability.SUBTLE.value)
    remix: Mapped[bool] = mapped_column(default=False, server_default="0")


class NsfwPolicy(enum.StrEnum):
    """What a server does with pictures the safety checker flags, outside age-restricted channels."""

    BLUR = "blur"  # sent blurred, as a spoiler, with a notice
    WITHHOLD = "withhold"  # not sent: a notice says why


class Guild(Timestamped, Base):
    """A server's settings, set by its admins with /admin; None means config.toml's default."""

    __tablename__ = "guilds"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    default_mode: Mapped[QueueMode | None] = mapped_column(_enum(QueueMode, "queue_mode"))
    allowed_modes: Mapped[list[str] | None] = mapped_column(JSON)
    default_version: Mapped[str | None] = mapped_column(String(64))
    nsfw_policy: Mapped[NsfwPolicy | None] = mapped_column(_enum(NsfwPolicy, "nsfw_policy"))
    banned_words: Mapped[list[str] | None] = mapped_column(JSON)


class Channel(Timestamped, Base):
    """A channel's own rules: whether the bot answers there, and modes narrower than its server's."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    guild_id: Mapped[int | None] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"))
    allowed_modes: Mapped[list[str] | None] = mapped_column(JSON)
    # once one channel of a server answers, the bot answers only in those (and their threads)
    answers: Mapped[bool] = mapped_column(default=False, server_default="0")


class RoleRule(Timestamped, Base):
    """What holding a role gives in a server: more modes (turbo), more fast time, a bigger queue."""

    __tablename__ = "role_rules"

    guild_id: Mapped[int] = mapped_column(ForeignKey("guilds.id", ondelete="CASCADE"), primary_key=True)
    role_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    modes: Mapped[list[str]] = mapped_column(JSON, default=list)  # modes holders may use beyond the server's
    fast_seconds_per_day: Mapped[int | None]  # None: the server's; 0: unlimited
    fast_seconds_per_month: Mapped[int | None]
    queued: Mapped[int | None]  # jobs a holder may have waiting per mode


class MemberBan(Timestamped, Base):
    """A member a server's moderators shut out of the bot there: commands and buttons refused."""

    __tablename__ = "member_bans"

    guild_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    moderator_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text, default="", server_default="")


class AuditEntry(Timestamped, Base):
    """One thing a moderator or admin did, for /admin audit."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    guild_id: Mapped[int] = mapped_column(BigInteger, index=True)
    moderator_id: Mapped[int] = mapped_column(BigInteger)
    action: Mapped[str] = mapped_column(String(32))
    target_user_id: Mapped[int | None] = mapped_column(BigInteger)
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")


class Job(Timestamped, Base):
    """One unit of generation work: what was asked, by whom, where, and how it went."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_enum(JobKind, "job_kind"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)  # a server's gallery reads by it
    channel_id: Mapped[int | None] = mapped_column(BigInteger)
    prompt: Mapped[str] = mapped_column(Text, default="")
    request: Mapped[dict[str, Any]] = mapped_column(JSON)  # GenerationRequest.to_dict() plus job options
    seed: Mapped[int | None] = mapped_column(BigInteger)
    mode: Mapped[QueueMode] = mapped_column(_enum(QueueMode, "queue_mode"))
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), default=JobState.QUEUED, index=True)
    attempts: Mapped[int] = mapped_column(default=0)  # times it was started
    crashes: Mapped[int] = mapped_column(default=0, server_default="0")  # process crashes it is blamed for
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery: Mapped[Delivery] = mapped_column(_enum(Delivery, "delivery"), default=Delivery.PENDING,
                                               server_default=Delivery.PENDING.value, index=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivery_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    delivery_error: Mapped[str | None] = mapped_column(Text)  # the last failure, for the operator
    next_delivery_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # after a failure: backoff
    gpu_seconds: Mapped[float | None] = mapped_column(Float)  # the engine's time for it: what fast time counts
    flagged: Mapped[bool] = mapped_column(default=False, server_default="0")  # a picture the safety checker flagged

    images: Mapped[list[Image]] = relationship(back_populates="job", order_by="Image.index",
                                               cascade="all, delete-orphan")
    parent: Mapped[Job | None] = relationship(remote_side=[id])


class Image(Timestamped, Base):
    """A picture a job made; the bytes live in the image store, the row says where."""

    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("job_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int]
    path: Mapped[str] = mapped_column(String(500))
    width: Mapped[int]
    height: Mapped[int]
    seed: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    flagged: Mapped[bool] = mapped_column(default=False, server_default="0")  # by the safety checker (NSFW)

    job: Mapped[Job] = relationship(back_populates="images")


class JobMessage(Timestamped, Base):
    """A message the bot posted for a job: reactions on any of them reach the job."""

    __tablename__ = "job_messages"

    message_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[MessageKind] = mapped_column(_enum(MessageKind, "message_kind"))
    index: Mapped[int | None]  # the picture a PICTURE message shows
    user_id: Mapped[int] = mapped_column(BigInteger)  # whom it is for: the owner, or who pressed U or brought it back
    via: Mapped[str] = mapped_column(String(16))  # "interaction", "channel" or "dm": how it was posted

    job: Mapped[Job] = relationship()


class Favourite(Timestamped, Base):
    __tablename__ = "favourites"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)


class WebSignIn(Timestamped, Base):
    """A one-time sign-in link to the web app that `/web` sent a member: kept by its hash until used
    or expired, so a link works once even across restarts, and a stolen database holds no live link."""

    __tablename__ = "web_sign_ins"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger)  # where /web was typed: whose rules apply on the web
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
