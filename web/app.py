"""The web app's pages: a second front end over the bot's job service.

Like the Discord cogs, it only turns its input into calls: prompts and presses are read by
bot/asking.py, jobs are started by the delivery service (`submit_from_web`), which asks the
server's rules (bot/rules.py) first, and a job's progress comes from the job runner's events.
Pages are rendered on the server (Jinja2, every value escaped); a little script follows a
job live (server-sent events) and draws a region on a picture.

    GET  /                      Create: a prompt, image prompts by upload, /blend
    POST /imagine, /blend       start jobs (303 to the first job's page)
    GET  /jobs/{id}             a job: its progress live, then its grid or picture and what to do next
    GET  /jobs/{id}/events      its progress as server-sent events
    POST /jobs/{id}/act         U/V/🔄, Vary, Upscale, Zoom, Pan, Square, Region, ❤️
    GET  /jobs/{id}/{n}         one picture: parameters, seed, copy prompt, A1111 text
    GET  /me, /me/favourites    My pictures: history (search by prompt text), favourites
    GET  /images/{id}/thumb.webp, /images/{id}/full.png   the pictures, veiled as the rules say
    GET  /inputs/{name}         a picture a member gave (an upload's link in its prompt)
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bot import asking
from bot.asking import BLEND_DIMENSIONS, JOB_ACTIONS, Unavailable, Upload, read_region
from bot.buttons import Action
from bot.config import WebSettings
from bot.fetch import FetchError, readable_size
from bot.membership import MembershipUnknown
from bot.messages import WITHHOLD, job_title, preview_as_shown
from bot.rules import Asker, Refused
from generation.executor import JobProgress, JobStarted, Progress
from generation.prompt import MAX_IMAGE_PROMPTS, GenerationRequest, Params, PromptError, apply_suffix
from generation.queue import QueueFull
from storage import repository as repo
from storage.job_requests import SourceGone, blend_job, imagine_job, region_job, remix, zoom_job
from storage.models import Job, JobState, User
from storage.repository import GalleryPicture, NewJob
from web.identity import (
    SESSION_DAYS,
    CsrfFailed,
    NotSignedIn,
    SignInLinks,
    Viewer,
    check_csrf,
    check_origin,
    csrf_token,
    public_origin,
    secret_key,
    sign_in,
    viewer_of,
)
from web.pictures import PictureCache, PictureGone, Shown, encode_preview, full_picture, parameters_text

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 24  # jobs per page of My pictures
MAX_FORM_OVERHEAD = 64 * 1024  # a form's fields besides its pictures
PREVIEW_EVERY_SECONDS = 0.5  # previews sent to one page at most this often (each is a WebP to encode)
WAITING_EVERY_SECONDS = 2.0  # a queued job's position, sent again this often
FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})
MAX_STREAMS_PER_VIEWER = 8  # live job pages one member may have open at once
PRESS_LABELS = {
    Action.UPSCALE_SUBTLE: "Upscale (Subtle)", Action.UPSCALE_CREATIVE: "Upscale (Creative)",
    Action.VARY_SUBTLE: "Vary (Subtle)", Action.VARY_STRONG: "Vary (Strong)", Action.ZOOM_2: "Zoom Out 2x",
    Action.ZOOM_15: "Zoom Out 1.5x", Action.SQUARE: "Make Square", Action.PAN_LEFT: "⬅️ Pan",
    Action.PAN_RIGHT: "➡️ Pan", Action.PAN_UP: "⬆️ Pan", Action.PAN_DOWN: "⬇️ Pan",
}
DIGITS = frozenset("0123456789")
WEB_ACTIONS = JOB_ACTIONS | {Action.VARY_REGION, Action.ZOOM_CUSTOM, Action.FAVOURITE}


@dataclass(frozen=True)
class SentForm:
    """A form as read: its text fields (the first value of each) and its pictures."""

    fields: dict[str, str]
    pictures: list[Upload]

    def get(self, key: str) -> str | None:
        return self.fields.get(key)


class Refusal(Exception):
    """What to tell the member instead of doing what they asked (shown on the page, as the bot words it)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class IdConvertor(Convertor[int]):
    """A row id in a path: at most 19 digits (a longer one matches no page: 404, never a 500)."""

    regex = "[0-9]{1,19}"

    def convert(self, value: str) -> int:
        return int(value)

    def to_string(self, value: int) -> str:
        return str(value)


register_url_convertor("id", IdConvertor())


def allowed_hosts(settings: WebSettings, local: bool) -> list[str]:
    """The Host headers the app answers (a page on another name that resolves here, DNS
    rebinding, gets a 400): loopback names, `public_url`'s host, `bind` when it is one address."""
    hosts = ["127.0.0.1", "localhost", "[::1]"]  # an IPv6 address comes in its brackets
    if local:
        return hosts
    if settings.public_url:
        host = urlsplit(settings.public_url).hostname or ""
        hosts.append(f"[{host}]" if ":" in host else host)
    if settings.bind not in ("0.0.0.0", "::", ""):
        hosts.append(f"[{settings.bind}]" if ":" in settings.bind else settings.bind)
    elif not settings.public_url:
        return ["*"]  # every address of this machine, and no name to hold it to: docs/web.md says to set one
    return hosts


