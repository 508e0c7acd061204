"""config.toml -> typed settings. Secrets never live here: they come from the environment.

The file's shape is checked by pydantic (unknown keys are errors, so a typo is caught
rather than ignored); the result is turned into the plain dataclasses the other rooms
take (`PromptLimits`, `ModelCatalog`), so nothing outside `bot/` reads the file.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from limits import parse as parse_rate
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bot.fetch import MIB, FetchPolicy
from bot.wordfilter import BannedWords
from generation.catalog import KNOWN_SAMPLERS, ModelCatalog, ModelVersion, NijiOption, StyleOption
from generation.memory import MemorySettings
from generation.prompt import PromptLimits, normalise_sampler_name
from generation.queue import QueueCaps

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config.toml"
CONFIG_ENV = "BOT_CONFIG"
TOKEN_ENV = "DISCORD_TOKEN"
BROKER_ENV = "IMAGINE_BROKER_URL"  # the GPU workers' Redis, when its URL holds a password
EXECUTOR_ENV = "IMAGINE_EXECUTOR"  # "local" or "celery", over [queue] executor (scripts/cluster.sh, containers)
DATABASE_ENV = "IMAGINE_DATABASE_URL"  # over [storage] database_url: a PostgreSQL URL holds a password

QueueMode = Literal["fast", "relax", "turbo"]


class ConfigError(Exception):
    """config.toml cannot be used; the message names the file, the key and what is expected."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Version(_Section):
    source: str
    family: Literal["sd15", "sdxl"] = "sd15"
    config: str | None = None
    style_suffix: str = ""
    style_lora: str | None = None
    style_lora_weight: float = 1.0
    steps: int | None = Field(default=None, ge=1, le=150)
    cfg: float | None = Field(default=None, ge=0, le=30)
    sampler: str | None = None
    ip_adapter: str | None = None
    ip_adapter_encoder: str | None = None
    dtype: Literal["float16", "bfloat16", "float32"] | None = None
    inpaint: str | None = None


class _Niji(_Section):
    model: str | None = None
    lora: str | None = None
    lora_weight: float = 1.0


class _NijiSection(_Section):
    default: str | None = None
    versions: dict[str, _Niji] = Field(default_factory=dict)


class _Style(_Section):
    suffix: str = ""
    lora: str | None = None
    lora_weight: float = 1.0


class _Models(_Section):
    default_version: str = "builtin"
    lora_dir: str = "generation/builtin/loras"
    versions: dict[str, _Version] = Field(default_factory=lambda: {"builtin": _Version(source="builtin")})
    niji: _NijiSection = Field(default_factory=_NijiSection)
    styles: dict[str, _Style] = Field(default_factory=dict)
    samplers: list[str] = Field(default_factory=lambda: list(KNOWN_SAMPLERS))
    describe: str = "builtin"
    vae_slicing: bool = True
    vae_tiling_above_megapixels: float = Field(1.5, ge=0)
    max_resident_gib: float = Field(0.0, ge=0)
    memory_budget_gib: float = Field(0.0, ge=0)


class _Limits(_Section):
    max_jobs_per_prompt: int = Field(10, ge=1, le=100)
    max_prompt_length: int = Field(1500, ge=1, le=6000)
    max_aspect_ratio: float = Field(4.0, ge=1.0, le=8.0)
    max_input_length: int = Field(4000, ge=100, le=6000)  # 6,000: the most a Discord text option carries


class _Queue(_Section):
    default_mode: QueueMode = "fast"
    allowed_modes: list[QueueMode] = Field(default_factory=lambda: ["fast", "relax", "turbo"])
    relax_every: int = Field(4, ge=0, le=100)
    burst: str = "20/minute"
    running: dict[QueueMode, int] = Field(default_factory=lambda: {"turbo": 3, "fast": 3, "relax": 1})
    queued: dict[QueueMode, int] = Field(default_factory=lambda: {"turbo": 10, "fast": 10, "relax": 10})
    guild_queued: int = Field(100, ge=1, le=100_000)
    executor: Literal["local", "celery"] = "local"
    broker_url: str = "redis://127.0.0.1:6379/0"
    lease_seconds: float = Field(20.0, ge=1.0, le=600.0)


