"""The fork server (chattune.preload): a process it forks is the process `python -m MODULE` would have been.

The server here preloads one small stdlib module instead of torch (the suite's own server, tests/conftest.py, preloads
the real list); the probe below reports what a process can see of how it was started.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chattune import preload
from chattune.processes import child_env, start_module

PROBE = """
import atexit, json, os, socket, sys
listener = socket.socket(fileno=int(sys.argv[sys.argv.index("--fd") + 1]))
atexit.register(lambda: print("atexit ran", flush=True))
print(json.dumps({
    "name": __name__,
    "argv": sys.argv[1:],
    "session_leader": os.getsid(0) == os.getpid(),
    "cwd": os.getcwd(),
    "umask": os.umask(0),
    "marker": os.environ.get("PROBE_MARKER"),
    "stdin_is_devnull": os.path.samestat(os.fstat(0), os.stat(os.devnull)),
    "listening_on": listener.getsockname()[1],
    "preloaded": "email.mime.text" in sys.modules,
    "cmdline": open("/proc/self/cmdline", "rb").read().replace(b"\\0", b" ").decode().split(),
}), flush=True)
sys.exit(3)
"""
MODULES = ("email.mime.text",)


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ct-"))  # short: a socket path has at most 107 bytes
    monkeypatch.setenv("CHATTUNE_CACHE_DIR", str(path))
    yield path
    preload.stop(preload.socket_dir(path))
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "probe_mod").mkdir()
    (tmp_path / "probe_mod" / "__init__.py").write_text("")
    (tmp_path / "probe_mod" / "probe.py").write_text(PROBE)
    return child_env(PYTHONPATH=str(tmp_path), PROBE_MARKER="m-1")


def _run_probe(tmp_path: Path, env: dict[str, str], name: str) -> tuple[int, dict[str, object]]:
    log = tmp_path / f"{name}.log"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        fd = listener.fileno()
        pid = start_module("probe_mod.probe", ["--fd", str(fd), "--x", "y"], log, env=env, pass_fds=(fd,))
    deadline = time.monotonic() + 30
    while "atexit ran" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = log.read_text().splitlines()
    assert lines[-1] == "atexit ran", lines  # the child's own interpreter exit, atexit handlers and all
    report = json.loads(lines[-2])
    assert report.pop("listening_on") == port  # the passed socket, under whatever number it has in the child
    argv = report.pop("argv")
    assert argv[0] == "--fd" and argv[2:] == ["--x", "y"]
    # What `ps` shows (forked: set with setproctitle, a dev dependency): the command, not the fork server's.
    cmdline = report.pop("cmdline")
    assert cmdline[1:4] == ["-m", "probe_mod.probe", "--fd"] and cmdline[5:] == ["--x", "y"], cmdline
    return pid, report


def test_a_forked_process_is_what_a_new_interpreter_would_have_been(
    cache: Path, env: dict[str, str], tmp_path: Path
) -> None:
    _, plain = _run_probe(tmp_path, env, "plain")  # no server yet: a new interpreter
    path = preload.socket_path(cache, env)
    assert path is not None and not path.exists()
    server = preload.start(path, env, wait_s=30, modules=MODULES)
    assert path.exists() and path.parent.stat().st_mode & 0o777 == 0o700
    pid, forked = _run_probe(tmp_path, env, "forked")
    assert "probe_mod.probe --fd" in (path.with_suffix(".log")).read_text()  # it did come from the server
    assert (plain.pop("preloaded"), forked.pop("preloaded")) == (False, True)
    assert forked == plain
    assert plain["name"] == "__main__" and plain["session_leader"] is True and plain["stdin_is_devnull"] is True
    assert plain["marker"] == "m-1" and plain["cwd"] == os.getcwd()

    # Another import-time environment (offline hub) names another server: none runs, so a new interpreter.
    offline = {**env, "HF_HUB_OFFLINE": "1"}
    assert preload.socket_path(cache, offline) != path
    assert preload.socket_path(cache, {**env, "CHATTUNE_HOME": "/elsewhere"}) == path  # read at run time only
    _, other = _run_probe(tmp_path, offline, "offline")
    assert other["preloaded"] is False

    assert preload.stop(path.parent) == [server]
    assert not path.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(server, 0)
    assert pid != server


def test_a_dead_server_left_its_socket_and_processes_still_start(
    cache: Path, env: dict[str, str], tmp_path: Path
) -> None:
    path = preload.socket_path(cache, env)
    assert path is not None
    server = preload.start(path, env, wait_s=30, modules=MODULES)
    os.kill(server, signal.SIGKILL)
    os.waitpid(server, 0)
    assert path.exists()  # killed: nobody removed its socket
    _, report = _run_probe(tmp_path, env, "after")
    assert report["preloaded"] is False and report["marker"] == "m-1"


def test_no_server_where_the_socket_path_would_be_too_long(env: dict[str, str]) -> None:
    assert preload.socket_path(Path("/tmp") / ("x" * 90), env) is None


def test_run_answers_what_subprocess_run_would(cache: Path, env: dict[str, str], tmp_path: Path) -> None:
    """`preload.run` (the test suite's CLI runner) against subprocess.run: output, exit code, signals, timeout."""
    (tmp_path / "probe_mod" / "talk.py").write_text(
        "import os, signal, sys, time\n"
        "print('out', sys.argv[1:]); print('progress\\rdone', file=sys.stderr)\n"
        "if sys.argv[1] == 'kill': os.kill(os.getpid(), signal.SIGKILL)\n"
        "if sys.argv[1] == 'sleep': time.sleep(30)\n"
        "if sys.argv[1] == 'msg': sys.exit('bye')\n"
        "if sys.argv[1] == 'nap': time.sleep(2)\n"
        "if sys.argv[1] == 'raise': raise ValueError('boom')\n"
        "sys.exit(int(sys.argv[1]) if sys.argv[1].isdigit() else 0)\n"
    )
    path = preload.socket_path(cache, env)
    assert path is not None
    preload.start(path, env, wait_s=30, modules=MODULES)
    answers = {}
    for arg in ("0", "7", "msg", "raise", "kill"):
        plain = subprocess.run(
            [sys.executable, "-m", "probe_mod.talk", arg], capture_output=True, text=True, env=env, cwd=tmp_path
        )
        forked = preload.run(path, "probe_mod.talk", [arg], env, cwd=tmp_path)
        if arg == "raise":  # the traceback's frames differ (runpy's): its last line does not
            plain.stderr, forked.stderr = plain.stderr.splitlines()[-1], forked.stderr.splitlines()[-1]
        assert (forked.returncode, forked.stdout, forked.stderr) == (plain.returncode, plain.stdout, plain.stderr)
        answers[arg] = forked
    assert [answers[a].returncode for a in ("0", "7", "msg", "raise", "kill")] == [0, 7, 1, 1, -signal.SIGKILL]
    assert answers["kill"].stderr == "progress\ndone\n" and answers["msg"].stderr.endswith("bye\n")
    with pytest.raises(subprocess.TimeoutExpired):  # not after the child's 30 s: killed at the timeout
        preload.run(path, "probe_mod.talk", ["sleep"], env, timeout=1)

    # Stopped (or replaced by a newer server) while a caller waits: that caller still gets its exit status.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        napping = pool.submit(preload.run, path, "probe_mod.talk", ["nap"], env)
        while "probe_mod.talk nap" not in path.with_suffix(".log").read_text():
            time.sleep(0.05)
        preload.stop(path.parent)
        assert napping.result(timeout=30).returncode == 0


def test_the_pid_and_the_exit_status_in_one_read_are_two_answers(tmp_path: Path) -> None:
    """A child that exits at once: the server's two lines can arrive in one segment; neither may be lost."""
    server, client = socket.socketpair()
    with server, client, client.makefile("rb") as lines:
        server.sendall(b'{"pid": 17}\n{"returncode": 7}\n')
        assert json.loads(preload._line(lines, tmp_path)) == {"pid": 17}
        assert json.loads(preload._line(lines, tmp_path)) == {"returncode": 7}
        server.shutdown(socket.SHUT_WR)
        with pytest.raises(ConnectionError, match="closed the connection"):
            preload._line(lines, tmp_path)