def create_app(bot: ImagineBot, *, local: bool) -> Starlette:
    """The ASGI app over `bot`'s services; `local`: one user, nothing to sign in to."""
    settings = bot.settings
    data_dir = settings.storage.image_dir.parent
    https = settings.web.public_url.startswith("https://")
    secret = secret_key(data_dir)
    pages = Pages(bot, local=local, cache=data_dir / "web-cache",
                  links=SignInLinks(secret, settings.web.sign_in_minutes))
    app = Starlette(
        routes=[
            Route("/", pages.create),
            Route("/imagine", pages.imagine, methods=["POST"]),
            Route("/blend", pages.blend, methods=["POST"]),
            Route("/jobs/{job_id:id}", pages.job),
            Route("/jobs/{job_id:id}/events", pages.job_events),
            Route("/jobs/{job_id:id}/act", pages.act, methods=["POST"]),
            Route("/jobs/{job_id:id}/{index:id}", pages.picture),
            Route("/me", pages.history),
            Route("/me/favourites", pages.favourites),
            Route("/me/flagged", pages.show_flagged, methods=["POST"]),
            Route("/gallery", pages.own_gallery),
            Route("/gallery/{guild_id:id}", pages.gallery),
            Route("/signin/{signed}", pages.sign_in_page),
            Route("/signin", pages.sign_in, methods=["POST"]),
            Route("/signout", pages.sign_out, methods=["POST"]),
            Route("/images/{image_id:id}/thumb.webp", pages.thumb),
            Route("/images/{image_id:id}/full.png", pages.full),
            Route("/inputs/{name}", pages.user_picture),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts(settings.web, local)),
                    Middleware(SessionMiddleware, secret_key=secret, session_cookie="imagine_session",
                               max_age=SESSION_DAYS * 86_400, same_site="lax", https_only=https)],
        exception_handlers={NotSignedIn: pages.not_signed_in, CsrfFailed: pages.csrf_failed,
                            HTTPException: pages.http_error, Refusal: pages.refusal},
    )
    app.state.local = local
    app.state.pages = pages
    app.state.public_origin = public_origin(settings.web.public_url)
    return app


