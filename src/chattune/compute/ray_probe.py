"""What a Ray cluster reports about its nodes (``ray.nodes()``), asked from a short-lived process of its own.

``describe(address, env)`` runs ``python -m chattune.compute.ray_probe ADDRESS``: that process connects as a
driver, reads ``ray.nodes()`` and prints them as JSON. A process per question keeps each target's token and
address out of the caller (Ray caches both per process) and bounds an unreachable address by a timeout.
"""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from chattune.errors import UnreachableError
from chattune.processes import child_env

TIMEOUT_S = 60.0


@dataclass
class RayNode:
    """One node as Ray reports it: its resources (CPUs, GPUs, memory in GB) and whether it is alive."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus: float
    gpus: float
    memory_gb: float
    object_store_gb: float


def _node(raw: dict[str, Any]) -> RayNode:
    res = raw.get("Resources") or {}
    return RayNode(
        node_id=str(raw.get("NodeID", "")),
        address=str(raw.get("NodeManagerAddress", "")),
        alive=bool(raw.get("Alive")),
        is_head="node:__internal_head__" in res,
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        memory_gb=round(float(res.get("memory", 0.0)) / 2**30, 2),
        object_store_gb=round(float(res.get("object_store_memory", 0.0)) / 2**30, 2),
    )


def _listening(address: str) -> None:
    """Fail fast where nothing listens at a ``host:port`` address (Ray itself retries for a minute)."""
    if address == "auto":
        return
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise UnreachableError(
            f"nothing answers at {host}:{port} ({exc.strerror or exc})",
            remedy="Check the address and that the cluster is up (`ray status` on its head).",
        ) from exc


def describe(address: str, env: dict[str, str], timeout_s: float = TIMEOUT_S) -> tuple[str, list[RayNode]]:
    """Ray's version and the nodes of the cluster at ``address``, living ones first.

    Args:
        address: A Ray address (``auto``, ``ray://host:port``, ``host:port``).
        env: Added to the probe's environment (a local cluster's token).
        timeout_s: How long to wait for the cluster to answer.

    Raises:
        UnreachableError: The cluster did not answer (the probe's last lines say why).
    """
    _listening(address)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "chattune.compute.ray_probe", address],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=child_env(**env),
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise UnreachableError(
            f"the Ray cluster at {address} did not answer within {timeout_s:.0f}s",
            remedy="Check the address and that the cluster is up (`ray status` on its head).",
        ) from exc
    if proc.returncode != 0:
        why = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise UnreachableError(
            f"cannot connect to the Ray cluster at {address}: {why}",
            remedy="Check the address, that the cluster is up, and its token (RAY_AUTH_TOKEN or ~/.ray/auth_token).",
        )
    doc = json.loads(proc.stdout.strip().splitlines()[-1])
    nodes = sorted((_node(n) for n in doc["nodes"]), key=lambda n: (not n.alive, not n.is_head, n.address))
    return str(doc["ray_version"]), nodes


def main(address: str) -> None:
    """Connect to ``address`` as a driver and write ``{"ray_version", "nodes"}`` (``ray.nodes()``) on stdout."""
    import ray

    ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, configure_logging=False)
    try:
        doc = {"ray_version": ray.__version__, "nodes": ray.nodes()}
    finally:
        ray.shutdown()
    sys.stdout.write(json.dumps(doc, default=str) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
