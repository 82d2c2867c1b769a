"""Map chattune errors and request validation failures to OpenAI-shaped HTTP errors, for instances and gateways."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chattune.errors import ChattuneError
from chattune.serving.protocol import error_body

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = error_body(message, _TYPES.get(status, "server_error"), code, param)
    return JSONResponse(body, status_code=status, headers=headers)


class _TooLarge(Exception):
    """A request body over the limit, found while it was being read."""


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChattuneError)
    async def _chattune(request: Request, exc: ChattuneError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error_response(422, problems or "invalid request", "invalid_request", ".".join(loc) or None)

    @app.exception_handler(_TooLarge)
    async def _too_large(request: Request, exc: Exception) -> JSONResponse:
        return error_response(413, str(exc), "request_too_large", headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error; see the instance log", "internal_error")


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 in OpenAI's shape, before it is read
    whole (a declared Content-Length is checked first; a chunked body is counted as it arrives)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = error_response(
            413, f"request body over {self.max_bytes} bytes", "request_too_large", headers={"Connection": "close"}
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await too_big(scope, receive, send)
            return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge(f"request body over {self.max_bytes} bytes")
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:
            if not started:
                await too_big(scope, receive, send)