class _Quotas(_Section):
    fast_minutes_per_day: float = Field(0.0, ge=0)
    fast_hours_per_month: float = Field(0.0, ge=0)
    turbo_cost: float = Field(2.0, ge=1.0, le=10.0)


class _Moderation(_Section):
    allow_dms: bool = True
    banned_words: list[str] = Field(default_factory=list)
    nsfw_policy: Literal["blur", "withhold"] = "blur"
    safety_checker: str = ""


class _Storage(_Section):
    database_url: str = "sqlite+aiosqlite:///data/bot.db"
    image_dir: str = "data/images"
    keep_inputs_days: float = Field(30.0, ge=0)  # 0: forever
    keep_results_days: float = Field(0.0, ge=0)  # 0: forever


class _Images(_Section):
    max_mib: float = Field(10.0, gt=0, le=100)
    timeout_seconds: float = Field(20.0, gt=0, le=120)
    max_megapixels: float = Field(40.0, gt=0, le=200)
    max_fetches_per_user: int = Field(3, ge=1, le=16)
    allow_private_addresses: bool = False


class _Discord(_Section):
    sync_guild_id: int | None = None
    progress_edit_seconds: float = Field(3.0, ge=1.0)
    redelivery_seconds: float = Field(60.0, ge=5.0, le=3600.0)


class _Metrics(_Section):
    port: int = Field(0, ge=0, le=65535)
    bind: str = "127.0.0.1"


class _Web(_Section):
    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    public_url: str = Field("", pattern=r"^(https?://[^\s/?#]+/?)?$")  # an origin: the app is served at its root
    sign_in_minutes: float = Field(10.0, gt=0, le=60)


class _File(_Section):
    models: _Models = Field(default_factory=_Models)
    limits: _Limits = Field(default_factory=_Limits)
    queue: _Queue = Field(default_factory=_Queue)
    storage: _Storage = Field(default_factory=_Storage)
    images: _Images = Field(default_factory=_Images)
    discord: _Discord = Field(default_factory=_Discord)
    quotas: _Quotas = Field(default_factory=_Quotas)
    moderation: _Moderation = Field(default_factory=_Moderation)
    metrics: _Metrics = Field(default_factory=_Metrics)
    web: _Web = Field(default_factory=_Web)


@dataclass(frozen=True)
class QueueSettings:
    default_mode: QueueMode
    allowed_modes: tuple[QueueMode, ...]  # the modes every member may use; role rules may add more
    caps: QueueCaps = field(default_factory=QueueCaps)  # per member and per server, and relax's share
    burst: str = "20/minute"  # requests one member may make (a `limits` rate: a cooldown for bursts)
    broker_url: str = "redis://127.0.0.1:6379/0"  # GPU workers' Redis (bot/worker.py); $IMAGINE_BROKER_URL wins
    executor: Literal["local", "celery"] = "local"  # where jobs run: this process, or GPU workers over Celery
    lease_seconds: float = 20.0  # a worker silent this long is taken for lost; its job runs again elsewhere


@dataclass(frozen=True)
class QuotaSettings:
    """Fast time (Midjourney's fast hours): the engine's seconds a member's fast and turbo jobs
    may use per day and per month (0: unlimited); once spent, new jobs go to relax."""

    fast_seconds_per_day: int = 0
    fast_seconds_per_month: int = 0
    turbo_cost: float = 2.0  # a turbo job's seconds count this many times


@dataclass(frozen=True)
class ModerationSettings:
    banned_words: tuple[str, ...] = ()  # refused on every server, besides each server's own
    nsfw_policy: str = "blur"  # servers' default: "blur" or "withhold"
    safety_checker: Path | None = None  # a StableDiffusionSafetyChecker folder; None: pictures are not checked
    allow_dms: bool = True  # members may use the bot in DMs (no server's rules apply there but the global ones)


