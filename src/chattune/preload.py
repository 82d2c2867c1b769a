"""A fork server: job runners and serving instances forked from a process that has imported their libraries once.

One process imports torch, transformers, PEFT and TRL, and forks chattune's job runners and serving instances from
that state instead of starting a new interpreter for each.

A tiny job's runner or a serving instance spends most of its start importing those libraries (about 6 s of CPU on a
laptop core, 10 s on a busy one). With a fork server running, ``chattune.processes`` asks it for the process: the
server forks, and the child becomes the process ``python -m MODULE ARGS`` would have been (its own session, the
caller's environment, working directory, umask, log file and listening socket) and runs the same module as
``__main__`` through ``runpy``. Nothing is shared after the fork; the child's exit runs its own atexit handlers.

A server is used only by callers whose process would import the same code the same way: its socket's name is a hash
of the Python executable, chattune's sources (their mtimes), the environment variables read at import threading
import time
import traceback
(``HF_*``, ``TRANSFORMERS_*``, ``TORCH*``, ``OMP_*``...) and the kernel namespaces (a network-less ``unshare -rn`` run
gets no server, so it stays offline). Anything else (another key, no server, a server that does not answer) starts
the process the plain way; a fork server only ever saves time.

It is started explicitly, never behind the user's back: ``chattune.processes.start_fork_server()`` (the test suite
does, for its session: tests/conftest.py) and ``stop_fork_servers()``. It exits by itself after ``idle_s`` seconds
without a request. The socket lies in ``$CHATTUNE_CACHE_DIR/preload`` (mode 0700), and the server
serves only its own user (SO_PEERCRED).
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import hashlib
import importlib
import json
import locale
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NoReturn

# What the server imports before serving: the libraries a runner or an instance spends its start on, and chattune's
# modules below the entry points (an entry point itself is run fresh as __main__ in the child).
PRELOAD = (
    "torch",
    "transformers",
    "peft",
    "trl",
    "datasets",
    "mlflow",
    "uvicorn",
    "fastapi",
    "chattune.pipeline.attempt",
    "chattune.pipeline.steps",
    "chattune.serving.app",
    "chattune.serving.engine",
    "chattune.endpoints.supervisor",
)
# Environment variables read while those modules import: a caller whose values differ gets no server. Not those
# read only when used (MLFLOW_*, CHATTUNE_*), nor those set by the imports themselves (TORCHINDUCTOR_CACHE_DIR).
IMPORT_TIME_ENV = (
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "TORCH_",
    "TORCHDYNAMO_",
    "PYTORCH_",
    "OMP_",
    "MKL_",
    "CUDA_",
    "TOKENIZERS_",
    "PYTHON",
    "LD_",
    "ONEDNN_",
    "LRU_",
    "HOME",
    "XDG_",
    "TMPDIR",
)
NAMESPACES = ("mnt", "net", "user", "pid", "ipc", "uts")
IDLE_S = 1800.0
_HEADER = struct.Struct("!I")
MAX_FDS = 4


def socket_dir(cache_dir: Path) -> Path:
    """Where the fork servers of this user cache have their sockets."""
    return cache_dir / "preload"


def key(env: dict[str, str]) -> str | None:
    """The fork server a process with this environment may come from; None when none can serve it here."""
    try:
        spaces = [os.readlink(f"/proc/self/ns/{ns}") for ns in NAMESPACES]
    except OSError:
        return None  # no /proc (not Linux): no fork server
    package = Path(__file__).parent  # chattune's sources
    sources = sorted((str(p), p.stat().st_mtime_ns) for p in package.rglob("*.py"))
    wanted = sorted((k, v) for k, v in env.items() if k.startswith(IMPORT_TIME_ENV))
    # The child's sys.path follows from the executable and the environment (PYTHONPATH, PYTHONSAFEPATH), not from
    # the caller's sys.path (a `python -m` caller without PYTHONSAFEPATH has its working directory first).
    blob = json.dumps([sys.executable, sources, wanted, spaces, os.getuid()])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def socket_path(cache_dir: Path, env: dict[str, str]) -> Path | None:
    """The socket of the fork server for this environment (it may not be running); None when there can be none."""
    k = key(env)
    path = socket_dir(cache_dir) / f"{k}.sock"
    # AF_UNIX paths are limited to 107 bytes; a longer cache path gets no fork server.
    return path if k is not None and len(os.fsencode(path)) < 100 else None


@dataclass
class Request:
    """What the child becomes: ``python -m module *args`` with this environment, directory and umask.

    The passed fds are the log's (or stdin's, stdout's and stderr's with ``stdio``), then ``fd_args``'s.
    """

    module: str
    args: list[str]
    env: dict[str, str]
    cwd: str
    umask: int
    fd_args: list[int]  # the caller's numbers of the passed fds (written in args after "--fd")
    stdio: bool = False  # three fds for stdin, stdout and stderr instead of one log
    wait: bool = False  # the server answers the exit status too, once the child has exited


def _request(path: Path, request: Request, fds: list[int]) -> tuple[socket.socket, BinaryIO, int]:
    """Send ``request`` with ``fds``; the connection, its line reader (the server's later lines) and the child's pid.

    The server's answers are JSON lines on one stream: a child that exits at once can have its exit status arrive in
    the same read as its pid, so every line is read through one buffered reader, never by a bare ``recv``.
    """
    payload = json.dumps(request.__dict__).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lines = conn.makefile("rb")
    try:
        conn.settimeout(10)
        conn.connect(str(path))
        socket.send_fds(conn, [_HEADER.pack(len(payload))], fds)
        conn.sendall(payload)
        return conn, lines, int(json.loads(_line(lines, path))["pid"])
    except BaseException:
        lines.close()  # the socket closes with its last reader
        conn.close()
        raise


def _line(lines: BinaryIO, path: Path) -> bytes:
    line = lines.readline()
    if not line.endswith(b"\n"):
        raise ConnectionError(f"the fork server at {path} closed the connection")
    return line


def _umask() -> int:
    umask = os.umask(0o22)
    os.umask(umask)
    return umask


def fork(path: Path, module: str, args: list[str], env: dict[str, str], log_fd: int, pass_fds: tuple[int, ...]) -> int:
    """Ask the fork server at ``path`` for ``python -m module *args``, detached; return the child's pid.

    Raises OSError (the server is not there or did not answer): the caller starts the process itself.
    """
    request = Request(module, list(args), env, os.getcwd(), _umask(), list(pass_fds))
    conn, lines, pid = _request(path, request, [log_fd, *pass_fds])
    lines.close()
    conn.close()
    return pid


def run(
    path: Path, module: str, args: list[str], env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, -m, module, *args], capture_output=True, text=True)``, forked by the server.

    Raises OSError when the server is not there (nothing ran), subprocess.TimeoutExpired as run does, and
    RuntimeError when the server went away while the process ran.
    """
    request = Request(module, list(args), env, str(cwd or os.getcwd()), _umask(), [], stdio=True, wait=True)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDONLY)
    try:
        conn, lines, pid = _request(path, request, [devnull, out_w, err_w])
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (out_w, err_w, devnull):
            os.close(fd)
    chunks: dict[int, list[bytes]] = {out_r: [], err_r: []}
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel, conn, lines:
        for fd in chunks:
            sel.register(fd, selectors.EVENT_READ)
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                for key in list(sel.get_map().values()):
                    os.close(key.fd)
                raise subprocess.TimeoutExpired([module, *args], timeout)
            for selected, _ in sel.select(left):
                data = os.read(selected.fd, 65536)
                if data:
                    chunks[selected.fd].append(data)
                else:
                    sel.unregister(selected.fd)
                    os.close(selected.fd)
        conn.settimeout(max(deadline - time.monotonic(), 1))
        try:
            returncode = int(json.loads(_line(lines, path))["returncode"])
        except OSError as exc:  # it ran: not an error to start it again over
            raise RuntimeError(f"the fork server at {path} lost track of process {pid}: {exc}") from exc
    # As run(text=True) decodes: the locale's encoding, universal newlines (a progress bar's \r is a line end).
    encoding = locale.getpreferredencoding(False)
    out, err = (
        b"".join(chunks[fd]).decode(encoding, errors="replace").replace("\r\n", "\n").replace("\r", "\n")
        for fd in (out_r, err_r)
    )
    return subprocess.CompletedProcess([sys.executable, "-m", module, *args], returncode, out, err)


