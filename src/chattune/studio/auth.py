"""Who may use the studio: the bearer of the studio token, or a browser session opened with it.

One pure ASGI middleware guards every route but the public ones, so a route added later is guarded by default. API
clients send ``Authorization: Bearer TOKEN``; a browser logs in once (``POST /api/v1/session`` with the token) and
then carries an HttpOnly, SameSite=Strict session cookie. A request that changes state on the strength of that
cookie must come from the studio's own origin (its ``Origin``, or ``Sec-Fetch-Site: same-origin``): a page of
another site cannot make the browser act for the user. Sessions live in the server's memory and end with it, on
logout, after ``SESSION_TTL_S``, or when the token is rotated (a session is bound to the token it was opened with).
"""

from __future__ import annotations

import secrets
import time
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from chattune.errors import AuthError, ChattuneError, CrossSiteError
from chattune.serving.errors import coded_response
from chattune.serving.keys import bearer, hash_key
from chattune.studio.token import StudioToken

SESSION_COOKIE = "chattune_studio_session"
SESSION_TTL_S = 12 * 3600
PUBLIC_PATHS = frozenset({"/health", "/api/v1/session", "/login"})
PUBLIC_PREFIXES = ("/static/",)  # the vendored libraries: public code, nothing of the workspace
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Sessions:
    """Browser sessions opened with the token: random ids, held in memory only, each bound to the token's hash."""

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self._open: dict[str, tuple[float, str]] = {}  # id -> (expiry, hash of the token it was opened with)

    def open(self, token_hash: str) -> str:
        """A new session id, opened with the token whose hash is ``token_hash``."""
        sid = secrets.token_urlsafe(32)
        self._open[sid] = (time.monotonic() + self.ttl_s, token_hash)
        return sid

    def valid(self, sid: str | None, token_hashes: dict[str, str]) -> bool:
        """Whether ``sid`` is an open, unexpired session of the current token (a rotated token ends its sessions)."""
        expiry, opened_with = self._open.get(sid or "", (0.0, ""))
        if expiry < time.monotonic() or opened_with not in token_hashes.values():
            self._open.pop(sid or "", None)
            return False
        return True

    def close(self, sid: str | None) -> None:
        """End one session (logout)."""
        self._open.pop(sid or "", None)


def open_session(response: Response, sessions: Sessions, token: str) -> None:
    """Open a browser session for the bearer of ``token``: its HttpOnly, SameSite=Strict cookie on ``response``."""
    sid = sessions.open(hash_key(token))
    response.set_cookie(SESSION_COOKIE, sid, max_age=int(SESSION_TTL_S), httponly=True, samesite="strict", path="/")


def close_session(response: Response, sessions: Sessions, headers: Headers) -> None:
    """End the request's browser session and clear its cookie on ``response``."""
    sessions.close(session_id(headers))
    response.delete_cookie(SESSION_COOKIE, path="/")


def session_id(headers: Headers) -> str | None:
    """The studio session id in a request's cookies, if any."""
    cookie = SimpleCookie()
    cookie.load(headers.get("cookie", ""))
    morsel = cookie.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def same_origin(headers: Headers) -> bool:
    """Whether a browser request comes from the studio's own pages (its Origin is this host, or the browser says so)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin in {f"http://{headers.get('host')}", f"https://{headers.get('host')}"}
    return headers.get("sec-fetch-site") == "same-origin"


class StudioAuth:
    """ASGI middleware: the token as a bearer key, or a session cookie (same-origin for state changes).

    Args:
        app: The studio app.
        token: The workspace's studio token.
        sessions: The open browser sessions.
    """

    def __init__(self, app: ASGIApp, *, token: StudioToken, sessions: Sessions) -> None:
        self.app = app
        self.token = token
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass what the token or a session allows; answer 401 (no credentials) or 403 (a cross-site state change)."""
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no route of ours takes a websocket
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = Headers(scope=scope)
        refusal: tuple[type[ChattuneError], str] | None = None
        if self.token.accepts(bearer(headers.get("authorization"))):
            pass  # an API client: browsers never add this header on their own, so no cross-site check
        elif (
            scope["path"] in PUBLIC_PATHS
            or scope["path"].startswith(PUBLIC_PREFIXES)
            or self.sessions.valid(session_id(headers), self.token.hashes())
        ):
            if scope["method"] not in SAFE_METHODS and not same_origin(headers):
                refusal = (CrossSiteError, "a state-changing request must come from the studio's own pages")
        else:
            refusal = (AuthError, "missing or invalid studio token; send `Authorization: Bearer TOKEN` or log in")
        if refusal is None:
            await self.app(scope, receive, send)
            return
        if refusal[0] is AuthError and scope["method"] == "GET" and not scope["path"].startswith("/api/"):
            await RedirectResponse("/login", status_code=303)(scope, receive, send)  # a page: to the login form
            return
        headers_out = {"WWW-Authenticate": "Bearer"} if refusal[0] is AuthError else None
        await coded_response(refusal[0], refusal[1], headers=headers_out)(scope, receive, send)