class Pages:
    """The routes' handlers, over the bot's services."""

    def __init__(self, bot: ImagineBot, *, local: bool, cache: Path, links: SignInLinks) -> None:
        self.bot = bot
        self.local = local
        self.links = links
        self.pictures = PictureCache(cache)
        self.closing = asyncio.Event()  # set when the app stops: live pages end at once
        self._streams: defaultdict[int, int] = defaultdict(int)  # user -> live job pages open
        self._previews: dict[tuple[int, int, str | None], asyncio.Future[str | None]] = {}  # (job, step, policy)
        self._finished: OrderedDict[int, Job] = OrderedDict()  # finished jobs as their pages show them
        self._galleries: dict[tuple[int, frozenset[int], int], tuple[float, list[GalleryPicture]]] = {}
        self._gallery_reads: dict[tuple[int, frozenset[int], int], asyncio.Future[list[GalleryPicture]]] = {}
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.globals.update(job_title=web_job_title, readable_size=readable_size,
                                          max_image_prompts=MAX_IMAGE_PROMPTS, blend_dimensions=BLEND_DIMENSIONS,
                                          press_labels=PRESS_LABELS, Action=Action)

    # --- rendering -------------------------------------------------------------------

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        try:
            viewer: Viewer | None = viewer_of(request)
        except NotSignedIn:
            viewer = None
        notice = request.session.pop("notice", None)
        # a viewer who chose to see flagged pictures asks for other addresses: no blurred copy from the cache
        seen = "?flagged=shown" if viewer is not None and viewer.show_flagged else ""
        return self.templates.TemplateResponse(request, template, {"viewer": viewer, "local": self.local,
                                                                   "csrf": csrf_token(request), "notice": notice,
                                                                   "seen": seen, **context}, status_code=status)

    async def not_signed_in(self, request: Request, error: Exception) -> Response:
        return self.render(request, "message.html", 401, title="Sign in",
                           message="Type /web in Discord: the bot sends you a sign-in link.")

    async def csrf_failed(self, request: Request, error: Exception) -> Response:
        return self.render(request, "message.html", 403, title="Form expired",
                           message="❌ That form came from an old or another page: reload the page and send it again.")

    async def http_error(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, HTTPException)
        titles = {404: "Not found", 405: "Not allowed", 413: "Too large"}
        return self.render(request, "message.html", error.status_code, title=titles.get(error.status_code, "Error"),
                           message=error.detail)

    async def refusal(self, request: Request, error: Exception) -> Response:
        assert isinstance(error, Refusal)
        return self.render(request, "message.html", error.status, title="Not now", message=f"❌ {error}")

    # --- Create ------------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        viewer_of(request)
        return self.render(request, "create.html", prompt=request.query_params.get("prompt", "")[:4000])

    async def imagine(self, request: Request) -> Response:
        """/imagine from the web: the same reading, rules and queue as the Discord command."""
        check_origin(request)  # before anything counts against the member
        viewer, asker = await self.acting(request)
        prompt = ""
        try:
            self.admit_upload(asker)
            form = await self.read_form(request, MAX_IMAGE_PROMPTS)
            prompt = str(form.get("prompt") or "")
            uploads = form.pictures
            if not prompt.strip():
                raise PromptError("the prompt is empty: describe what to draw")
            placeholders = [f"https://upload.invalid/{number}" for number in range(len(uploads))]
            requests = asking.read_prompt(self.bot.settings, prompt, placeholders)
            asking.screen(self.bot.rules, asker, [shown for _, shown in requests], requests[0][0].params.mode)
            user = await asking.member_settings(self.bot, viewer.user_id)
            personal = asking.personal(self.bot.rules, asker, prompt, user)
            kept = await self.keep_uploads(viewer, uploads)
            links = [f"{self.bot.settings.web.base_url}/inputs/{name}" for name in kept]
            requests = asking.read_prompt(self.bot.settings, personal, links)
            urls = requests[0][0].image_urls  # the prompt's own links first, then the uploads
            uploaded = dict(zip(links, kept, strict=True))
            others = [url for url in urls if url not in uploaded]  # fetched as Discord's are
            fetched = dict(zip(others, await asking.keep_pictures(self.bot, viewer.user_id, others), strict=True))
            inputs = [uploaded.get(url) or fetched[url] for url in urls]
            new_jobs = [imagine_job(request.to_dict(), shown, request.params.seed, inputs)
                        for request, shown in requests]
            job_ids = await self.submit(request, asker, user, new_jobs, requests[0][0].params.mode)
        except (PromptError, Refused, QueueFull, FetchError) as error:
            return self.render(request, "create.html", 400, prompt=prompt, error=f"❌ {error}")
        if len(job_ids) > 1:
            self.tell(request, f"{len(job_ids)} jobs started: all of them are in My pictures.")
        return RedirectResponse(f"/jobs/{job_ids[0]}", status_code=303)

    async def blend(self, request: Request) -> Response:
        """/blend from the web: two to five uploads, a shape, words that steer it (optional)."""
        check_origin(request)
        viewer, asker = await self.acting(request)
        prompt = ""
        try:
            self.admit_upload(asker)
            form = await self.read_form(request, 5)
            uploads = form.pictures
            prompt = str(form.get("prompt") or "")
            dimensions = str(form.get("dimensions") or "square")
            if not 2 <= len(uploads) <= 5:
                raise PromptError("a blend takes 2 to 5 pictures")
            if dimensions not in BLEND_DIMENSIONS:
                raise PromptError(f"the shape is one of {', '.join(BLEND_DIMENSIONS)}")
            aspect = BLEND_DIMENSIONS[dimensions]
            version = self.bot.rules.default_version(asker)
            if prompt.strip():
                words = f"{prompt} --ar {aspect}"
                (blend_request, shown), *more = asking.read_prompt(
                    self.bot.settings, apply_suffix(words, f"--v {version}") if version else words)
                if more or blend_request.image_urls:
                    raise PromptError("a blend takes words that steer it: no {permutations}, --repeat or image "
                                      "links (upload the pictures instead)")
            else:
                blend_request, shown = GenerationRequest((), Params(aspect=aspect, version=version)), ""
            asking.screen(self.bot.rules, asker, [shown], blend_request.params.mode)
            user = await asking.member_settings(self.bot, viewer.user_id)
            inputs = await self.keep_uploads(viewer, uploads)
            shown = shown or f"blend of {len(inputs)} pictures --ar {aspect}"
            job_ids = await self.submit(request, asker, user, [blend_job(blend_request.to_dict(), shown, inputs)],
                                        blend_request.params.mode)
        except (PromptError, Refused, QueueFull, FetchError) as error:
            return self.render(request, "create.html", 400, prompt="", blend_prompt=prompt, error=f"❌ {error}",
                               tab="blend")
        return RedirectResponse(f"/jobs/{job_ids[0]}", status_code=303)

    def admit_upload(self, asker: Asker) -> None:
        """A banned member, or one past their burst allowance, is refused before their pictures are
        read (each request counts once: the same check in `admit` passes it)."""
        self.bot.rules.check_access(asker)
        self.bot.rules.check_burst(asker)

    async def read_form(self, request: Request, max_pictures: int) -> SentForm:
        """The form, bounded before it is read (a declared length, at most `max_pictures` pictures
        of `[images] max_mib` each), with this session's CSRF token; its pictures read into memory."""
        max_bytes = self.bot.settings.images.max_bytes
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise HTTPException(411, "A form must say its length.")
        if int(declared) > max_pictures * max_bytes + MAX_FORM_OVERHEAD:
            raise HTTPException(413, f"That is more than this form takes: at most {max_pictures} pictures of "
                                     f"{readable_size(max_bytes)} each.")
        try:
            form = await request.form(max_files=max_pictures, max_fields=20, max_part_size=MAX_FORM_OVERHEAD)
        except HTTPException:  # the multipart parser's own limits, in its own words
            raise HTTPException(400, f"That form holds more than it takes: at most {max_pictures} pictures and 20 "
                                     "fields, each of at most 64 KiB.") from None
        try:
            check_csrf(request, form.get("csrf"))
            fields = {key: value for key, value in reversed(form.multi_items()) if isinstance(value, str)}
            pictures = []
            for item in form.getlist("images"):
                if isinstance(item, UploadFile) and (item.filename or item.size):  # none chosen: one empty part
                    data = await item.read(max_bytes + 1)
                    name = f"upload-{len(pictures)}"
                    pictures.append(Upload(name, item.filename or name, len(data), item.content_type, data))
        finally:
            await form.close()  # the files it spooled to disk
        return SentForm(fields, pictures)

    async def keep_uploads(self, viewer: Viewer, uploads: list[Upload]) -> list[str]:
        """Uploaded pictures through the same checks as links (bot/fetch.py), kept in the store."""
        return await asking.keep_pictures(self.bot, viewer.user_id, [upload.url for upload in uploads],
                                          {upload.url: upload for upload in uploads})

    async def submit(self, request: Request, asker: Asker, user: User, new_jobs: list[NewJob],
                     asked: str | None) -> list[int]:
        """Hand the jobs to the delivery service (which checks the rules: Refused, QueueFull)."""
        job_ids, notice = await self.bot.delivery.submit_from_web(asker, user, new_jobs, asked=asked)
        if notice is not None:
            self.tell(request, notice)
        return job_ids

    @staticmethod
    def tell(request: Request, text: str) -> None:
        """A line for the next page this browser sees."""
        request.session["notice"] = text[:500]

    # --- a job ---------------------------------------------------------------------------

    async def visible_job(self, viewer: Viewer, job_id: int) -> Job:
        """A job the viewer may see (`may_see`), with its pictures; else 404. A finished job never
        changes what a page shows of it, so the last few hundred are kept in memory."""
        job = self._finished.get(job_id)
        if job is None and 0 < job_id <= asking.MAX_ROW_ID:
            async with self.bot.sessionmaker() as session:
                job = await repo.get_job(session, job_id=job_id)
            if job is not None and job.state in FINISHED:
                self._finished[job_id] = job
                while len(self._finished) > 500:
                    self._finished.popitem(last=False)
        if job is None or not await self.may_see(viewer, job.user_id, job.guild_id, job.channel_id):
            raise HTTPException(404, "There is no such job, or it is not yours to see.")
        return job

    async def job(self, request: Request) -> Response:
        viewer = viewer_of(request)
        job = await self.visible_job(viewer, request.path_params["job_id"])
        waiting = self.bot.delivery.waiting_text(job.id) if job.state == JobState.QUEUED else None
        return self.render(request, "job.html", job=job, waiting=waiting, title=job.prompt or job_title(job))

    async def picture(self, request: Request) -> Response:
        viewer = viewer_of(request)
        job = await self.visible_job(viewer, request.path_params["job_id"])
        index = request.path_params["index"]
        if job.state != JobState.DONE or not 0 <= index < len(job.images):
            raise HTTPException(404, "That picture does not exist.")
        image = job.images[index]
        parameters = await asyncio.to_thread(parameters_text, Path(image.path))
        async with self.bot.sessionmaker() as session:
            favourite = await repo.get_favourite(session, user_id=viewer.user_id, image_id=image.id) is not None
        return self.render(request, "picture.html", job=job, index=index, image=image, parameters=parameters,
                           favourite=favourite, title=f"{job.prompt} #{index + 1}")

    async def job_events(self, request: Request) -> Response:
        """Server-sent events while the job runs: `waiting` (its place), `progress` (percent and a
        preview), then `end`; a job already over sends `end` at once (the page then shows it).
        A member may follow a few jobs at once, not a hundred (each stream holds a listener)."""
        viewer = viewer_of(request)
        job = await self.visible_job(viewer, request.path_params["job_id"])
        if self._streams[viewer.user_id] >= MAX_STREAMS_PER_VIEWER:
            raise Refusal(f"You are following {MAX_STREAMS_PER_VIEWER} jobs live already: close some of their "
                          "pages.", 429)
        return EventSourceResponse(self.follow(job, viewer), ping=15, send_timeout=30)

    async def follow(self, job: Job, viewer: Viewer) -> AsyncIterator[ServerSentEvent]:
        if self._streams[viewer.user_id] >= MAX_STREAMS_PER_VIEWER:  # checked again: requests sent together
            yield ServerSentEvent(event="refused", data=f"You are following {MAX_STREAMS_PER_VIEWER} jobs live "
                                                            "already: close some of their pages.")
            return
        self._streams[viewer.user_id] += 1
        events = self.bot.jobs.events(job.id)  # listening before the state is read again: nothing missed
        waiting: asyncio.Future[Any] | None = None
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            # a page left at once (the stream cancelled) must not drop a connection mid-read
            current = await asyncio.shield(self.read_job(job.id))
            if current is None or current.state not in (JobState.QUEUED, JobState.RUNNING):
                yield ServerSentEvent(event="end", data=current.state.value if current else "gone")
                return
            if current.state == JobState.QUEUED:
                yield ServerSentEvent(event="waiting", data=self.bot.delivery.waiting_text(job.id))
            last_preview = 0.0
            policy = self.flagged_policy(current.guild_id, viewer)
            while not self.closing.is_set():
                waiting = waiting or asyncio.ensure_future(anext(events, None))
                await asyncio.wait({waiting, closing}, timeout=WAITING_EVERY_SECONDS,
                                   return_when=asyncio.FIRST_COMPLETED)
                if not waiting.done():  # every few seconds: the queue moved on
                    if self.bot.jobs.position(job.id) is not None:
                        yield ServerSentEvent(event="waiting", data=self.bot.delivery.waiting_text(job.id))
                    continue
                event, waiting = waiting.result(), None
                if event is None:
                    break
                if isinstance(event, JobStarted):
                    yield ServerSentEvent(event="progress", data=json.dumps({"percent": 0}))
                elif isinstance(event, JobProgress):
                    payload: dict[str, Any] = {"percent": event.progress.percent}
                    if (event.progress.preview is not None
                            and time.monotonic() - last_preview >= PREVIEW_EVERY_SECONDS):
                        last_preview = time.monotonic()
                        preview = await self.preview_url(job.id, event.progress, policy)
                        if preview is not None:
                            payload["preview"] = preview
                    yield ServerSentEvent(event="progress", data=json.dumps(payload))
            yield ServerSentEvent(event="end", data="finished")
        finally:
            closing.cancel()
            if waiting is not None:
                waiting.cancel()
            events.close()
            self._streams[viewer.user_id] -= 1
            if not self._streams[viewer.user_id]:
                del self._streams[viewer.user_id]

    async def preview_url(self, job_id: int, progress: Progress, policy: str | None) -> str | None:
        """A preview as a data URL, encoded once for every page that follows the job (veiled as
        `policy` says: bot/messages.py `preview_as_shown`)."""
        key = (job_id, progress.step, policy)
        if key not in self._previews:
            self._previews[key] = asyncio.ensure_future(asyncio.to_thread(preview_data_url, progress, policy))
            while len(self._previews) > 256:
                self._previews.pop(next(iter(self._previews)))
        return await asyncio.shield(self._previews[key])

    async def read_job(self, job_id: int) -> Job | None:
        async with self.bot.sessionmaker() as session:
            return await repo.get_job(session, job_id=job_id)

    def flagged_policy(self, guild_id: int | None, viewer: Viewer) -> str | None:
        """How this viewer sees flagged pictures made in a server: veiled by its policy (config.toml's
        for DMs and the local user), unless the policy is to blur and the viewer asked to see them
        (the web's age-restricted channel); None: as made."""
        policy = self.bot.rules.nsfw_policy(guild_id)
        return None if policy != WITHHOLD and viewer.show_flagged else policy

    async def act(self, request: Request) -> Response:
        """A press on a job's picture: a new job for the presser (or ❤️), as the Discord buttons do; it
        is made in the server of the job pressed on, under that server's rules."""
        viewer = viewer_of(request)
        form = await self.read_form(request, 0)
        job_id = request.path_params["job_id"]
        index_text = form.get("index") or "0"
        try:
            action = Action(str(form.get("action")))
        except ValueError:
            action = None
        if action not in WEB_ACTIONS or index_text not in DIGITS:  # one digit, as on a button
            raise HTTPException(400, "That is not something a picture can do.")
        index = int(index_text)
        back = f"/jobs/{job_id}/{index}" if form.get("from") == "picture" else f"/jobs/{job_id}"
        try:
            await self.visible_job(viewer, job_id)
            parent = await asking.finished_job(self.bot, job_id, index)
            asker = await self.asker_in(viewer, parent.guild_id)
            self.bot.rules.check_access(asker)
            self.bot.rules.check_burst(asker)
            if action == Action.FAVOURITE:
                return await self.toggle_favourite(request, viewer, parent, index, back)
            user = await asking.member_settings(self.bot, viewer.user_id)
            asked = None
            if action == Action.VARY_REGION:
                box = region_of(form)
                words = str(form.get("prompt") or parent.prompt)
                new_job = region_job(parent, index, box)
                kept = new_job.request.get("image_urls", ())
                request_read, shown = asking.one_prompt(self.bot.settings, words, "Vary (Region)", kept)
                asking.screen(self.bot.rules, asker, [shown], request_read.params.mode)
                request_read, shown = asking.one_prompt(
                    self.bot.settings, asking.personal(self.bot.rules, asker, words, user), "Vary (Region)", kept)
                new_job, asked = remix(new_job, request_read.to_dict(), shown), request_read.params.mode
            elif action == Action.ZOOM_CUSTOM:
                new_job = zoom_job(parent, index, zoom_factor(form))
            else:
                new_job = asking.job_for_press(user.variability, action, parent, index)
            job_ids = await self.submit(request, asker, user, [new_job], asked)
        except (Refused, QueueFull, PromptError, Unavailable) as error:
            self.tell(request, f"❌ {error}")
            return RedirectResponse(back, status_code=303)
        except SourceGone:
            self.tell(request, "❌ The picture this grid was made from is gone: run /imagine again.")
            return RedirectResponse(back, status_code=303)
        return RedirectResponse(f"/jobs/{job_ids[0]}", status_code=303)

    async def toggle_favourite(self, request: Request, viewer: Viewer, job: Job, index: int, back: str) -> Response:
        image_id = job.images[index].id
        async with self.bot.sessionmaker.begin() as session:
            added = await repo.add_favourite(session, user_id=viewer.user_id, image_id=image_id)
            if not added:
                await repo.remove_favourite(session, user_id=viewer.user_id, image_id=image_id)
        self.tell(request, "❤️ Added to your favourites." if added else "Taken out of your favourites.")
        return RedirectResponse(back, status_code=303)

    # --- My pictures --------------------------------------------------------------------

    async def history(self, request: Request) -> Response:
        viewer = viewer_of(request)
        text = request.query_params.get("q", "").strip()[:200]
        page = page_number(request)
        async with self.bot.sessionmaker() as session:
            jobs = await repo.list_history(session, user_id=viewer.user_id, text=text or None, limit=PAGE_SIZE + 1,
                                           offset=(page - 1) * PAGE_SIZE)
        return self.render(request, "history.html", jobs=jobs[:PAGE_SIZE], more=len(jobs) > PAGE_SIZE, page=page,
                           q=text, title="My pictures")

    async def favourites(self, request: Request) -> Response:
        viewer = viewer_of(request)
        page = page_number(request)
        async with self.bot.sessionmaker() as session:
            images = await repo.list_favourites(session, user_id=viewer.user_id, limit=PAGE_SIZE + 1,
                                                offset=(page - 1) * PAGE_SIZE)
        return self.render(request, "favourites.html", images=images[:PAGE_SIZE], more=len(images) > PAGE_SIZE,
                           page=page, title="Favourites")

    async def show_flagged(self, request: Request) -> Response:
        """The viewer's choice to see flagged pictures unblurred where the server's policy is to blur."""
        viewer_of(request)
        form = await self.read_form(request, 0)
        request.session["show_flagged"] = form.get("show") == "1"
        return RedirectResponse("/me", status_code=303)

    # --- signing in -------------------------------------------------------------------

    async def new_sign_in_link(self, user_id: int, guild_id: int | None) -> str:
        """A one-time link that signs this member in (what `/web` DMs them); it expires in
        `[web] sign_in_minutes`."""
        signed, hashed = self.links.new()
        expires = datetime.now(UTC) + timedelta(seconds=self.links.max_age)
        async with self.bot.sessionmaker.begin() as session:
            await repo.record_sign_in(session, token_hash=hashed, user_id=user_id, guild_id=guild_id,
                                      expires_at=expires)
        return f"{self.bot.settings.web.base_url}/signin/{signed}"

    async def sign_in_page(self, request: Request) -> Response:
        """A link opened: a button to press, not a sign-in yet (Discord and chat apps open links to
        preview them, and that must not use the link up)."""
        if self.local:
            return RedirectResponse("/", status_code=303)
        signed = request.path_params["signed"][:200]
        hashed, waiting = self.links.read(signed), None
        if hashed is not None:
            async with self.bot.sessionmaker() as session:
                waiting = await repo.peek_sign_in(session, token_hash=hashed)
        if waiting is None:
            raise Refusal("That sign-in link was used already or has expired: type /web in Discord for a new one.")
        user = self.bot.get_user(waiting.user_id)
        guild = self.bot.get_guild(waiting.guild_id) if waiting.guild_id is not None else None
        return self.render(request, "signin.html", signed=signed, title="Sign in",
                           who=user.display_name if user is not None else f"Discord member {waiting.user_id}",
                           where=guild.name if guild is not None else None)

    async def sign_in(self, request: Request) -> Response:
        if self.local:
            return RedirectResponse("/", status_code=303)
        form = await self.read_form(request, 0)
        hashed = self.links.read(form.get("signed") or "")
        sign_in_row = None
        if hashed is not None:
            async with self.bot.sessionmaker.begin() as session:
                sign_in_row = await repo.take_sign_in(session, token_hash=hashed)
        if sign_in_row is None:
            raise Refusal("That sign-in link was used already or has expired: type /web in Discord for a new one.")
        sign_in(request, sign_in_row.user_id, sign_in_row.guild_id)
        return RedirectResponse("/me", status_code=303)

    async def sign_out(self, request: Request) -> Response:
        await self.read_form(request, 0)
        request.session.clear()
        return self.render(request, "message.html", title="Signed out",
                           message="Signed out. Type /web in Discord to sign in again.")

    # --- a server's gallery -----------------------------------------------------------------

    async def own_gallery(self, request: Request) -> Response:
        viewer = viewer_of(request)
        if viewer.guild_id is None:
            raise Refusal("Galleries are a server's: type /web in a server to see its gallery.", 404)
        return RedirectResponse(f"/gallery/{viewer.guild_id}", status_code=303)

    async def gallery(self, request: Request) -> Response:
        """A server's pictures, newest first, for its members only (asked of Discord, through the bot):
        those made on the web there and in the channels Discord shows them (not age-restricted ones)."""
        viewer = viewer_of(request)
        guild_id = request.path_params["guild_id"]
        guild = self.bot.get_guild(guild_id)
        if guild is None:
            raise HTTPException(404, "The bot is not on that server.")
        member = await self.member(guild_id, viewer.user_id)
        if member is None:
            raise Refusal("That server's gallery is for its members: you are not one.", 403)
        try:
            self.bot.rules.check_access(Viewer(viewer.user_id, guild_id).asker())
        except Refused as refusal:
            raise Refusal(str(refusal), 403) from None
        page = page_number(request)
        images = await self.gallery_page(guild_id, self.bot.membership.visible_channels(member), page)
        return self.render(request, "gallery.html", images=images[:GALLERY_PAGE], more=len(images) > GALLERY_PAGE,
                           page=page, guild_name=guild.name, guild_id=guild_id, title=f"{guild.name} gallery")

    async def gallery_page(self, guild_id: int, channel_ids: list[int], page: int) -> list[GalleryPicture]:
        """A page of a gallery (one more picture than it shows: is there a next page?), read once for
        every member who sees the same channels and kept GALLERY_SECONDS: fifty members opening it at
        once cost one query."""
        key = (guild_id, frozenset(channel_ids), page)
        kept = self._galleries.get(key)
        if kept is not None and time.monotonic() - kept[0] < GALLERY_SECONDS:
            return kept[1]
        if key not in self._gallery_reads:  # one read for everyone who asks meanwhile
            self._gallery_reads[key] = asyncio.ensure_future(self.read_gallery(key, channel_ids))
            self._gallery_reads[key].add_done_callback(lambda _: self._gallery_reads.pop(key, None))
        return await asyncio.shield(self._gallery_reads[key])

    async def read_gallery(self, key: tuple[int, frozenset[int], int], channel_ids: list[int]) -> list[GalleryPicture]:
        guild_id, _, page = key
        async with self.bot.sessionmaker() as session:
            images = await repo.list_guild_pictures(session, guild_id=guild_id, channel_ids=channel_ids,
                                                    limit=GALLERY_PAGE + 1, offset=(page - 1) * GALLERY_PAGE)
        self._galleries[key] = (time.monotonic(), images)
        while len(self._galleries) > 1000:
            self._galleries.pop(next(iter(self._galleries)))
        return images

    async def member(self, guild_id: int, user_id: int) -> Any:
        """The user as a member of the server now (their roles with it), or None; asked of Discord
        through the bot (bot/membership.py). Discord not answering is a 503, not a refusal."""
        try:
            return await self.bot.membership.member(guild_id, user_id)
        except MembershipUnknown:
            raise Refusal("Discord did not answer whether you are a member of that server: try again in a "
                          "moment.", 503) from None

    async def acting(self, request: Request) -> tuple[Viewer, Asker]:
        """The viewer of a request that asks for something, and how the rules see them: in the server
        they signed in from, with the roles they hold there now; a member who left is turned away."""
        viewer = viewer_of(request)
        return viewer, await self.asker_in(viewer, viewer.guild_id)

    async def asker_in(self, viewer: Viewer, guild_id: int | None) -> Asker:
        """The rules' view of the viewer in a server (None: DMs, and the local user)."""
        if guild_id is None or viewer.local:
            return Viewer(viewer.user_id).asker()
        member = await self.member(guild_id, viewer.user_id)
        if member is None:
            raise Refusal("You are not a member of that server (any more): type /web in a server you are in.", 403)
        return replace(viewer, guild_id=guild_id, role_ids=frozenset(role.id for role in member.roles)).asker()

    async def may_see(self, viewer: Viewer, owner_id: int, guild_id: int | None, channel_id: int | None) -> bool:
        """A job (and its pictures) is its owner's; the members of the server it was made in see it too
        when Discord shows them its channel (not an age-restricted one), and the bot has not banned them."""
        if viewer.local or owner_id == viewer.user_id:
            return True
        if guild_id is None or viewer.user_id in self.bot.rules.server(guild_id).bans:
            return False
        member = await self.member(guild_id, viewer.user_id)
        return member is not None and self.bot.membership.sees(member, channel_id)

    # --- pictures -----------------------------------------------------------------------

    async def visible_image(self, request: Request) -> tuple[Shown, str | None]:
        """A picture the viewer may see, and how: None as made, else the policy to veil it by."""
        viewer = viewer_of(request)
        image_id = request.path_params["image_id"]
        shown = self.pictures.row(image_id)
        if shown is None and 0 < image_id <= asking.MAX_ROW_ID:
            async with self.bot.sessionmaker() as session:
                image = await repo.get_image(session, image_id=image_id)
            if image is not None:
                shown = Shown(image.id, Path(image.path), image.sha256, image.flagged, image.job.user_id,
                              image.job.guild_id, image.job.channel_id)
                self.pictures.remember(shown)
        if shown is None or not await self.may_see(viewer, shown.owner_id, shown.guild_id, shown.channel_id):
            raise HTTPException(404, "There is no such picture, or it is not yours to see.")
        return shown, (self.flagged_policy(shown.guild_id, viewer) if shown.flagged else None)

    async def thumb(self, request: Request) -> Response:
        shown, veiled = await self.visible_image(request)
        try:
            data = await self.pictures.thumbnail(shown, veiled)
        except PictureGone:
            raise HTTPException(404, "That picture was removed from the image store.") from None
        return Response(data, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})

    async def user_picture(self, request: Request) -> Response:
        """A picture a member gave (an image prompt, a blend's), by its content name: the link a
        prompt made on the web carries for each upload."""
        viewer_of(request)
        name = request.path_params["name"]
        try:
            path = self.bot.store.input_path(name)
        except ValueError:
            raise HTTPException(404, "There is no such picture.") from None
        if path.suffix not in INPUT_TYPES or not await asyncio.to_thread(path.is_file):
            raise HTTPException(404, "There is no such picture (it may have been removed after a while).")
        return FileResponse(path, media_type=INPUT_TYPES[path.suffix],
                            headers={"Cache-Control": "private, max-age=86400"})

    async def full(self, request: Request) -> Response:
        shown, veiled = await self.visible_image(request)
        try:
            data = await asyncio.to_thread(full_picture, shown.path, veiled)
        except PictureGone:
            raise HTTPException(404, "That picture was removed from the image store.") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