def _receive(conn: socket.socket) -> tuple[Request, list[int]]:
    header, fds, _flags, _addr = socket.recv_fds(conn, _HEADER.size, MAX_FDS + 3)
    (size,) = _HEADER.unpack(header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise ConnectionError("truncated request")
        payload += chunk
    return Request(**json.loads(payload)), fds


def _say(line: str) -> None:
    # Not logging: a child would inherit the server's logging configuration and lose its own.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _reap(waiting: dict[int, socket.socket]) -> None:
    """Collect exited children; answer the exit status to whoever waits for it."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        conn = waiting.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            conn.close()


def _still_ours(path: Path, identity: int) -> bool:
    try:
        return path.stat().st_ino == identity
    except FileNotFoundError:
        return False


def serve(path: Path, idle_s: float, modules: tuple[str, ...] = PRELOAD) -> tuple[Request, list[int]] | None:
    """Import ``modules``, then fork a child per request until idle; in a child, return what it is to become."""
    for name in modules:
        importlib.import_module(name)
    with contextlib.suppress(ImportError):  # set up here, while argv and environ are the interpreter's own
        import setproctitle

        setproctitle.getproctitle()
    # The preloaded objects (half a million) move to the collector's permanent generation: a child's collections and
    # its exit then neither walk them nor write to their pages (each write copies a shared page). Without this, a
    # child's full collection took 1 s and its exit 4 s here; with it, 1 ms and 0.7 s.
    gc.freeze()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_suffix(f".{os.getpid()}")
    staging.unlink(missing_ok=True)
    server.bind(str(staging))
    server.listen(64)
    os.replace(staging, path)  # the socket appears only once it can serve
    identity = path.stat().st_ino
    # SIGCHLD wakes the loop (through the wakeup fd), so a waiting caller hears of its child's exit at once.
    wake_r, wake_w = socket.socketpair()
    for end in (wake_r, wake_w):
        end.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    waiting: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(server, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    _say(f"fork server {os.getpid()} serving on {path}")
    last = time.monotonic()
    try:
        accepting = True
        while accepting or waiting:
            _reap(waiting)
            if accepting and (time.monotonic() - last > idle_s or not _still_ours(path, identity)):
                # Idle, or the socket was removed (`stop`) or replaced (a newer server): no new requests; those
                # waiting for their child's exit status still get it.
                accepting = False
                sel.unregister(server)
            ready = {key.fileobj for key, _ in sel.select(1.0)}
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    wake_r.recv(4096)
            if server not in ready:
                continue
            conn, _ = server.accept()
            last = time.monotonic()
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            try:
                if struct.unpack("3i", creds)[1] != os.getuid():
                    raise PermissionError("a caller of another user")
                conn.settimeout(10)
                request, fds = _receive(conn)
            except (OSError, ValueError, TypeError) as exc:
                _say(f"refused: {exc!r}")
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                signal.set_wakeup_fd(-1)
                for held in (conn, wake_r, wake_w, *waiting.values()):
                    held.close()
                sel.close()
                return request, fds  # the finally closes the server's socket in the child
            _say(f"{request.module} {' '.join(request.args)}: pid {pid}")
            for fd in fds:
                os.close(fd)
            try:
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
            except OSError:
                conn.close()
                continue
            if request.wait:
                waiting[pid] = conn
            else:
                conn.close()
    finally:
        server.close()
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_ino == identity:
            path.unlink()
    return None


def _become(request: Request, fds: list[int]) -> None:
    """Turn this forked child into ``python -m request.module``: as subprocess.Popen(start_new_session=True) would."""
    os.setsid()
    for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if request.stdio:
        stdio, passed = fds[:3], fds[3:]
    else:
        devnull = os.open(os.devnull, os.O_RDONLY)
        stdio, passed = [devnull, fds[0], fds[0]], fds[1:]
    for target, fd in enumerate(stdio):
        os.dup2(fd, target)
    for fd in set(stdio):
        os.close(fd)
    numbers = dict(zip(request.fd_args, passed, strict=True))
    args = [str(numbers[int(a)]) if i > 0 and request.args[i - 1] == "--fd" else a for i, a in enumerate(request.args)]
    for fd in passed:
        os.set_inheritable(fd, True)
    os.environ.clear()
    os.environ.update(request.env)
    os.chdir(request.cwd)
    os.umask(request.umask)
    sys.argv = [request.module, *args]
    # What `ps` and /proc/PID/cmdline show: the command it stands for, not the server's (setproctitle, where installed;
    # the test suite's dev dependencies have it, so its checks of what a command line shows hold for forked processes).
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(" ".join([sys.executable, "-m", request.module, *args]))


def stop(directory: Path, timeout_s: float = 10) -> list[int]:
    """Stop every fork server with a socket in ``directory``; return their pids."""
    pids = []
    for pid_file in sorted(directory.glob("*.pid")):
        with contextlib.suppress(OSError, ValueError):
            pids.append(int(pid_file.read_text()))
        pid_file.with_suffix(".sock").unlink(missing_ok=True)  # a server whose socket is gone exits within a second
        pid_file.unlink(missing_ok=True)
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while time.monotonic() < deadline and _running(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG)[0] == 0  # our own child (started here): reap it once it exits
    return True


def start(
    path: Path, env: dict[str, str], idle_s: float = IDLE_S, wait_s: float = 0, modules: tuple[str, ...] = PRELOAD
) -> int:
    """Start a fork server for children with environment ``env`` at ``path`` (detached); wait up to ``wait_s``."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    log = path.with_suffix(".log").open("ab")
    serve = ["--socket", str(path), "--idle-s", str(idle_s), "--preload", ",".join(modules)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "chattune.preload", *serve],
        env=env,  # the environment its children get: the one its key names
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    path.with_suffix(".pid").write_text(str(proc.pid))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.2)
    return proc.pid


