"""Start, watch and stop the server processes behind endpoints (a gateway each, and instances)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

from chattune import preload
from chattune.errors import ProcessError, WaitTimeoutError
from chattune.settings import Settings

# oneDNN, which runs the bf16 matmuls (and the CPU flash-attention kernels' small matmuls) on CPUs, compiles and
# caches a kernel per shape (1,024 of them by default) and ideep keeps an LRU of as many, each costing 2-3 MB. Both
# serving (continuous batching: rows x padded prompt length) and training (padding-free batches: one total length
# per batch, one length per conversation) make new shapes all the time, so with those defaults a process grew by
# hundreds of MB (serving, bench/serve_load.py: +13% RSS in a minute) to GBs (training, bench/train_throughput.py:
# 4.4 GB peak instead of 2.6 GB, and slower). 64 keeps the working set and was measured as fast or faster. Read when
# the first kernel is built, so every chattune child process (jobs, training workers, instances) starts with them
# (chattune.processes.child_env); the environment can still choose other values.
KERNEL_CACHE_CAPACITY = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "64"}
CHILD_DEFAULTS = {**KERNEL_CACHE_CAPACITY, "MLFLOW_DISABLE_TELEMETRY": "true"}


def child_env(**extra: str) -> dict[str, str]:
    """The environment for chattune's child processes.

    PYTHONSAFEPATH (Python 3.11+): `python -m` would otherwise put the current directory first on sys.path, and any
    folder there named like a package (an `mlx/` or `torch/` in the user's working directory) would shadow the real one
    in the child. Defaults the user's environment can override: the kernel-cache caps (chattune.compute), given here so
    that no child sets them itself once its threads run (chattune.training.environ says what that risks), and MLflow's
    usage telemetry off (chattune runs offline: its worker thread would only retry an unreachable host from every job
    and instance).
    """
    return {**CHILD_DEFAULTS, **os.environ, "PYTHONSAFEPATH": "1", **extra}


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def compute_cores() -> int:
    """The cores torch threads should spread over here: the CPUs this process may run on, one per physical core.

    torch's own default is a thread per physical core (a hyperthread sibling adds little to matrix products).
    """
    return max(1, min(usable_cores(), psutil.cpu_count(logical=False) or usable_cores()))


def threads_each(processes: int) -> int | None:
    """Torch threads for each of ``processes`` torch processes on this machine: the cores, shared out.

    Each torch process otherwise starts a thread per core, and N of them put N threads on every core, whose OpenMP
    barriers spin while a thread they wait for is descheduled (docs/benchmarks.md measured both training and serving).
    None when ``OMP_NUM_THREADS`` in the environment already chooses.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return None
    return max(1, compute_cores() // max(1, processes))


def share_cores(processes: int) -> dict[str, str]:
    """``OMP_NUM_THREADS`` for each of ``processes`` torch processes started on this machine (``threads_each``).

    Empty when the environment already chooses, or for one process (torch's own default is every core).
    """
    threads = threads_each(processes)
    return {"OMP_NUM_THREADS": str(threads)} if processes > 1 and threads is not None else {}


def spawn(
    module: str,
    args: list[str],
    log_path: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    env: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Start ``python -m module`` on a loopback socket bound here; return (pid, port).

    The port is ``port``, or a free one; its socket is handed to the new process (``env`` added to its environment).
    Raises ProcessError when ``port`` is taken.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ProcessError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    sock.listen(128)
    port = sock.getsockname()[1]
    try:
        pid = start_module(
            module,
            ["--fd", str(sock.fileno()), *args],
            log_path,
            env=child_env(**(env or {})),
            pass_fds=(sock.fileno(),),
        )
    finally:
        sock.close()
    return pid, port


def start_module(
    module: str, args: list[str], log_path: Path, *, env: dict[str, str], pass_fds: tuple[int, ...] = ()
) -> int:
    """Start ``python -m module *args`` detached; return its pid.

    Detached: a session of its own (it outlives the caller, and a signal to its group reaches all of it), stdin
    closed, output appended to ``log_path``.

    The process comes from a fork server when one serves this environment (``chattune.preload``: the libraries are
    then imported already), else from a new interpreter. ``args`` may name the ``pass_fds`` after ``--fd``.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        server = preload.socket_path(Settings().cache_dir, env)
        if server is not None and server.exists():
            try:
                return preload.fork(server, module, args, env, log.fileno(), pass_fds)
            except (OSError, ValueError):
                pass  # gone or not answering: a new interpreter, as without one
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            pass_fds=pass_fds,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    return proc.pid


def start_fork_server(idle_s: float = preload.IDLE_S, wait_s: float = 0) -> int | None:
    """Start a fork server for this process's child environment (chattune.preload); its pid, None where none can run.

    ``wait_s``: how long to wait for it to serve (it imports torch, transformers and PEFT first); until it does,
    processes start the plain way.
    """
    env = child_env()
    path = preload.socket_path(Settings().cache_dir, env)
    return None if path is None else preload.start(path, env, idle_s, wait_s)


def stop_fork_servers() -> list[int]:
    """Stop the fork servers of this user cache (``$CHATTUNE_CACHE_DIR``); return their pids."""
    return preload.stop(preload.socket_dir(Settings().cache_dir))


# How long a server keeps an idle kept-alive connection. uvicorn's default, 5 s, is exactly httpx's (so the openai
# client's and the gateway's own) pool expiry: a client reusing a connection idle for 4.99 s raced the server
# closing it, and the request failed with "Server disconnected" / a reset (100 clients idling ~5 s: 1 in 600 requests;
# bench/serve_load.py under load). A server must keep connections longer than its clients do; 75 s is nginx's default.
KEEP_ALIVE_S = 75


class QuerylessAccessLog(logging.Filter):
    """Logging filter that keeps query strings (and any key put there) out of uvicorn's access log.

    uvicorn's access log line has the request's path with its query string. chattune's routes take no query
    parameters, and a client that puts its key there (``?api-key=...``, refused with 401) must not find the key in
    the gateway's log: the query string is replaced by ``?...``.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the query string of an access log line's path with ``?...``; every record passes."""
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?...", *args[3:])
        return True


def serve(app: Any, fd: int, **options: Any) -> None:
    """Run uvicorn on the listening socket ``spawn`` passed as ``fd``, with queries kept out of its access log.

    Not ``uvicorn.run(fd=...)``: uvicorn wraps that descriptor as an AF_UNIX socket, so asyncio never set TCP_NODELAY
    on the accepted TCP connections, and on a kept-alive connection (any HTTP client's pool, the gateway's own
    client) every answer waited about 40 ms for the client's delayed ACK (Nagle). ``socket(fileno=fd)`` reads the
    real family (AF_INET) from the descriptor.
    """
    import uvicorn

    sock = socket.socket(fileno=fd)
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_S)
    config = uvicorn.Config(app, **options)  # configures uvicorn's loggers: the filter goes on after
    logging.getLogger("uvicorn.access").addFilter(QuerylessAccessLog())
    uvicorn.Server(config).run(sockets=[sock])


def alive(pid: int | None) -> bool:
    """Whether a process with this pid is running (a zombie is not); False for None."""
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
            raise ProcessError(f"server process {pid} exited while starting:\n{tail(log_path)}")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200:
                return
            last = r.text[:300]
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.25)
    stop(pid)
    raise WaitTimeoutError(f"server process {pid} not ready after {timeout_s:.0f}s ({last}):\n{tail(log_path)}")


def stop(pid: int | None, timeout_s: float = 10.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``.

    Stopped means exited: a zombie waiting for its parent (init reaps orphans on its own schedule, a second or two on
    some machines) is not waited for.
    """
    if not pid or not alive(pid):
        return
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout_s
    while alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our child
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, or ``(no log)`` when it does not exist."""
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
