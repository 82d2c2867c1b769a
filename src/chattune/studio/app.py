"""The studio server: one FastAPI app, ``/api/v1`` over the workspace, guarded by the studio token.

Run by ``chattune studio`` on loopback (127.0.0.1:8400 by default). The OpenAPI document is served at
``/api/v1/openapi.json`` (to the token's bearer, as everything but ``/health`` and the login route).
"""

from __future__ import annotations

from fastapi import FastAPI

from chattune.serving.app import MAX_BODY_BYTES
from chattune.serving.errors import BodyLimit, documented_errors, install_error_handlers
from chattune.studio.api import add_api
from chattune.studio.auth import Sessions, StudioAuth
from chattune.studio.pages import add_pages
from chattune.studio.token import StudioToken
from chattune.workspace import Workspace

DEFAULT_PORT = 8400


def create_studio(ws: Workspace, token: StudioToken | None = None) -> FastAPI:
    """The studio app over workspace ``ws`` (its token: the workspace's own unless given)."""
    token = token or StudioToken(ws.settings.home)
    sessions = Sessions()
    app = FastAPI(
        title="chattune studio",
        version="0.1.0",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=documented_errors(401),
    )
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(StudioAuth, token=token, sessions=sessions)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    add_api(app, ws, token, sessions)
    add_pages(app, ws, token, sessions)
    return app
