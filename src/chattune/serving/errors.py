"""Map chattune errors and request validation failures to OpenAI-shaped HTTP errors, for instances and gateways."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chattune.errors import ChattuneError
from chattune.serving.disconnect import ClientDisconnected, closed_response
from chattune.serving.protocol import ErrorResponse, error_body

log = logging.getLogger(__name__)

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


_DESCRIPTIONS = {
    400: "The body is not JSON or not UTF-8, or the prompt and max_tokens exceed the model's context",
    401: "Missing or invalid key",
    404: "Unknown model (or, at a gateway, unknown deployment)",
    408: "The deployment did not answer within request_timeout_ms",
    413: "Request body over the size limit",
    415: "The body is not sent as JSON (Content-Type other than application/json)",
    422: "The body does not match the schema (wrong types, unknown fields, values out of range)",
    429: "Every instance is at max_concurrent_requests_per_instance; retry after Retry-After seconds",
    502: "No instance of the deployment could be reached",
    503: "The model is loading, or no deployment is ready or receives traffic",
}


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for these error statuses, each documented in OpenAI's shape (``ErrorResponse``), which
    is what the handlers below answer, rather than FastAPI's default ``HTTPValidationError``."""
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    type_ = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = error_body(message, type_, code, param)
    return JSONResponse(body, status_code=status, headers=headers)


class _TooLarge(StarletteHTTPException):
    """A request body over the limit, found while it was being read. An HTTPException, so that FastAPI's body parsing
    passes it on: any other exception there became a 400 "There was an error parsing the body" (a chunked body over
    the limit sent to an instance)."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ChattuneError)
    async def _chattune(request: Request, exc: ChattuneError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # as OpenAI answers it: a 400, not a field error at "0"
            reason = (first.get("ctx") or {}).get("error", "JSON decode error")
            return error_response(400, f"the body is not valid JSON: {reason}", "invalid_json")
        content_type = request.headers.get("content-type", "")
        if tuple(first.get("loc", ())) == ("body",) and first.get("type") != "missing" and not _is_json(content_type):
            # FastAPI leaves a body not sent as JSON unparsed, and it fails as "not a dictionary": say what is wrong.
            return error_response(
                415,
                f"send the body as JSON with Content-Type: application/json, not {content_type or 'no Content-Type'!r}",
                "unsupported_media_type",
            )
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return error_response(422, problems or "invalid request", "invalid_request", ".".join(loc) or None)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return closed_response()  # nobody reads it; /metrics counts it as 499

    @app.exception_handler(_TooLarge)
    async def _too_large(request: Request, exc: _TooLarge) -> JSONResponse:
        return error_response(413, str(exc.detail), "request_too_large", headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return error_response(500, "internal server error; see the instance log", "internal_error")


def _is_json(content_type: str) -> bool:
    """FastAPI's own rule for parsing a body as JSON: application/json or a +json type."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


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
