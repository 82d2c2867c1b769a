"""Map chattune errors and request validation failures to OpenAI-shaped HTTP errors, for instances and gateways.

Statuses and OpenAI error types come from the one error table, ``chattune.errors.ERROR_CODES``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chattune.errors import (
    ChattuneError,
    InvalidJSONError,
    InvalidRequestError,
    RequestTooLargeError,
    UnsupportedMediaTypeError,
    error_type,
)
from chattune.serving.disconnect import ClientDisconnected, closed_response
from chattune.serving.protocol import ErrorResponse, error_body

log = logging.getLogger(__name__)

_DESCRIPTIONS = {
    400: "The body is not JSON or not UTF-8, or the prompt and max_tokens exceed the model's context",
    401: "Missing or invalid key",
    403: "A state-changing request from another site on a browser session (the studio)",
    404: "Unknown model (or, at a gateway, unknown deployment)",
    409: "The adapter's name is taken by another adapter, or is the instance's own model",
    408: "The deployment did not answer within request_timeout_ms",
    413: "Request body over the size limit",
    415: "The body is not sent as JSON (Content-Type other than application/json)",
    422: "The body does not match the schema (wrong types, unknown fields, values out of range)",
    429: "Every instance is at max_concurrent_requests_per_instance; retry after Retry-After seconds",
    502: "No instance of the deployment could be reached",
    503: "The model is loading, or no deployment is ready or receives traffic",
}


def documented_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` for these error statuses, each documented in OpenAI's shape (``ErrorResponse``).

    That is what the handlers below answer, rather than FastAPI's default ``HTTPValidationError``.
    """
    return {status: {"model": ErrorResponse, "description": _DESCRIPTIONS[status]} for status in statuses}


def error_response(
    status: int, message: str, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """An answer in OpenAI's error shape, its ``type`` from chattune's one table (``chattune.errors.ERROR_CODES``).

    Args:
        status: The HTTP status.
        message: What went wrong.
        code: The chattune error code (a key of ``ERROR_CODES``), when there is one.
        param: The request field at fault, if any.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).

    Returns:
        The JSON response.
    """
    body = error_body(message, error_type(status, code), code, param)
    return JSONResponse(body, status_code=status, headers=headers)


def coded_response(
    error: type[ChattuneError], message: str, param: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The answer for a coded error class: its status and type from the error table.

    Args:
        error: The class whose code is answered (e.g. ``TooManyRequestsError``).
        message: What went wrong.
        param: The request field at fault, if any.
        headers: Extra response headers.

    Returns:
        The JSON response.
    """
    return error_response(error.http_status, message, error.code, param, headers)


class _TooLarge(StarletteHTTPException):
    """A request body over the limit, found while it was being read.

    An HTTPException, so that FastAPI's body parsing passes it on: any other exception there became a 400 "There was
    an error parsing the body" (a chunked body over the limit sent to an instance).
    """

    def __init__(self, message: str) -> None:
        super().__init__(413, message)


def install_error_handlers(app: FastAPI) -> None:
    """Answer chattune errors, invalid requests and unexpected failures in OpenAI's error shape."""

    @app.exception_handler(ChattuneError)
    async def _chattune(request: Request, exc: ChattuneError) -> JSONResponse:
        return error_response(exc.http_status, exc.message, exc.code, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        if first.get("type") == "json_invalid":  # as OpenAI answers it: a 400, not a field error at "0"
            reason = (first.get("ctx") or {}).get("error", "JSON decode error")
            return coded_response(InvalidJSONError, f"the body is not valid JSON: {reason}")
        content_type = request.headers.get("content-type", "")
        if tuple(first.get("loc", ())) == ("body",) and first.get("type") != "missing" and not _is_json(content_type):
            # FastAPI leaves a body not sent as JSON unparsed, and it fails as "not a dictionary": say what is wrong.
            return coded_response(
                UnsupportedMediaTypeError,
                f"send the body as JSON with Content-Type: application/json, not {content_type or 'no Content-Type'!r}",
            )
        loc = [str(p) for p in first.get("loc", []) if p != "body"]
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', []) if p != 'body') or 'body'}: {e.get('msg')}"
            for e in exc.errors()
        )
        return coded_response(InvalidRequestError, problems or "invalid request", ".".join(loc) or None)

    @app.exception_handler(ClientDisconnected)
    async def _gone(request: Request, exc: ClientDisconnected) -> Response:
        return closed_response()  # nobody reads it; /metrics counts it as 499

    @app.exception_handler(_TooLarge)
    async def _too_large(request: Request, exc: _TooLarge) -> JSONResponse:
        return coded_response(RequestTooLargeError, str(exc.detail), headers={"Connection": "close"})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), None)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s", request.url.path)
        return coded_response(ChattuneError, "internal server error; see the instance log")


def _is_json(content_type: str) -> bool:
    """FastAPI's own rule for parsing a body as JSON: application/json or a +json type."""
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is answered 413 in OpenAI's shape, before it is read whole.

    A declared Content-Length is checked first; a chunked body is counted as it arrives.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 413 for a body over ``max_bytes``, by its declared length or as its chunks arrive; else pass it on."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_big = coded_response(
            RequestTooLargeError, f"request body over {self.max_bytes} bytes", headers={"Connection": "close"}
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
