"""Who is looking: the signed-in Discord member, or the one local user; and the CSRF token.

Sessions live in a signed cookie (Starlette's SessionMiddleware: itsdangerous, HttpOnly,
SameSite=Lax; Secure behind an https `public_url`). It holds the member's Discord id, the
server they signed in from (whose rules apply to what they ask for here), when they signed
in, the CSRF token, and whether they asked to see flagged pictures. Their membership and
roles are asked of Discord through the bot (bot/membership.py), never kept in the cookie.
The bot token never reaches a browser: nothing from Discord but ids goes into a page.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from bot.rules import Asker

LOCAL_USER_ID = 1  # the web app alone: one user, never a Discord id (those start far above)
SECRET_ENV = "IMAGINE_WEB_SECRET"  # the cookie-signing key; else kept in data/web-secret
MIN_SECRET_LENGTH = 32
SESSION_DAYS = 14  # a session ends this long after its sign-in, however active
_request_ids = itertools.count(-1, -1)  # a web request's id for the burst allowance: never an interaction's


class NotSignedIn(Exception):
    """A page that needs a member, asked for by a browser with no session."""


class CsrfFailed(Exception):
    """A form sent without this session's token (another site's form, or an expired page)."""


@dataclass(frozen=True)
class Viewer:
    """Whoever a request is from: `user_id` for jobs, history and favourites; `guild_id` and
    `role_ids` for the rules (the server they signed in from; None in DMs and for the local user)."""

    user_id: int
    guild_id: int | None = None
    role_ids: frozenset[int] = frozenset()
    local: bool = False
    show_flagged: bool = False  # asked to see flagged pictures unblurred (where the server allows)

    def asker(self) -> Asker:
        """The rules' view of one request from this viewer (each counts once against the burst allowance)."""
        return Asker(self.user_id, self.guild_id, None, None, self.role_ids, next(_request_ids))


def viewer_of(request: Request) -> Viewer:
    """The viewer of a request (their roles are not known yet: the app asks the bot when it needs
    them); NotSignedIn when the app serves Discord members and none signed in, or the session is
    older than SESSION_DAYS."""
    show_flagged = bool(request.session.get("show_flagged"))
    if request.app.state.local:
        return Viewer(LOCAL_USER_ID, local=True, show_flagged=show_flagged)
    user_id, guild_id, signed_at = (request.session.get(key) for key in ("user_id", "guild_id", "signed_at"))
    if not isinstance(user_id, int) or not isinstance(signed_at, int | float):
        raise NotSignedIn
    if time.time() - signed_at > SESSION_DAYS * 86_400:
        request.session.clear()
        raise NotSignedIn
    return Viewer(user_id, guild_id if isinstance(guild_id, int) else None, show_flagged=show_flagged)


def csrf_token(request: Request) -> str:
    """This session's token, put in every form (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_origin(request: Request) -> None:
    """A browser that says where a form came from must say this site (or, behind a proxy,
    `public_url`'s origin); else CsrfFailed."""
    origin = request.headers.get("origin")
    own = {f"{request.url.scheme}://{request.url.netloc}", request.app.state.public_origin}
    if origin is not None and origin.lower() not in own:
        raise CsrfFailed


def check_csrf(request: Request, sent: object) -> None:
    """A form's token must be this session's, and a browser that says where the form came from
    must say this site; else CsrfFailed."""
    expected = request.session.get("csrf")
    check_origin(request)
    if not isinstance(expected, str) or not isinstance(sent, str) or not hmac.compare_digest(expected, sent):
        raise CsrfFailed


class SignInLinks:
    """The token a `/web` link carries: random, signed with the app's key and timestamped (so a
    forged or stale one is turned away before the database is asked), and recorded by its hash
    (storage: `record_sign_in`, `take_sign_in`) so that it works once."""

    def __init__(self, secret: str, minutes: float) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="imagine-web-sign-in")
        self.max_age = minutes * 60

    def new(self) -> tuple[str, str]:
        """A fresh token for a link, and the hash to record it by."""
        token = secrets.token_urlsafe(32)
        return self._signer.dumps(token), token_hash(token)

    def read(self, signed: str) -> str | None:
        """The hash of the token a link carries, if its signature holds and it is young enough."""
        try:
            token = self._signer.loads(signed[:200], max_age=self.max_age)
        except BadSignature:  # SignatureExpired is one
            return None
        return token_hash(token) if isinstance(token, str) else None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(request: Request, user_id: int, guild_id: int | None) -> None:
    """A new session for the member a sign-in link was for (whatever the browser had before is dropped)."""
    request.session.clear()
    request.session.update(user_id=user_id, guild_id=guild_id, signed_at=int(time.time()),
                           csrf=secrets.token_urlsafe(32))


def public_origin(public_url: str) -> str | None:
    """`https://host[:port]` of `[web] public_url` (what browsers behind a reverse proxy call this app)."""
    if not public_url:
        return None
    parts = urlsplit(public_url.lower())  # as browsers say an origin: lower case, no default port
    default = {"http": 80, "https": 443}[parts.scheme]
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port not in (None, default) else "")


def secret_key(data_dir: Path) -> str:
    """The key that signs session cookies and sign-in links: $IMAGINE_WEB_SECRET, else one made
    once and kept (readable by this user only) in `data_dir`/web-secret, so sessions outlive a
    restart. A key too short to be one (a file cut short by a crash) is made again."""
    if from_env := os.environ.get(SECRET_ENV, "").strip():
        if len(from_env) < MIN_SECRET_LENGTH:
            raise ValueError(f"${SECRET_ENV} is too short: give it at least {MIN_SECRET_LENGTH} random characters")
        return from_env
    path = data_dir / "web-secret"
    try:
        kept = path.read_text(encoding="ascii").strip()
    except (FileNotFoundError, UnicodeDecodeError):
        kept = ""
    if len(kept) >= MIN_SECRET_LENGTH:
        return kept
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    partial = data_dir / f".web-secret.{os.getpid()}"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)  # whole or not at all
    return key
