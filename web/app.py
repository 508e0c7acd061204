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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from bot import asking
from bot.asking import BLEND_DIMENSIONS, JOB_ACTIONS, Unavailable, Upload, read_region
from bot.buttons import Action
from bot.fetch import FetchError, readable_size
from bot.messages import WITHHOLD, job_title, preview_as_shown
from bot.rules import Asker, Refused
from generation.executor import JobProgress, JobStarted, Progress
from generation.prompt import MAX_IMAGE_PROMPTS, GenerationRequest, Params, PromptError, apply_suffix
from generation.queue import QueueFull
from storage import repository as repo
from storage.job_requests import SourceGone, blend_job, imagine_job, region_job, remix, zoom_job
from storage.models import Image, Job, JobState, User
from storage.repository import NewJob
from web.identity import (
    CsrfFailed,
    NotSignedIn,
    SignInLinks,
    Viewer,
    check_csrf,
    csrf_token,
    secret_key,
    sign_in,
    viewer_of,
)
from web.pictures import PictureGone, encode_preview, full_picture, parameters_text, thumbnail

if TYPE_CHECKING:
    from bot.bot import ImagineBot

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGE_SIZE = 24  # jobs per page of My pictures
MAX_FORM_OVERHEAD = 64 * 1024  # a form's fields besides its pictures
PREVIEW_EVERY_SECONDS = 0.5  # previews sent to one page at most this often (each is a WebP to encode)
WAITING_EVERY_SECONDS = 2.0  # a queued job's position, sent again this often
PRESS_LABELS = {
    Action.UPSCALE_SUBTLE: "Upscale (Subtle)", Action.UPSCALE_CREATIVE: "Upscale (Creative)",
    Action.VARY_SUBTLE: "Vary (Subtle)", Action.VARY_STRONG: "Vary (Strong)", Action.ZOOM_2: "Zoom Out 2x",
    Action.ZOOM_15: "Zoom Out 1.5x", Action.SQUARE: "Make Square", Action.PAN_LEFT: "⬅️ Pan",
    Action.PAN_RIGHT: "➡️ Pan", Action.PAN_UP: "⬆️ Pan", Action.PAN_DOWN: "⬇️ Pan",
}
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
            Route("/jobs/{job_id:int}", pages.job),
            Route("/jobs/{job_id:int}/events", pages.job_events),
            Route("/jobs/{job_id:int}/act", pages.act, methods=["POST"]),
            Route("/jobs/{job_id:int}/{index:int}", pages.picture),
            Route("/me", pages.history),
            Route("/me/favourites", pages.favourites),
            Route("/me/flagged", pages.show_flagged, methods=["POST"]),
            Route("/gallery", pages.own_gallery),
            Route("/gallery/{guild_id:int}", pages.gallery),
            Route("/signin/{signed}", pages.sign_in_page),
            Route("/signin", pages.sign_in, methods=["POST"]),
            Route("/signout", pages.sign_out, methods=["POST"]),
            Route("/images/{image_id:int}/thumb.webp", pages.thumb),
            Route("/images/{image_id:int}/full.png", pages.full),
            Route("/inputs/{name}", pages.user_picture),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ],
        middleware=[Middleware(SessionMiddleware, secret_key=secret, session_cookie="imagine_session",
                               max_age=14 * 86_400, same_site="lax", https_only=https)],
        exception_handlers={NotSignedIn: pages.not_signed_in, CsrfFailed: pages.csrf_failed,
                            HTTPException: pages.http_error, Refusal: pages.refusal},
    )
    app.state.local = local
    app.state.pages = pages
    return app


