"""Named compute targets: ``local`` (this machine) and Ray clusters recorded in the workspace.

A Ray target is an existing cluster by address (``compute add``) or a cluster chattune starts on this machine for
development (``compute start-ray``, stopped by ``compute stop-ray``). What a target has (nodes, CPUs, GPUs, memory)
is what Ray reports (``ray.nodes()``), asked when it is needed, never stored.
"""

from __future__ import annotations

import builtins
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from chattune.compute import ComputeInfo, Gpu, detect, ray_cluster, ray_probe
from chattune.compute.ray_probe import RayNode
from chattune.entities import COMPUTE_NAME_PATTERN, LOCAL_COMPUTE, ComputeKind, ComputeTarget
from chattune.errors import ChattuneError, ComputeError, ConflictError, UserError
from chattune.store.base import ComputeStore

# `auto`, a Ray Client address `ray://host:port`, or a head's GCS address `host:port`.
_ADDRESS = re.compile(r"^(auto|ray://[A-Za-z0-9.\-_]+:\d{1,5}|[A-Za-z0-9.\-_]+:\d{1,5})$")


@dataclass
class TargetStatus:
    """A target as ``compute list`` shows it: what Ray reports about its nodes, or why it could not be asked.

    Attributes:
        name: The target's name.
        kind: ``local`` or ``ray``.
        address: The Ray address (None for ``local``).
        reachable: Whether its nodes could be listed.
        managed: Whether chattune started it on this machine (``compute start-ray``).
        ray_version: The cluster's Ray version.
        nodes: Its nodes as Ray reports them (``local``: this machine as one node).
        error: Why it could not be reached.
    """

    name: str
    kind: ComputeKind
    address: str | None
    reachable: bool
    managed: bool = False
    ray_version: str | None = None
    nodes: list[RayNode] = field(default_factory=list)
    error: str | None = None

    @property
    def alive(self) -> list[RayNode]:
        """The nodes that are alive."""
        return [n for n in self.nodes if n.alive]

    def to_dict(self) -> dict[str, Any]:
        """The status with the totals over the living nodes (``cpus``, ``gpus``, ``memory_gb``)."""
        out = asdict(self)
        out["cpus"] = sum(n.cpus for n in self.alive)
        out["gpus"] = sum(n.gpus for n in self.alive)
        out["memory_gb"] = round(sum(n.memory_gb for n in self.alive), 2)
        return out

    def compute_info(self) -> ComputeInfo:
        """The target as the fit check reads a machine: its CPUs and memory in all, its GPUs (memory unknown)."""
        memory = round(sum(n.memory_gb for n in self.alive), 1)
        gpus = int(sum(n.gpus for n in self.alive))
        return ComputeInfo(
            size=f"ray:{self.name}",
            cpu_cores=int(sum(n.cpus for n in self.alive)),
            ram_gb=memory,
            ram_available_gb=memory,
            gpus=[Gpu(i, "GPU (as Ray reports it)", 0.0) for i in range(gpus)],
        )


def check_name(name: str) -> None:
    """A new target's name: the pattern, and never ``local``.

    Raises:
        UserError: The name is not valid.
    """
    if name == LOCAL_COMPUTE:
        raise UserError("`local` is the built-in compute target (this machine)", remedy="Pick another name.")
    if not re.match(COMPUTE_NAME_PATTERN, name):
        raise UserError(
            f"compute target name {name!r}: use lowercase letters, digits and -, starting with a letter (32 at most)",
            remedy="For example: `chattune compute start-ray dev`.",
        )


def check_address(address: str) -> None:
    """A Ray address: ``auto``, ``ray://host:port`` or ``host:port``.

    Raises:
        UserError: It is none of these.
    """
    if not _ADDRESS.match(address) or (address != "auto" and not 0 < int(address.rsplit(":", 1)[1]) < 65536):
        raise UserError(
            f"--ray-address {address!r} is not a Ray address",
            remedy="Give `auto` (the cluster this machine is part of), `ray://HOST:PORT` (Ray Client, port 10001 "
            "by default) or a head's GCS address `HOST:PORT` (port 6379 by default).",
        )


