"""The Bot subclass: what the process holds open while it serves Discord.

`setup_hook` opens everything in order (database migrated to head, image store, the
executor with the engine, the job runner rebuilt from the job table, an HTTP session),
registers the persistent buttons and loads one cog per user surface; `close` shuts
them down in reverse.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot.buttons import JobButton, JobButtonHandler
from bot.config import Settings
from bot.delivery import DeliveryService
from bot.fetch import FetchLimiter, make_session
from bot.jobs import JobRunner
from bot.membership import Membership
from bot.metrics import Metrics
from bot.replies import tell_privately
from bot.rules import CommunityRules, let_in
from bot.supervisor import PreviousExit
from bot.work import engine_work, model_of_request, remote_work
from generation.executor import Executor, LocalExecutor
from storage.database import create_engine, create_sessionmaker, upgrade_database
from storage.images import ImageStore

if TYPE_CHECKING:
    from generation.engine import Engine
    from web.server import WebServer

log = logging.getLogger(__name__)

DAY = 86_400.0
# the names discord.py gives the tasks that run event listeners, slash commands, buttons and forms
HANDLER_TASK_NAMES = ("discord.py: ", "CommandTree-invoker", "discord-ui-")
HANDLER_GRACE_SECONDS = 5.0

# One extension per user surface (see cogs/). Each is loaded on its own, so one broken
# cog does not stop the others.
INITIAL_EXTENSIONS: tuple[str, ...] = ("cogs.imagine", "cogs.queue", "cogs.reactions", "cogs.settings",
                                         "cogs.history", "cogs.describe", "cogs.admin", "cogs.web")


def build_engine(settings: Settings) -> Engine:
    """The diffusers engine on this machine's best device (imports torch: call off the loop)."""
    import torch

    from generation.engine import Engine

    device = "cuda" if torch.cuda.is_available() else "cpu"
    return Engine(settings.catalog, device=device, dtype=torch.float16 if device == "cuda" else torch.float32)


class DataFolderBusy(Exception):
    """Another bot process holds the data folder (its database and pictures)."""


