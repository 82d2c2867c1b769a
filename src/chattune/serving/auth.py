"""Bearer-key checks for the gateway (the endpoint's keys) and for instances (the gateway's token).

One pure ASGI middleware guards every route of an app but an explicit list of public paths (the health probes):
a route added later is guarded by default. A refusal is a 401 in OpenAI's error shape with
``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from chattune.errors import AuthError
from chattune.serving.errors import coded_response
from chattune.serving.keys import bearer

# Open to anyone: what a load balancer or the gateway's supervisor probes.
PUBLIC_PATHS = frozenset({"/health/live", "/health/ready"})


class BearerAuth:
    """ASGI middleware: requests outside ``public_paths`` need a bearer key that ``accepts`` takes.

    Fails closed: any connection type but the server's own lifespan messages is checked, websockets included.

    Args:
        app: The application guarded.
        accepts: Whether a presented key (None: none presented) opens the app.
        refusal: The 401's message, telling the caller what key to send.
        public_paths: Exact paths open without a key.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        accepts: Callable[[str | None], bool],
        refusal: str,
        public_paths: Collection[str] = PUBLIC_PATHS,
    ) -> None:
        self.app = app
        self.accepts = accepts
        self.refusal = refusal
        self.public_paths = frozenset(public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass lifespan events, public paths and requests with an accepted bearer key on to the app; refuse the rest.

        A refused HTTP request gets a 401 in OpenAI's shape; a websocket is closed as a policy violation.
        """
        if scope["type"] == "lifespan" or route_path(scope) in self.public_paths:
            await self.app(scope, receive, send)
            return
        if self.accepts(bearer(Headers(scope=scope).get("authorization"))):
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # no route of ours takes one; a websocket is closed as policy violation
            await send({"type": "websocket.close", "code": 1008})
            return
        refused = coded_response(AuthError, self.refusal, headers={"WWW-Authenticate": "Bearer"})
        await refused(scope, receive, send)


def route_path(scope: Scope) -> str | None:
    """The path the app routes on: the request's path less the server's ``root_path``.

    Behind Ray Serve's proxy the path is ``/ENDPOINT/DEPLOYMENT/health/ready`` with ``root_path`` the route prefix
    (a server's setting, never the client's); Starlette's router strips it the same way.
    """
    path, root = scope.get("path"), scope.get("root_path") or ""
    if path is not None and root and path.startswith(root):
        return path[len(root) :] or "/"
    return path
