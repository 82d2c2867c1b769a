"""Start, watch and stop the server processes behind endpoints (a gateway each, and instances)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

from chattune.errors import ChattuneError


def child_env(**extra: str) -> dict[str, str]:
    """The environment for chattune's child processes. PYTHONSAFEPATH (Python 3.11+): `python -m` would otherwise
    put the current directory first on sys.path, and any folder there named like a package (an `mlx/` or `torch/`
    in the user's working directory) would shadow the real one in the child."""
    return {**os.environ, "PYTHONSAFEPATH": "1", **extra}


def spawn(module: str, args: list[str], log_path: Path, host: str = "127.0.0.1", port: int = 0) -> tuple[int, int]:
    """Bind a loopback port here (``port``, or a free one), hand its socket to a new ``python -m module`` process;
    return (pid, port). Raises ChattuneError when ``port`` is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ChattuneError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    port = sock.getsockname()[1]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "--fd", str(sock.fileno()), *args],
                pass_fds=(sock.fileno(),),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the CLI command; stopped by `endpoints delete`
                env=child_env(),
            )
    finally:
        sock.close()
    return proc.pid, port


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_until_ready(url: str, pid: int, log_path: Path, timeout_s: float) -> None:
    """Poll ``url`` until it answers 200; fail early, with the log's tail, if the process dies."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if not alive(pid):
            raise ChattuneError(f"server process {pid} exited while starting:\n{tail(log_path)}")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = r.text[:300]
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.25)
    stop(pid)
    raise ChattuneError(f"server process {pid} not ready after {timeout_s:.0f}s ({last}):\n{tail(log_path)}")


def stop(pid: int | None, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
    if not pid or not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        psutil.Process(pid).wait(timeout_s)
    except psutil.TimeoutExpired:
        os.killpg(pid, signal.SIGKILL)
    except psutil.NoSuchProcess:
        pass
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
