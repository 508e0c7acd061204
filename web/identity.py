"""Who is looking: the signed-in Discord member, or the one local user; and the CSRF token.

Sessions live in a signed cookie (Starlette's SessionMiddleware: itsdangerous, HttpOnly,
SameSite=Lax; Secure behind an https `public_url`). It holds the member's Discord id, the
server they signed in from (whose rules apply to what they ask for here) and their roles
there when they signed in, the CSRF token, and whether they asked to see flagged pictures.
The bot token never reaches a browser: nothing from Discord but ids goes into a page.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from bot.rules import Asker

LOCAL_USER_ID = 1  # the web app alone: one user, never a Discord id (those start far above)
SECRET_ENV = "IMAGINE_WEB_SECRET"  # the cookie-signing key; else kept in data/web-secret
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
    """The viewer of a request; NotSignedIn when the app serves Discord members and none signed in."""
    show_flagged = bool(request.session.get("show_flagged"))
    if request.app.state.local:
        return Viewer(LOCAL_USER_ID, local=True, show_flagged=show_flagged)
    user_id = request.session.get("user_id")
    if not isinstance(user_id, int):
        raise NotSignedIn
    guild_id = request.session.get("guild_id")
    roles = request.session.get("role_ids") or []
    return Viewer(user_id, guild_id if isinstance(guild_id, int) else None,
                  frozenset(role for role in roles if isinstance(role, int)), show_flagged=show_flagged)


def csrf_token(request: Request) -> str:
    """This session's token, put in every form (made on first use)."""
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


def check_csrf(request: Request, sent: object) -> None:
    """A form's token must be this session's, and a browser that says where the form came from
    must say this site; else CsrfFailed."""
    expected = request.session.get("csrf")
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        raise CsrfFailed
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


def sign_in(request: Request, user_id: int, guild_id: int | None, role_ids: list[int]) -> None:
    """A new session for the member a sign-in link was for (whatever the browser had before is dropped)."""
    request.session.clear()
    request.session.update(user_id=user_id, guild_id=guild_id, role_ids=role_ids[:250],
                           csrf=secrets.token_urlsafe(32))


def secret_key(data_dir: Path) -> str:
    """The key that signs session cookies and sign-in links: $IMAGINE_WEB_SECRET, else one made
    once and kept (readable by this user only) in `data_dir`/web-secret, so sessions outlive a restart."""
    if from_env := os.environ.get(SECRET_ENV, "").strip():
        return from_env
    path = data_dir / "web-secret"
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return path.read_text(encoding="ascii").strip()
    with os.fdopen(descriptor, "w", encoding="ascii") as file:
        file.write(key)
    return key