def main(argv: list[str] | None = None) -> int:
    """``python -m chattune.preload --socket PATH``: serve there (``chattune.processes.start_fork_server`` runs it)."""
    parser = argparse.ArgumentParser(prog="python -m chattune.preload", description=__doc__.split("\n\n")[0])
    parser.add_argument("--socket", type=Path, required=True, help="the socket path")
    parser.add_argument("--idle-s", type=float, default=IDLE_S, help="exit after this long without a request")
    parser.add_argument("--preload", default=",".join(PRELOAD), help="the modules imported before serving")
    ns = parser.parse_args(argv)
    child = serve(ns.socket, ns.idle_s, tuple(m for m in ns.preload.split(",") if m))
    if child is None:
        return 0
    request, fds = child
    _become(request, fds)
    if request.wait:
        _run_and_exit_quickly(request.module)
    runpy.run_module(request.module, run_name="__main__", alter_sys=True)
    return 0


def _run_and_exit_quickly(module: str) -> NoReturn:
    """Run ``module`` as ``__main__``, then exit as the interpreter does but without tearing down the heap.

    For a short command (``run``: the test suite's CLI calls) the normal exit, which frees every preloaded object,
    costs more than the command (0.7 s here). The exit below does what matters of it, in its order: wait for the
    non-daemon threads, run the atexit handlers (logging's flush, weakref finalizers, the program's own), flush
    stdout and stderr. What it skips (closing files the program left open, objects' ``__del__``) can only make a
    test of such a program fail, never pass where a normal exit would fail.
    """
    code = 0
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            sys.stderr.write(f"{exc.code}\n")
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code & 0xFF)


if __name__ == "__main__":
    sys.exit(main())