class ComputeTargets:
    """The workspace's compute targets: add, start and stop local Ray clusters, list them with their resources.

    Args:
        store: The workspace database.
    """

    def __init__(self, store: ComputeStore) -> None:
        self.store = store

    def add(self, name: str, ray_address: str, serve_port: int | None = None) -> ComputeTarget:
        """Record an existing Ray cluster by address under ``name``.

        ``serve_port``: the port of its Ray Serve HTTP proxy on the head (None: Serve's default, 8000).

        Raises:
            UserError: A bad name or address.
            ConflictError: The name is taken.
        """
        check_name(name)
        check_address(ray_address)
        if serve_port is not None and not 0 < serve_port < 65536:
            raise UserError(f"--serve-port {serve_port} is not a port", remedy="Give 1-65535 (Serve's default: 8000).")
        target = ComputeTarget(
            name=name, kind=ComputeKind.RAY, address=ray_address, created_at=time.time(), serve_port=serve_port
        )
        self.store.add_compute_target(target)
        return target

    def start_ray(
        self, name: str, *, workers: int = 1, cpus_per_node: int = 1, object_store_mb: int = 256
    ) -> ComputeTarget:
        """Start a Ray head and ``workers`` worker nodes on this machine and record them as ``name``.

        Raises:
            UserError: A bad name or count.
            ConflictError: The name is taken (nothing is started).
            ProcessError: A node did not start (what started is stopped again).
        """
        check_name(name)
        if workers < 0 or cpus_per_node < 1 or object_store_mb < 80:
            raise UserError(
                "--workers must be >= 0, --cpus-per-node >= 1 and --object-store-mb >= 80 (Ray's minimum)",
                remedy="For example: `chattune compute start-ray dev --workers 1 --cpus-per-node 1`.",
            )
        self._free(name)
        cluster = ray_cluster.start(workers=workers, cpus_per_node=cpus_per_node, object_store_mb=object_store_mb)
        target = ComputeTarget(
            name=name,
            kind=ComputeKind.RAY,
            address=ray_cluster.address(cluster),
            created_at=time.time(),
            local_cluster=cluster,
            serve_port=ray_cluster.free_port(),  # Serve's proxy, on loopback, once a deployment runs there
        )
        try:
            self.store.add_compute_target(target)
        except ChattuneError:
            ray_cluster.stop(cluster)
            raise
        return target

    def _free(self, name: str) -> None:
        names = {t.name for t in self.store.list_compute_targets()}
        if name in names:
            raise ConflictError(
                f"compute target {name!r} already exists",
                remedy=f"Pick another name, or stop it first with `chattune compute stop-ray {name}`.",
            )

    def stop_ray(self, name: str) -> list[int]:
        """Stop the local cluster chattune started as ``name`` (only its processes) and forget the target.

        Returns:
            The pids that did not stop on SIGTERM and were killed.

        Raises:
            NotFoundError: No such target.
            UserError: The target is a cluster chattune did not start (``compute remove`` forgets it).
        """
        target = self.get(name)
        if target.local_cluster is None:
            raise UserError(
                f"compute target {name!r} ({target.address}) was not started by chattune; it is not stopped here",
                remedy=f"Forget it with `chattune compute remove {name}`; stop the cluster where it was started.",
            )
        killed = ray_cluster.stop(target.local_cluster)
        self.store.delete_compute_target(name)
        return killed

    def remove(self, name: str) -> None:
        """Forget a target added by address.

        Raises:
            NotFoundError: No such target.
            UserError: It is a running local cluster (``compute stop-ray`` stops and forgets it).
        """
        target = self.get(name)
        if target.local_cluster is not None and ray_cluster.processes(target.local_cluster):
            raise UserError(
                f"compute target {name!r} is a Ray cluster chattune started and it is running",
                remedy=f"Stop it with `chattune compute stop-ray {name}`.",
            )
        self.store.delete_compute_target(name)

    def get(self, name: str) -> ComputeTarget:
        """A recorded target (not ``local``).

        Raises:
            NotFoundError: No such target (the message lists those there are).
        """
        return self.store.get_compute_target(name)

    def list(self) -> builtins.list[ComputeTarget]:
        """The recorded targets, oldest first (``local`` is not among them)."""
        return list(self.store.list_compute_targets())

    def status(self, name: str) -> TargetStatus:
        """What ``name`` has now: this machine for ``local``, else what its Ray cluster reports.

        An unreachable cluster is a status with ``reachable`` False and the reason, not an error.
        """
        if name == LOCAL_COMPUTE:
            return local_status(detect())
        target = self.get(name)
        status = TargetStatus(
            name=target.name,
            kind=target.kind,
            address=target.address,
            reachable=False,
            managed=target.local_cluster is not None,
        )
        try:
            status.ray_version, status.nodes = ray_probe.describe(target.address, driver_env(target))
            status.reachable = True
        except ChattuneError as exc:
            status.error = exc.message
        return status

    def statuses(self) -> builtins.list[TargetStatus]:
        """``local`` and every recorded target, each with what it reports now."""
        return [self.status(LOCAL_COMPUTE), *(self.status(t.name) for t in self.list())]

    def fits(self, name: str, *, workers: int, cpus_per_worker: float, use_gpu: bool) -> TargetStatus:
        """The target's status, checked to hold ``workers`` training workers.

        Raises:
            NotFoundError: No such target.
            ComputeError: It cannot be reached, or it has too few CPUs or GPUs for the workers.
        """
        status = self.status(name)
        if not status.reachable:
            raise ComputeError(
                f"compute target {name!r} ({status.address}) cannot be reached: {status.error}",
                remedy="Start it (`chattune compute start-ray`) or check its address (`chattune compute list`).",
            )
        info = status.to_dict()
        needed_cpus = workers * cpus_per_worker
        problems = []
        if info["cpus"] < needed_cpus:
            problems.append(f"{workers} workers x {cpus_per_worker} CPUs need {needed_cpus:g}, it has {info['cpus']:g}")
        if use_gpu and info["gpus"] < workers:
            problems.append(f"{workers} GPU workers need {workers} GPUs, it has {info['gpus']:g}")
        if problems:
            raise ComputeError(
                f"compute target {name!r}: " + "; ".join(problems),
                remedy="Lower resources.instance_count, processes_per_instance or cpus_per_process, or add nodes.",
            )
        return status


def local_status(info: ComputeInfo) -> TargetStatus:
    """This machine as the ``local`` target: one node with its cores, GPUs and RAM."""
    node = RayNode(
        node_id="local",
        address="127.0.0.1",
        alive=True,
        is_head=True,
        cpus=float(info.cpu_cores),
        gpus=float(len(info.gpus)),
        memory_gb=info.ram_gb,
        object_store_gb=0.0,
    )
    return TargetStatus(name=LOCAL_COMPUTE, kind=ComputeKind.LOCAL, address=None, reachable=True, nodes=[node])


def driver_env(target: ComputeTarget) -> dict[str, str]:
    """What a driver process (the job runner, a probe) needs in its environment to use ``target``.

    A cluster chattune started: its token file. A cluster added by address: nothing; Ray
    reads the user's own ``RAY_AUTH_TOKEN`` / ``RAY_AUTH_TOKEN_PATH`` / ``~/.ray/auth_token``.
    """
    return ray_cluster.cluster_env(target.local_cluster) if target.local_cluster else {}
