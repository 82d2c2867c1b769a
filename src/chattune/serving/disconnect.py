"""Stop work for a client that has gone away, as vLLM aborts a request whose connection closed.

A non-streamed answer sends nothing until it is done, so nothing notices a client that gave up (its own timeout, a
closed tab, the gateway's ``request_timeout_ms``): without this the generation ran to its end and held its slot.
The instance races each generation against the client's disconnect, and the gateway races its upstream call the
same way, so a client leaving the gateway closes the gateway's connection to the instance and the instance then
cancels the generation. Streamed answers already stop: a failed write ends the stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request, Response

T = TypeVar("T")

# nginx's code for "client closed request": what the request is counted as in /metrics (nobody receives it).
CLIENT_CLOSED = 499


class ClientDisconnected(Exception):
    """The client closed its connection before the answer was ready; the work was cancelled."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it and raise ClientDisconnected.

    The body has been read, so the next ASGI message is the disconnect (uvicorn sends it when the connection closes,
    or once the response is complete). A watcher waits for it. ``Request.is_disconnected()`` is no use here: its
    cancelled receive loses the message under Starlette's BaseHTTPMiddleware (the `@app.middleware` functions).
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if watcher.exception() is None:
            raise ClientDisconnected
        return await task  # the watcher failed (an unexpected message): just wait for the work
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()


async def _disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def closed_response() -> Response:
    """The response a request is counted as when its client has gone away (499, "client closed request")."""
    return Response(status_code=CLIENT_CLOSED)
