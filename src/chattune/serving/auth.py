"""Bearer-key checks for the gateway (the endpoint's keys) and for instances (the gateway's token).

Every route except the health routes needs ``Authorization: Bearer <key>``; a refusal is a 401 in OpenAI's error
shape with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response

from chattune.serving.errors import error_response
from chattune.serving.keys import bearer

PUBLIC_PATHS = frozenset({"/health/live", "/health/ready"})


def require_key(app: FastAPI, accepts: Callable[[str | None], bool], refusal: str) -> None:
    """Refuse every request outside PUBLIC_PATHS whose bearer key ``accepts`` rejects, with ``refusal`` as the
    message."""

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path in PUBLIC_PATHS or accepts(bearer(request.headers.get("authorization"))):
            return await call_next(request)
        return error_response(401, refusal, "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