@dataclass(frozen=True)
class StorageSettings:
    database_url: str
    image_dir: Path
    keep_inputs_days: float = 30.0  # users' pictures (image prompts, /blend); 0 keeps them forever
    keep_results_days: float = 0.0  # finished jobs' pictures; 0 keeps them forever


@dataclass(frozen=True)
class DiscordSettings:
    sync_guild_id: int | None
    progress_edit_seconds: float
    redelivery_seconds: float = 60.0  # how often results Discord refused are tried again


@dataclass(frozen=True)
class MetricsSettings:
    port: int = 0  # /metrics and /health; 0: not served
    bind: str = "127.0.0.1"


@dataclass(frozen=True)
class WebSettings:
    """The web app (web/, docs/web.md): beside the bot when `enabled`, alone when no token is set."""

    enabled: bool = True
    bind: str = "127.0.0.1"
    port: int = 8080
    public_url: str = ""  # what sign-in links start with; empty: http://<bind>:<port>
    sign_in_minutes: float = 10.0  # how long a /web link works (once)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
        return (self.public_url or f"http://{host}:{self.port}").rstrip("/")


@dataclass(frozen=True)
class Settings:
    path: Path
    limits: PromptLimits
    catalog: ModelCatalog
    queue: QueueSettings
    storage: StorageSettings
    discord: DiscordSettings
    images: FetchPolicy = field(default_factory=FetchPolicy)
    quotas: QuotaSettings = field(default_factory=QuotaSettings)
    moderation: ModerationSettings = field(default_factory=ModerationSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    web: WebSettings = field(default_factory=WebSettings)


def config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load_settings(path: Path | None = None) -> Settings:
    """Read and check the settings file (default: config.toml, or $BOT_CONFIG)."""
    path = path or config_path()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (set {CONFIG_ENV} or create config.toml)") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    try:
        file = _File.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
        raise ConfigError(f"{path}: {problems}") from None
    try:
        return _settings_from(file, base=path.resolve().parent)
    except ValueError as error:
        raise ConfigError(f"{path}: {error}") from None


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def _model_source(base: Path, value: str) -> str:
    """"builtin", a path (relative to the config file), or a hub id already in the local cache."""
    if value == "builtin":
        return value
    path = _resolve(base, value)
    if path.exists() or not re.fullmatch(r"[\w.-]+/[\w.-]+", value):
        return str(path)
    return value


def _settings_from(file: _File, base: Path) -> Settings:
    models = file.models
    versions = {
        name: ModelVersion(
            name=name,
            source=_model_source(base, v.source),
            family=v.family,
            config=str(_resolve(base, v.config)) if v.config else None,
            style_suffix=v.style_suffix,
            style_lora=v.style_lora,
            style_lora_weight=v.style_lora_weight,
            steps=v.steps,
            cfg=v.cfg,
            sampler=normalise_sampler_name(v.sampler) if v.sampler else None,
            ip_adapter=str(_resolve(base, v.ip_adapter)) if v.ip_adapter else None,
            ip_adapter_encoder=str(_resolve(base, v.ip_adapter_encoder)) if v.ip_adapter_encoder else None,
            dtype=v.dtype,
            inpaint=_model_source(base, v.inpaint) if v.inpaint else None,
        )
        for name, v in models.versions.items()
    }
    niji = {}
    for name, option in models.niji.versions.items():
        if (option.model is None) == (option.lora is None):
            raise ValueError(f"models.niji.versions.{name}: set exactly one of `model` or `lora`")
        if option.model is not None and option.model not in versions:
            raise ValueError(f"models.niji.versions.{name}.model: {option.model!r} is not one of "
                             f"the versions {sorted(versions)}")
        niji[name] = NijiOption(name, option.model, option.lora, option.lora_weight)
    niji_default = models.niji.default or (next(iter(niji)) if niji else None)
    catalog = ModelCatalog(
        versions=versions,
        default_version=models.default_version,
        lora_dir=_resolve(base, models.lora_dir),
        niji=niji,
        niji_default=niji_default,
        styles={name: StyleOption(name, s.suffix, s.lora, s.lora_weight) for name, s in models.styles.items()},
        samplers=tuple(models.samplers),
        describe_model=models.describe if models.describe == "builtin" else str(_resolve(base, models.describe)),
        memory=MemorySettings(vae_slicing=models.vae_slicing,
                              vae_tiling_above_megapixels=models.vae_tiling_above_megapixels,
                              max_resident_gib=models.max_resident_gib, budget_gib=models.memory_budget_gib),
    )
    queue = file.queue
    if (executor := os.environ.get(EXECUTOR_ENV)) is not None:
        if executor not in ("local", "celery"):
            raise ValueError(f"${EXECUTOR_ENV} is \"local\" or \"celery\", not {executor!r}")
        queue = queue.model_copy(update={"executor": executor})
    if queue.default_mode not in queue.allowed_modes:
        raise ValueError(f"queue.default_mode {queue.default_mode!r} is not in queue.allowed_modes")
    try:
        parse_rate(queue.burst)
    except ValueError:
        raise ValueError(f"queue.burst: {queue.burst!r} is not a rate like \"20/minute\" or "
                         "\"5 per 10 seconds\"") from None
    for name in ("running", "queued"):
        missing = {"turbo", "fast", "relax"} - set(getattr(queue, name))
        if missing:
            raise ValueError(f"queue.{name}: give a number for each mode (missing {', '.join(sorted(missing))})")
    try:
        banned = BannedWords(file.moderation.banned_words)
    except ValueError as error:  # an entry that reads as nothing, or too long
        raise ValueError(f"moderation.banned_words: {error}") from None
    return Settings(
        path=base,
        limits=PromptLimits(
            max_jobs=file.limits.max_jobs_per_prompt,
            max_text_length=file.limits.max_prompt_length,
            max_aspect_ratio=file.limits.max_aspect_ratio,
            max_input_length=file.limits.max_input_length,
        ),
        catalog=catalog,
        queue=QueueSettings(queue.default_mode, tuple(queue.allowed_modes),
                            QueueCaps(running=dict(queue.running), queued=dict(queue.queued),
                                      guild_queued=queue.guild_queued, relax_every=queue.relax_every),
                            queue.burst, os.environ.get(BROKER_ENV) or queue.broker_url, queue.executor,
                            queue.lease_seconds),
        storage=StorageSettings(os.environ.get(DATABASE_ENV) or file.storage.database_url,
                                _resolve(base, file.storage.image_dir),
                                file.storage.keep_inputs_days, file.storage.keep_results_days),
        discord=DiscordSettings(file.discord.sync_guild_id, file.discord.progress_edit_seconds,
                                file.discord.redelivery_seconds),
        images=FetchPolicy(max_bytes=round(file.images.max_mib * MIB), timeout_seconds=file.images.timeout_seconds,
                           max_pixels=round(file.images.max_megapixels * 1e6),
                           max_fetches_per_user=file.images.max_fetches_per_user,
                           allow_private_addresses=file.images.allow_private_addresses),
        quotas=QuotaSettings(round(file.quotas.fast_minutes_per_day * 60),
                             round(file.quotas.fast_hours_per_month * 3600), file.quotas.turbo_cost),
        moderation=ModerationSettings(banned.entries, file.moderation.nsfw_policy,
                                      _resolve(base, file.moderation.safety_checker)
                                      if file.moderation.safety_checker else None,
                                      file.moderation.allow_dms),
        metrics=MetricsSettings(file.metrics.port, file.metrics.bind),
        web=WebSettings(file.web.enabled, file.web.bind, file.web.port, file.web.public_url,
                        file.web.sign_in_minutes),
    )