GALLERY_PAGE = 50  # pictures per page of a server's gallery
GALLERY_SECONDS = 2.0  # a gallery page is read again after this long (a new picture shows within it)


INPUT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}


def region_of(form: SentForm) -> tuple[float, float, float, float]:
    """The region drawn on the picture (fractions of its width and height), or a typed one."""
    if form.get("region"):
        return read_region(str(form.get("region"))[:40])
    try:
        box = tuple(float(str(form.get(side))) for side in ("left", "top", "right", "bottom"))
    except ValueError:
        raise PromptError("draw the region on the picture first") from None
    left, top, right, bottom = box
    if not all(math.isfinite(value) for value in box) or not (0 <= left < right <= 1 and 0 <= top < bottom <= 1):
        raise PromptError("the region must lie on the picture: draw it again")
    if (right - left) * (bottom - top) < 0.01:
        raise PromptError("the region is too small: draw a bigger one")
    return left, top, right, bottom


def zoom_factor(form: SentForm) -> float:
    try:
        factor = float(str(form.get("factor") or "").replace(",", ".").rstrip("xX"))
    except ValueError:
        factor = 0.0
    if not 1.0 <= factor <= 2.0:  # NaN and infinities fail this too
        raise PromptError("the zoom factor is a number from 1 to 2, like 1.5")
    return factor


def preview_data_url(progress: Progress, policy: str | None) -> str | None:
    """A progress preview as this policy shows it, as a WebP data URL (None: not shown). CPU-bound."""
    shown = preview_as_shown(progress.preview, progress.flagged, policy)
    if shown is None:
        return None
    return "data:image/webp;base64," + base64.b64encode(encode_preview(shown)).decode("ascii")


def page_number(request: Request) -> int:
    """?page=N, from 1 to 10,000 (anything else: the first page)."""
    text = request.query_params.get("page", "1")
    if not (text.isascii() and text.isdigit() and len(text) <= 5):
        return 1
    return min(max(int(text), 1), 10_000)


def web_job_title(job: Job) -> str:
    """The bot's words for a job, without the Discord mention."""
    return job_title(job).replace(f" by <@{job.user_id}>", "").replace(f"<@{job.user_id}>", "")
