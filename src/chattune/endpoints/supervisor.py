"""The instances behind an endpoint, kept running by its gateway: start, probe, restart, scale, stop.

The gateway is the only writer of each deployment's ``instances``; the CLI and SDK write the desired state
(a new deployment, an instance count, ``Deleting``) and wait for the gateway to act on it. So a restarted gateway
(`chattune endpoints up`) adopts the instances still running and starts the ones that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chattune import processes
from chattune.entities import Deployment, ProvisioningState
from chattune.errors import ChattuneError
from chattune.registry import Registry
from chattune.serving.instance import SETTINGS_ENV
from chattune.serving.keys import INSTANCE_TOKEN_ENV, INSTANCE_TOKEN_FILE, instance_token
from chattune.settings import Settings
from chattune.store.base import Store

log = logging.getLogger("chattune.supervisor")

STARTUP_POLL_S = 0.5
# An instance that dies before it was ever ready is retried this often before the deployment is marked Failed.
MAX_START_ATTEMPTS = 3


@dataclass
class Instance:
    """One serving process of a deployment, as the gateway supervises it."""

    deployment: str
    index: int
    pid: int | None = None
    port: int | None = None
    state: str = "Starting"  # Starting, Ready, NotReady, Failed
    restarts: int = 0
    started_at: float = field(default_factory=time.time)
    ever_ready: bool = False
    in_flight: int = 0  # requests holding a lease on it (chattune.endpoints.routing)
    live_failures: int = 0
    ready_failures: int = 0
    ready_successes: int = 0
    next_probe: float = 0.0
    error: str | None = None

    @property
    def url(self) -> str:
        """The instance's base URL on loopback."""
        return f"http://127.0.0.1:{self.port}"

    def record(self) -> dict[str, Any]:
        """The instance as stored in its deployment's ``instances`` column."""
        keys = ("index", "pid", "port", "state", "restarts", "started_at", "error")
        return {k: getattr(self, k) for k in keys}


def instance_args(registry: Registry, dep: Deployment) -> list[str]:
    """The serving process's arguments for a deployment: base weights, its adapter and any extra adapters."""
    mv = registry.get(f"{dep.model_name}:{dep.model_version}")
    # A LoRA version is served over its base model; a full fine-tune is a complete model of its own.
    args = ["--base", mv.base_model_path if mv.kind == "lora" else mv.path, "--name", mv.id]
    args += ["--base-name", mv.base_model]
    if mv.kind == "lora":
        args += ["--adapter", mv.path]
        if mv.lineage.get("chat_template_sha256"):
            args += ["--template-sha256", mv.lineage["chat_template_sha256"]]
    for ref in dep.extra_models:
        extra = registry.get(ref)
        args += ["--extra-adapter", f"{extra.id}={extra.path}"]
    return args