def lock_data_folder(folder: Path) -> IO[str]:
    """Hold `folder`/bot.lock for this process's life, so that a second bot started on the same data
    (the web app tried beside a running bot, say) stops at once instead of taking over its queue."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = (folder / "bot.lock").open("a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DataFolderBusy(f"another bot process is running on {folder} (its database and pictures): stop it "
                             "first, or give this one another [storage] in its own config.toml") from None
    return lock


class ImagineBot(commands.AutoShardedBot):
    settings: Settings
    jobs: JobRunner
    store: ImageStore
    http_session: aiohttp.ClientSession
    fetch_limiter: FetchLimiter
    delivery: DeliveryService
    rules: CommunityRules
    membership: Membership

    def __init__(self, settings: Settings, *, engine: Engine | None = None,
                 previous_exit: PreviousExit = PreviousExit.UNKNOWN, started_file: Path | None = None,
                 with_discord: bool = True, **options) -> None:
        intents = discord.Intents.default()  # slash commands, buttons, reactions: no message content
        # nobody is pinged unless a request names its one user (bot/replies.py: mention_only)
        options.setdefault("allowed_mentions", discord.AllowedMentions.none())
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, help_command=None, **options)
        self.settings = settings
        self.engine = engine
        self.previous_exit = previous_exit  # how the last process ended (bot/supervisor.py): who is to blame
        self.started_file = started_file  # touched once the job queue is up, for the supervisor
        self.executor: Executor | None = None
        self.metrics: Metrics | None = None  # /metrics and /health, when [metrics] port is set
        self.database = None
        self.job_buttons: JobButtonHandler | None = None  # what a press of a job's button does (cogs/imagine.py)
        self.with_discord = with_discord  # False: the web app alone, never logged in (`serve_web_alone`)
        self.web: WebServer | None = None
        self._data_lock: IO[str] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    async def setup_hook(self) -> None:
        self._data_lock = lock_data_folder(self.settings.storage.image_dir.parent)  # before anything changes
        if self.settings.web.enabled or not self.with_discord:
            self.web = self.bind_web()
        self.database = create_engine(self.settings.storage.database_url)
        await upgrade_database(self.database)
        self.sessionmaker = create_sessionmaker(self.database)
        self.store = ImageStore(self.settings.storage.image_dir)
        if self.engine is None:
            self.engine = await asyncio.to_thread(build_engine, self.settings)
        self.rules = CommunityRules(self.settings, self.sessionmaker)
        await self.rules.load()
        self.jobs = await self.job_runner()
        if self.settings.metrics.port:  # before the queue starts: the jobs it adopts or restarts count too
            self.metrics = Metrics(self)
            self.jobs.observers.append(self.metrics.observe)
            await self.metrics.start(self.settings.metrics.bind, self.settings.metrics.port)
        await self.jobs.start()
        if self.started_file is not None:
            self.started_file.touch()
        self.delivery = DeliveryService(self, redelivery_seconds=self.settings.discord.redelivery_seconds)
        await self.delivery.start(to_discord=self.with_discord)
        self.add_dynamic_items(JobButton)
        self.http_session = make_session(self.settings.images)  # for user-given picture links only
        self.fetch_limiter = FetchLimiter(self.settings.images.max_fetches_per_user)
        self.membership = Membership(self)
        if self.web is not None:
            from web.server import WebUnavailable

            try:
                await self.web.start()
            except WebUnavailable as error:
                if not self.with_discord:
                    raise
                log.warning("%s; the Discord bot runs without its web app", error)
                await self.web.close()
                self.web = None
        self._sweeper = asyncio.create_task(self.sweep_old_pictures(), name="picture-retention")
        self.tree.on_error = self.on_app_command_error
        self.tree.interaction_check = self.check_command
        for extension in INITIAL_EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("could not load extension %s", extension)

    def bind_web(self) -> WebServer | None:
        """The web app's port, taken before the database or the queue is touched. Alone (no token) a
        port it cannot have stops the start (WebUnavailable); beside the bot, the bot runs without it."""
        from web.server import WebServer, WebUnavailable

        try:
            web = WebServer(self, local=not self.with_discord)  # its signing key: read, or made in data/
            web.bind()
        except (WebUnavailable, ValueError, OSError) as error:
            if not self.with_discord:
                raise WebUnavailable(str(error)) from None
            log.warning("%s; the Discord bot runs without its web app", error)
            return None
        return web

    async def job_runner(self) -> JobRunner:
        """The job runner on this process's engine (`[queue] executor = "local"`), or on the GPU
        workers over Celery ("celery": bot/remote.py; they load the models and the safety checker)."""
        queue = self.settings.queue
        model_of = model_of_request(self.engine)
        if queue.executor == "celery":
            from bot.remote import RemoteExecutor

            remote = RemoteExecutor(queue.broker_url, lease_seconds=queue.lease_seconds)
            self.executor = remote
            await remote.start()
            return JobRunner(self.sessionmaker, self.store, remote, remote_work(self.store, model_of),
                             caps=queue.caps, previous_exit=self.previous_exit, model_of=model_of,
                             loaded_models=remote.loaded_models)
        self.executor = LocalExecutor()
        checker = None
        if self.settings.moderation.safety_checker is not None:  # loaded once, off the loop, beside the engine
            from generation.safety import SafetyChecker
            checker = await asyncio.to_thread(SafetyChecker, self.settings.moderation.safety_checker,
                                              device=str(getattr(self.engine, "device", "cpu")))
        return JobRunner(self.sessionmaker, self.store, self.executor, engine_work(self.engine, self.store, checker),
                         caps=queue.caps, previous_exit=self.previous_exit, model_of=model_of,
                         loaded_models=lambda: self.engine.resident)

    async def close(self) -> None:
        if self.web is not None:  # first: no new request reaches what closes below
            await self.web.close()
        for extension in list(self.extensions):
            await self.unload_extension(extension)
        await self.finish_handlers(HANDLER_GRACE_SECONDS)  # while Discord can still be answered
        if hasattr(self, "delivery"):  # its tasks stop while the database is open
            await self.delivery.close()
        await super().close()
        await self.finish_handlers(0)  # whatever started meanwhile
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        if self.metrics is not None:
            await self.metrics.close()
        if hasattr(self, "jobs"):
            await self.jobs.close()
        if self.executor is not None:
            await self.executor.close()
        if hasattr(self, "http_session"):
            await self.http_session.close()
        if self.database is not None:
            await self.database.dispose()
        if self._data_lock is not None:
            self._data_lock.close()
            self._data_lock = None

    @staticmethod
    async def finish_handlers(grace: float) -> None:
        """Let the commands, buttons, forms and reactions still being handled finish (cancelled
        after `grace` seconds) before the database closes: discord.py runs each in a task of
        its own that nothing else awaits, and one dropped while it holds a connection leaks it."""
        current = asyncio.current_task()
        handlers = [task for task in asyncio.all_tasks() if task is not current and not task.done()
                    and task.get_name().startswith(HANDLER_TASK_NAMES)]
        if not handlers:
            return
        _, unfinished = await asyncio.wait(handlers, timeout=grace) if grace > 0 else (set(), set(handlers))
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if unfinished:
            log.info("cancelled %d event handlers still running at shutdown", len(unfinished))

    async def sweep_old_pictures(self, every_seconds: float = 3600) -> None:
        """Hourly, remove pictures older than `[storage] keep_inputs_days` / `keep_results_days`
        (0 keeps them forever). Job rows stay: /history shows such jobs as expired."""
        storage = self.settings.storage
        while storage.keep_inputs_days or storage.keep_results_days:
            now = time.time()
            try:
                inputs = results = 0
                if storage.keep_inputs_days:
                    inputs = await asyncio.to_thread(self.store.expire_inputs, now - storage.keep_inputs_days * DAY)
                if storage.keep_results_days:
                    results = await asyncio.to_thread(self.store.expire_results,
                                                      now - storage.keep_results_days * DAY)
                    if self.web is not None:  # the web app's thumbnails of them
                        await asyncio.to_thread(self.web.expire_cache, now - storage.keep_results_days * DAY)
                if inputs or results:
                    log.info("retention: removed %d users' pictures and %d result pictures", inputs, results)
            except OSError:
                log.exception("retention sweep failed; trying again in an hour")
            await asyncio.sleep(every_seconds)

    async def on_ready(self) -> None:
        log.info("ready as %s (id %s)", self.user, self.user.id if self.user else "?")

    async def check_command(self, interaction: discord.Interaction) -> bool:
        """Before every slash command: a banned member, or a channel the bot does not answer in, is
        refused privately. /admin is exempt, so moderators can always change the rules."""
        root = getattr(interaction.command, "root_parent", None)
        if root is not None and root.name == "admin":
            return True
        return await let_in(interaction)

    async def on_app_command_error(self, interaction: discord.Interaction,
                                   error: app_commands.AppCommandError) -> None:
        """Anything a command did not expect: logged with its traceback, a short private word to the user.
        A failed check (a missing permission) is only the private word."""
        name = interaction.command.qualified_name if interaction.command else "?"
        if isinstance(error, app_commands.CheckFailure):
            await tell_privately(interaction, f"❌ {error}")
            return
        log.error("/%s failed for user %s", name, interaction.user.id, exc_info=error)
        await tell_privately(interaction, f"❌ Something went wrong with /{name} on our side; it has been logged. "
                                          "Try again in a moment.")


class CommandSync(ImagineBot):
    """`python -m bot sync`: log in, register the slash commands with Discord, leave.

    Syncing is rate-limited by Discord, so the bot does not do it on every start. Only
    the command definitions are needed: no database, no engine."""

    def __init__(self, settings: Settings, guild_id: int | None) -> None:
        super().__init__(settings)
        self.guild_id = guild_id
        self.synced: list[str] = []

    async def setup_hook(self) -> None:
        for extension in INITIAL_EXTENSIONS:
            await self.load_extension(extension)
        guild = discord.Object(self.guild_id) if self.guild_id is not None else None
        if guild is not None:
            self.tree.copy_global_to(guild=guild)  # guild commands show up at once, global ones in up to an hour
        self.synced = [command.name for command in await self.tree.sync(guild=guild)]


async def sync_commands(settings: Settings, token: str, guild_id: int | None) -> list[str]:
    """Register the commands (globally, or to one guild for testing); the names synced."""
    bot = CommandSync(settings, guild_id)
    try:
        await bot.login(token)
    finally:
        await bot.close()
    return bot.synced


async def serve_web_alone(settings: Settings, *, previous_exit: PreviousExit = PreviousExit.UNKNOWN,
                          started_file: Path | None = None, on_ready: Callable[[str], None] | None = None) -> None:
    """No bot token: the same process without Discord, serving the web app (web/) to one local
    user on loopback until SIGINT or SIGTERM; `on_ready` is told its address once it listens.
    Discord's pending deliveries wait for a run with a token."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with ImagineBot(settings, previous_exit=previous_exit, started_file=started_file,
                          with_discord=False) as bot:
        await bot.setup_hook()  # what login would run: the database, the queue, the web app
        assert bot.web is not None
        if on_ready is not None:
            on_ready(bot.web.url)
        await stop.wait()