class Pages:
    """The routes' handlers, over the bot's services."""

    def __init__(self, bot: ImagineBot, *, local: bool, cache: Path, links: SignInLinks) -> None:
        self.bot = bot
        self.local = local
        self.cache = cache
        self.links = links
        self._members: dict[tuple[int, int], tuple[float, bool]] = {}  # (guild, user) -> (checked at, member)
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
        return self.templates.TemplateResponse(request, template, {"viewer": viewer, "local": self.local,
                                                                   "csrf": csrf_token(request), "notice": notice,
                                                                   **context}, status_code=status)

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
        viewer = viewer_of(request)
        form = await self.read_form(request, MAX_IMAGE_PROMPTS)
        prompt = str(form.get("prompt") or "")
        uploads = form.pictures
        try:
            if not prompt.strip():
                raise PromptError("the prompt is empty: describe what to draw")
            placeholders = [f"https://upload.invalid/{number}" for number in range(len(uploads))]
            requests = asking.read_prompt(self.bot.settings, prompt, placeholders)
            asker = viewer.asker()
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
        viewer = viewer_of(request)
        form = await self.read_form(request, 5)
        uploads = form.pictures
        prompt = str(form.get("prompt") or "")
        dimensions = str(form.get("dimensions") or "square")
        try:
            if not 2 <= len(uploads) <= 5:
                raise PromptError("a blend takes 2 to 5 pictures")
            if dimensions not in BLEND_DIMENSIONS:
                raise PromptError(f"the shape is one of {', '.join(BLEND_DIMENSIONS)}")
            aspect = BLEND_DIMENSIONS[dimensions]
            asker = viewer.asker()
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
        async with request.form(max_files=max_pictures, max_fields=20, max_part_size=MAX_FORM_OVERHEAD) as form:
            check_csrf(request, form.get("csrf"))
            fields = {key: value for key, value in reversed(form.multi_items()) if isinstance(value, str)}
            pictures = []
            for item in form.getlist("images"):
                if isinstance(item, UploadFile) and (item.filename or item.size):  # none chosen: one empty part
                    data = await item.read(max_bytes + 1)
                    name = f"upload-{len(pictures)}"
                    pictures.append(Upload(name, item.filename or name, len(data), item.content_type, data))
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
        """A job the viewer may see (theirs, or one made in the server they signed in from); else 404."""
        job = None
        if 0 < job_id <= asking.MAX_ROW_ID:
            async with self.bot.sessionmaker() as session:
                job = await repo.get_job(session, job_id=job_id)
        if job is None or not await self.may_see(viewer, job):
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
        preview), then `end`; a job already over sends `end` at once (the page then reloads)."""
        viewer = viewer_of(request)
        job = await self.visible_job(viewer, request.path_params["job_id"])
        return EventSourceResponse(self.follow(job, viewer), ping=15, send_timeout=30)

    async def follow(self, job: Job, viewer: Viewer) -> AsyncIterator[ServerSentEvent]:
        events = self.bot.jobs.events(job.id)  # listening before the state is read again: nothing missed
        try:
            # a page left at once (the stream cancelled) must not drop a connection mid-read
            current = await asyncio.shield(self.read_job(job.id))
            if current is None or current.state not in (JobState.QUEUED, JobState.RUNNING):
                yield ServerSentEvent(event="end", data=current.state.value if current else "gone")
                return
            if current.state == JobState.QUEUED:
                yield ServerSentEvent(event="waiting", data=self.bot.delivery.waiting_text(job.id))
            last_preview = 0.0
            policy = self.flagged_policy(current, viewer)
            iterator = aiter(events)
            while True:
                try:
                    event = await asyncio.wait_for(anext(iterator), WAITING_EVERY_SECONDS)
                except TimeoutError:
                    if self.bot.jobs.position(job.id) is not None:
                        yield ServerSentEvent(event="waiting", data=self.bot.delivery.waiting_text(job.id))
                    continue
                except StopAsyncIteration:
                    break
                if isinstance(event, JobStarted):
                    yield ServerSentEvent(event="progress", data=json.dumps({"percent": 0}))
                elif isinstance(event, JobProgress):
                    progress = event.progress
                    payload: dict[str, Any] = {"percent": progress.percent}
                    if progress.preview is not None and time.monotonic() - last_preview >= PREVIEW_EVERY_SECONDS:
                        last_preview = time.monotonic()
                        data = await asyncio.to_thread(self.preview_bytes, progress, policy)
                        if data is not None:
                            payload["preview"] = "data:image/webp;base64," + base64.b64encode(data).decode("ascii")
                    yield ServerSentEvent(event="progress", data=json.dumps(payload))
            yield ServerSentEvent(event="end", data="finished")
        finally:
            events.close()

    async def read_job(self, job_id: int) -> Job | None:
        async with self.bot.sessionmaker() as session:
            return await repo.get_job(session, job_id=job_id)

    def flagged_policy(self, job: Job, viewer: Viewer) -> str | None:
        """How this viewer sees a job's flagged pictures: veiled by the server's policy (config.toml's
        for DMs and the local user), unless the policy is to blur and the viewer asked to see them
        (the web's age-restricted channel); None: as made."""
        policy = self.bot.rules.nsfw_policy(job.guild_id)
        return None if policy != WITHHOLD and viewer.show_flagged else policy

    @staticmethod
    def preview_bytes(progress: Progress, policy: str | None) -> bytes | None:
        shown = preview_as_shown(progress.preview, progress.flagged, policy)
        return encode_preview(shown) if shown is not None else None

    async def act(self, request: Request) -> Response:
        """A press on a job's picture: a new job for the presser (or ❤️), as the Discord buttons do."""
        viewer = viewer_of(request)
        form = await self.read_form(request, 0)
        job_id = request.path_params["job_id"]
        try:
            action = Action(str(form.get("action")))
            index = int(str(form.get("index") or "0"))
        except ValueError:
            raise HTTPException(400, "That is not something a picture can do.") from None
        if action not in WEB_ACTIONS or not 0 <= index <= 9:
            raise HTTPException(400, "That is not something a picture can do.")
        back = f"/jobs/{job_id}/{index}" if form.get("from") == "picture" else f"/jobs/{job_id}"
        asker = viewer.asker()
        try:
            self.bot.rules.check_access(asker)
            self.bot.rules.check_burst(asker)
            await self.visible_job(viewer, job_id)
            parent = await asking.finished_job(self.bot, job_id, index)
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

    async def new_sign_in_link(self, user_id: int, guild_id: int | None, role_ids: list[int]) -> str:
        """A one-time link that signs this member in (what `/web` DMs them); it expires in
        `[web] sign_in_minutes`."""
        signed, hashed = self.links.new()
        expires = datetime.now(UTC) + timedelta(seconds=self.links.max_age)
        async with self.bot.sessionmaker.begin() as session:
            await repo.record_sign_in(session, token_hash=hashed, user_id=user_id, guild_id=guild_id,
                                      role_ids=role_ids, expires_at=expires)
        return f"{self.bot.settings.web.base_url}/signin/{signed}"

    async def sign_in_page(self, request: Request) -> Response:
        """A link opened: a button to press, not a sign-in yet (Discord and chat apps open links to
        preview them, and that must not use the link up)."""
        if self.local:
            return RedirectResponse("/", status_code=303)
        return self.render(request, "signin.html", signed=request.path_params["signed"][:200], title="Sign in")

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
        sign_in(request, sign_in_row.user_id, sign_in_row.guild_id, list(sign_in_row.role_ids))
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
        """A server's pictures, newest first, for its members only (asked of Discord, through the bot)."""
        viewer = viewer_of(request)
        guild_id = request.path_params["guild_id"]
        guild = self.bot.get_guild(guild_id) if 0 < guild_id <= asking.MAX_ROW_ID else None
        if guild is None:
            raise HTTPException(404, "The bot is not on that server.")
        if not await self.is_member(guild_id, viewer.user_id):
            raise Refusal("That server's gallery is for its members: you are not one.", 403)
        try:
            self.bot.rules.check_access(Viewer(viewer.user_id, guild_id).asker())
        except Refused as refusal:
            raise Refusal(str(refusal), 403) from None
        page = page_number(request)
        async with self.bot.sessionmaker() as session:
            images = await repo.list_guild_pictures(session, guild_id=guild_id, limit=GALLERY_PAGE + 1,
                                                    offset=(page - 1) * GALLERY_PAGE)
        return self.render(request, "gallery.html", images=images[:GALLERY_PAGE], more=len(images) > GALLERY_PAGE,
                           page=page, guild_name=guild.name, guild_id=guild_id, title=f"{guild.name} gallery")

    async def may_see(self, viewer: Viewer, job: Job) -> bool:
        """A job is its owner's, and visible to the members of the server it was made in."""
        if viewer.local or job.user_id == viewer.user_id:
            return True
        return job.guild_id is not None and await self.is_member(job.guild_id, viewer.user_id)

    async def is_member(self, guild_id: int, user_id: int) -> bool:
        """Whether the user is a member of the server now: asked of Discord (through the bot's
        cache, else its API) and the answer kept a few minutes."""
        known = self._members.get((guild_id, user_id))
        if known is not None and time.monotonic() - known[0] < MEMBERSHIP_SECONDS:
            return known[1]
        guild = self.bot.get_guild(guild_id)
        member = guild.get_member(user_id) if guild is not None else None
        if member is None and guild is not None:
            try:
                member = await guild.fetch_member(user_id)
            except Exception as error:  # NotFound: not a member; anything else: not known to be one
                log.info("membership of user %s in guild %s: %s", user_id, guild_id, error)
        self._members[(guild_id, user_id)] = (time.monotonic(), member is not None)
        while len(self._members) > 10_000:
            self._members.pop(next(iter(self._members)))
        return member is not None

    # --- pictures -----------------------------------------------------------------------

    async def visible_image(self, request: Request) -> tuple[Image, str | None]:
        """An image the viewer may see, and how: None as made, else the policy to veil it by."""
        viewer = viewer_of(request)
        image_id = request.path_params["image_id"]
        async with self.bot.sessionmaker() as session:
            image = await session.get(Image, image_id) if 0 < image_id <= asking.MAX_ROW_ID else None
            job = await repo.get_job(session, job_id=image.job_id) if image is not None else None
        if image is None or job is None or not await self.may_see(viewer, job):
            raise HTTPException(404, "There is no such picture, or it is not yours to see.")
        return image, self.veiled(image, job, viewer)

    def veiled(self, image: Image, job: Job, viewer: Viewer) -> str | None:
        return self.flagged_policy(job, viewer) if image.flagged else None

    async def thumb(self, request: Request) -> Response:
        image, veiled = await self.visible_image(request)
        try:
            path = await asyncio.to_thread(thumbnail, Path(image.path), self.cache, f"{image.sha256[:16]}-{image.id}",
                                           veiled)
        except PictureGone:
            raise HTTPException(404, "That picture was removed from the image store.") from None
        return FileResponse(path, media_type="image/webp", headers={"Cache-Control": "private, max-age=86400"})

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
        image, veiled = await self.visible_image(request)
        try:
            data = await asyncio.to_thread(full_picture, Path(image.path), veiled)
        except PictureGone:
            raise HTTPException(404, "That picture was removed from the image store.") from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


MEMBERSHIP_SECONDS = 300  # how long "is a member of that server" is believed before Discord is asked again
GALLERY_PAGE = 50  # pictures per page of a server's gallery


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


def page_number(request: Request) -> int:
    text = request.query_params.get("page", "1")
    return min(int(text), 10_000) if text.isdigit() and int(text) > 0 else 1


def web_job_title(job: Job) -> str:
    """The bot's words for a job, without the Discord mention."""
    return job_title(job).replace(f" by <@{job.user_id}>", "").replace(f"<@{job.user_id}>", "")