class Supervisor:
    """Keeps an endpoint's deployments at their instance counts: starts, probes, restarts and stops instances.

    Runs in the endpoint's gateway; the workspace database is its desired state, and it records each instance there.

    Args:
        settings: The workspace settings.
        store: The workspace database.
        endpoint: The endpoint whose deployments it supervises.
    """

    def __init__(self, settings: Settings, store: Store, endpoint: str):
        self.settings = settings
        self.store = store
        self.endpoint = endpoint
        self.registry = Registry(settings, store)
        self.token = instance_token(settings.endpoints_dir / endpoint / INSTANCE_TOKEN_FILE)
        self.instances: dict[str, list[Instance]] = {}
        self.restarts_total = 0
        self._client = httpx.AsyncClient()

    def log_path(self, deployment: str) -> Path:
        """The log file of a deployment's instances."""
        return self.settings.endpoints_dir / self.endpoint / f"{deployment}.log"

    # lifecycle ------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Reconcile forever, every startup poll interval; a failed pass is logged and the next one runs."""
        while True:
            try:
                await self.reconcile()
            except Exception:  # the loop must outlive any one bad tick
                log.exception("reconcile failed")
            await asyncio.sleep(STARTUP_POLL_S)

    async def reconcile(self) -> None:
        """One pass: stop the instances of deleted deployments, then bring every deployment to its desired instances."""
        deployments = {d.name: d for d in self.store.list_deployments(self.endpoint)}
        for gone in set(self.instances) - set(deployments):
            for inst in self.instances.pop(gone):
                await _stop(inst.pid)
        for dep in deployments.values():
            if dep.state == ProvisioningState.DELETING:
                for inst in self.instances.pop(dep.name, self._adopt(dep)):
                    await _stop(inst.pid)
                self.store.delete_deployment(self.endpoint, dep.name)
                continue
            await self._reconcile_deployment(dep)

    def _adopt(self, dep: Deployment) -> list[Instance]:
        """Instances recorded by an earlier gateway: kept when their process is still there."""
        adopted = []
        for rec in dep.instances:
            inst = Instance(dep.name, rec["index"], rec.get("pid"), rec.get("port"), "Starting", rec.get("restarts", 0))
            if not processes.alive(inst.pid):
                inst.pid = None
            adopted.append(inst)
        return adopted

    async def _reconcile_deployment(self, dep: Deployment) -> None:
        if dep.name not in self.instances:
            self.instances[dep.name] = self._adopt(dep)
        insts = self.instances[dep.name]
        while len(insts) < dep.instance_count:
            insts.append(Instance(dep.name, len(insts)))
        while len(insts) > dep.instance_count:
            await _stop(insts.pop().pid)
        if dep.state == ProvisioningState.FAILED:
            return
        now = time.time()
        for inst in insts:
            if inst.state == "Failed":
                continue
            if inst.pid is None or not processes.alive(inst.pid):
                await self._restart(dep, inst, "process exited" if inst.pid else None)
                continue
            await self._probe(dep, inst, now)
        failed = [i for i in insts if i.state == "Failed"]
        state: ProvisioningState = dep.state
        if failed and not any(i.ever_ready for i in insts):
            state = ProvisioningState.FAILED
        elif all(i.state == "Ready" for i in insts):
            state = ProvisioningState.SUCCEEDED
        elif dep.state == ProvisioningState.SUCCEEDED and len(insts) != len(dep.instances):
            state = ProvisioningState.UPDATING
        records = [i.record() for i in insts]
        if records != dep.instances or state != dep.state:
            self.store.update_deployment(self.endpoint, dep.name, instances=records, state=state)

    async def _restart(self, dep: Deployment, inst: Instance, why: str | None) -> None:
        if why:
            inst.restarts += 1
            self.restarts_total += 1
            log.warning("%s/%s instance %d: %s; restarting", self.endpoint, dep.name, inst.index, why)
            if not inst.ever_ready and inst.restarts >= MAX_START_ATTEMPTS:
                inst.state = "Failed"
                inst.error = f"{why} before it was ready ({inst.restarts} attempts):\n" + processes.tail(
                    self.log_path(dep.name), 30
                )
                return
        await _stop(inst.pid)
        try:
            args = instance_args(self.registry, dep)
        except ChattuneError as exc:
            inst.state, inst.error = "Failed", exc.message
            return
        inst.pid, inst.port = processes.spawn(
            "chattune.serving.instance",
            args,
            self.log_path(dep.name),
            env={INSTANCE_TOKEN_ENV: self.token, SETTINGS_ENV: dep.settings.model_dump_json()},
        )
        inst.state, inst.started_at = "Starting", time.time()
        inst.live_failures = inst.ready_failures = inst.ready_successes = 0
        inst.next_probe = 0.0

    async def _get(self, url: str, timeout: float) -> bool:
        try:
            return (await self._client.get(url, timeout=timeout)).status_code == 200
        except httpx.HTTPError:
            return False

    async def _probe(self, dep: Deployment, inst: Instance, now: float) -> None:
        settings = dep.settings
        readiness, liveness = settings.readiness_probe, settings.liveness_probe
        if inst.state == "Starting":  # start-up: poll readiness quickly, never fail an instance for loading slowly
            if await self._get(f"{inst.url}/health/ready", readiness.timeout):
                inst.ever_ready, inst.state = True, "Ready"
                inst.next_probe = now + readiness.period
            return
        if now < inst.next_probe:
            return
        inst.next_probe = now + min(readiness.period, liveness.period)
        if now < inst.started_at + liveness.initial_delay:
            pass  # Azure's initial_delay: no liveness verdict this soon after the process started
        elif await self._get(f"{inst.url}/health/live", liveness.timeout):
            inst.live_failures = 0
        else:
            inst.live_failures += 1
            if inst.live_failures >= liveness.failure_threshold:
                await self._restart(dep, inst, f"liveness probe failed {inst.live_failures} times")
                return
        if await self._get(f"{inst.url}/health/ready", readiness.timeout):
            inst.ready_failures, inst.ready_successes = 0, inst.ready_successes + 1
            if inst.ready_successes >= readiness.success_threshold:
                inst.state = "Ready"
        else:
            inst.ready_successes, inst.ready_failures = 0, inst.ready_failures + 1
            if inst.ready_failures >= readiness.failure_threshold:
                inst.state = "NotReady"  # out of rotation until it answers again

    async def aclose(self) -> None:
        """Close the HTTP client used for probes."""
        await self._client.aclose()


async def _stop(pid: int | None) -> None:
    """Stop a process without blocking the gateway's event loop (a hung instance gets SIGKILL after 3 s)."""
    await asyncio.to_thread(processes.stop, pid, 3.0)
