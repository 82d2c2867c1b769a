"""`chattune studio`: the REST control plane (and later the web UI) on this workspace."""

from __future__ import annotations

import ipaddress
import socket

import typer

from chattune.cli.output import out, progress
from chattune.errors import UserError
from chattune.studio.app import DEFAULT_PORT
from chattune.studio.token import TOKEN_ENV, StudioToken
from chattune.workspace import Workspace


def studio(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (loopback by default)"),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="port to listen on (0: any free port)"),
    rotate_token: bool = typer.Option(False, "--rotate-token", help="make a new studio token, print it and exit"),
) -> None:
    """Serve the studio: `/api/v1` over this workspace, for the token's bearer (made and shown on first start)."""
    ws = Workspace.from_env()
    token = StudioToken(ws.settings.home)
    if rotate_token:
        if token.from_env:
            raise UserError(f"{TOKEN_ENV} sets the studio token here; change it there instead")
        out.print(f"studio token (shown once; the old one and its sessions stop working): {token.rotate()}")
        return
    loopback = _is_loopback(host)
    if not loopback and not token.is_set_up:
        raise UserError(
            f"--host {host} exposes the studio beyond this machine, and no studio token is set up yet",
            remedy=f"Start it once on loopback (it makes the token) or set {TOKEN_ENV}, then use --host.",
        )
    new = token.ensure()
    if new:
        out.print(f"studio token (shown once, stored hashed; `--rotate-token` makes a new one): {new}")
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound = sock.getsockname()[1]
    if not loopback:
        progress(f"WARNING: the studio listens on {host}:{bound}, reachable from other machines; the token guards it")
    out.print(f"studio: http://{'127.0.0.1' if loopback else host}:{bound}/api/v1/ (Authorization: Bearer TOKEN)")
    from chattune import processes
    from chattune.studio.app import create_studio

    processes.serve(create_studio(ws, token), sock.detach(), log_level="warning")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
