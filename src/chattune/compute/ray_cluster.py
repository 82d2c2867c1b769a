"""A local Ray cluster for development and tests: a head and N worker nodes on this machine.

Each node is Ray's own ``ray start --block`` (a real raylet with its own ``--num-cpus``), run as a process of its
own session: it starts the node's daemons and, on SIGTERM, stops exactly them (Ray's ``kill_all_processes``).
Nothing here calls ``ray stop``, which would end every Ray process of the machine (other users' clusters too).
The cluster's temp dir (``--temp-dir``) is its own, so ``ray.init("auto")`` elsewhere never finds it; token
authentication is on with a token file of its own in that dir (mode 0600). Nodes are started with
``--node-ip-address=127.0.0.1``, which Ray on Linux resolves to the machine's routable address for a multi-node
cluster; most Ray daemons listen on every interface anyway (docs/scale-out.md, "What listens where").
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from chattune.entities import LocalRayCluster
from chattune.errors import ProcessError, WaitTimeoutError
from chattune.processes import alive, child_env, tail

# The line `ray start` prints once its node is up (before it blocks).
STARTED = "Ray runtime started"
TOKEN_FILE = "auth_token"
# Seconds a node drains on SIGTERM before its processes stop (Ray's default is 30 s); a dev cluster stops promptly.
DRAIN_S = "2"
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0


def cluster_env(cluster: LocalRayCluster) -> dict[str, str]:
    """What a process needs in its environment to use ``cluster`` (and its nodes to run): the cluster's token.

    Also: usage stats off, and a short drain on SIGTERM (Ray's default waits up to 30 s per node).
    """
    return {
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(Path(cluster.temp_dir) / TOKEN_FILE),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": DRAIN_S,
    }


def address(cluster: LocalRayCluster) -> str:
    """The cluster's GCS address."""
    return f"127.0.0.1:{cluster.gcs_port}"


def free_port() -> int:
    """A port free on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ray_cli() -> str:
    found = Path(sys.executable).with_name("ray")
    if found.exists():
        return str(found)
    which = shutil.which("ray")
    if not which:
        raise ProcessError(
            "the `ray` command is not installed",
            remedy='Install chattune with its Ray extra: pip install "chattune[ray]" (make install does).',
        )
    return which


def _start_node(args: list[str], log: Path, env: dict[str, str]) -> int:
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [_ray_cli(), "start", "--block", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # outlives `compute start-ray`; stopped by `compute stop-ray`
        )
    return proc.pid


def _wait_started(pid: int, log: Path, deadline: float) -> None:
    while time.monotonic() < deadline:
        if log.exists() and STARTED in log.read_text(encoding="utf-8", errors="replace"):
            return
        if not alive(pid):
            raise ProcessError(f"`ray start` (pid {pid}) exited while starting; see {log}:\n{tail(log, 30)}")
        time.sleep(0.2)
    raise WaitTimeoutError(f"`ray start` (pid {pid}) not up after {START_TIMEOUT_S:.0f}s; see {log}:\n{tail(log, 30)}")


def start(*, workers: int, cpus_per_node: int, object_store_mb: int) -> LocalRayCluster:
    """Start a head and ``workers`` worker nodes on this machine; return what ``stop`` needs.

    Args:
        workers: Worker nodes beside the head (0: the head alone).
        cpus_per_node: Each node's ``--num-cpus`` (what Ray schedules on it, not a limit on threads).
        object_store_mb: Each node's object store (Ray's default, 30% of RAM per node, is too much for several nodes
            on one machine).

    Raises:
        ProcessError: A node did not start (its log's tail is in the message); what started is stopped.
    """
    temp_dir = Path(tempfile.mkdtemp(prefix="chattune-ray-"))  # short: Ray's Unix sockets live under it
    token = temp_dir / TOKEN_FILE
    token.write_text(secrets.token_hex(32), encoding="utf-8")
    token.chmod(0o600)
    cluster = LocalRayCluster(
        temp_dir=str(temp_dir), gcs_port=free_port(), node_cpus=[cpus_per_node] * (1 + workers), pids=[]
    )
    env = child_env(**cluster_env(cluster))
    # Each node reports a share of this machine's memory, so that the cluster's total is the machine's.
    memory = int(psutil.virtual_memory().total / (1 + workers))

    def node_args() -> list[str]:
        """What every node gets; the dashboard agent's port has a fixed default, so each node needs its own."""
        return [
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus_per_node}",
            f"--memory={memory}",
            f"--object-store-memory={object_store_mb * 2**20}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ]

    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        head_log = temp_dir / "node-0.log"
        cluster.pids.append(
            _start_node(
                [
                    "--head",
                    f"--port={cluster.gcs_port}",
                    f"--ray-client-server-port={free_port()}",
                    # The dashboard serves Ray's state API, which Ray Train's placement-group cleaner polls.
                    "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1",
                    f"--dashboard-port={free_port()}",
                    f"--temp-dir={temp_dir}",
                    *node_args(),
                ],
                head_log,
                env,
            )
        )
        _wait_started(cluster.pids[0], head_log, deadline)
        for i in range(1, workers + 1):
            log = temp_dir / f"node-{i}.log"
            # A worker node on the same machine gets no GPU: the head already reports this machine's GPUs.
            args = [f"--address={address(cluster)}", "--num-gpus=0", *node_args()]
            cluster.pids.append(_start_node(args, log, env))
            _wait_started(cluster.pids[-1], log, deadline)
    except BaseException:
        stop(cluster)
        raise
    cluster.daemon_pids = [p.pid for p in processes(cluster) if p.pid not in cluster.pids]
    cluster.up_at = time.time()
    return cluster


def processes(cluster: LocalRayCluster) -> list[psutil.Process]:
    """Every live process of ``cluster``.

    Its ``ray start`` processes and their descendants (the daemons and Ray's worker processes), and any process
    whose command line names the cluster's temp dir.
    """
    found: dict[int, psutil.Process] = {}
    for pid in [*cluster.pids, *cluster.daemon_pids]:
        with contextlib.suppress(psutil.Error):
            proc = psutil.Process(pid)
            # A recorded pid is ours only if its process already ran when the cluster came up (not a reused pid).
            if proc.status() != psutil.STATUS_ZOMBIE and (not cluster.up_at or proc.create_time() <= cluster.up_at):
                found[pid] = proc
                found.update({c.pid: c for c in proc.children(recursive=True)})
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(cluster.temp_dir in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
    return [p for p in found.values() if _running(p)]


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def stop(cluster: LocalRayCluster, *, timeout_s: float = STOP_TIMEOUT_S) -> list[int]:
    """Stop the cluster's nodes (workers first, then the head) and whatever of it is left; remove its temp dir.

    Each ``ray start --block`` gets SIGTERM and stops its own node's processes; a process of the cluster still
    running after ``timeout_s`` gets SIGKILL. Returns the pids that had to be killed.
    """
    before = processes(cluster)
    for pid in reversed(cluster.pids):
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_running(p) for p in before):
        for pid in cluster.pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it where it is our child (tests start and stop in one process)
        time.sleep(0.1)
    killed = []
    for proc in [*before, *processes(cluster)]:
        if _running(proc):
            with contextlib.suppress(psutil.Error):
                proc.kill()
                killed.append(proc.pid)
    shutil.rmtree(cluster.temp_dir, ignore_errors=True)
    return killed
