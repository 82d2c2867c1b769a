"""processes.serve: the inherited listening socket keeps its real family, so accepted connections get TCP_NODELAY.

uvicorn.run(fd=N) wrapped the descriptor as AF_UNIX; asyncio then skipped TCP_NODELAY on every accepted TCP
connection and each answer on a kept-alive connection waited ~40 ms (Nagle against the client's delayed ACK).
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import uvicorn

from chattune import processes


def test_serve_hands_uvicorn_an_inet_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def run(self: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        seen["families"] = [s.family for s in sockets or []]
        seen["config"] = self.config
        for s in sockets or []:
            s.close()

    monkeypatch.setattr(uvicorn.Server, "run", run)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    processes.serve(object(), listener.detach(), log_level="warning")  # the child owns the descriptor
    assert seen["families"] == [socket.AF_INET]
    assert seen["config"].fd is None and seen["config"].log_level == "warning"


@pytest.mark.parametrize(
    ("wrap", "nodelay"),
    [
        (lambda fd: socket.socket(fileno=fd), 1),  # serve()
        (lambda fd: socket.fromfd(fd, socket.AF_UNIX, socket.SOCK_STREAM), 0),  # uvicorn.run(fd=...), the bug
    ],
    ids=["serve", "uvicorn-fd"],
)
def test_accepted_connections_get_nodelay_only_from_an_inet_listener(wrap: Any, nodelay: int) -> None:
    import asyncio

    async def check() -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = listener.getsockname()
        fd = listener.detach()
        inherited = wrap(fd)
        if inherited.fileno() != fd:  # fromfd duplicated it
            os.close(fd)
        delays: list[int] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            delays.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(handle, sock=inherited)
        _, writer = await asyncio.open_connection(*address)
        for _ in range(100):
            if delays:
                break
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return delays[0]

    assert asyncio.run(check()) == nodelay


def test_serve_keeps_query_strings_out_of_the_access_log(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client that sends its key as ?api-key=... is refused with 401; the key must not reach the gateway's log
    # (found by tests/integration/test_security.py, which scans every workspace file for key values).
    import logging

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: [s.close() for s in sockets or []])
    access = logging.getLogger("uvicorn.access")
    monkeypatch.setattr(access, "filters", [])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    processes.serve(object(), listener.detach(), log_level="info")
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/metrics?api-key=SECRET&key=SECRET", "1.1", 401), None,
    )  # fmt: skip
    assert access.filter(record)
    assert record.getMessage() == '127.0.0.1:5000 - "GET /metrics?... HTTP/1.1" 401'
    plain = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, "%s", ("no query",), None)
    assert access.filter(plain) and plain.getMessage() == "no query"
