"""The instances behind an endpoint, kept running by its gateway: start, probe, restart, scale, stop.

The gateway is the only writer of each deployment's ``instances``; the CLI and SDK write the desired state
(a new deployment, an instance count, ``Deleting``) and wait for the gateway to act on it. So a restarted gateway
(`chattune endpoints up`) adopts the instances still running and starts the ones that are gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from chattune import processes
from chattune.compute.targets import ComputeTargets, driver_env
from chattune.entities import LOCAL_COMPUTE, Deployment, ProvisioningState
from chattune.errors import ChattuneError
from chattune.registry import Registry
from chattune.serving import ray_serve
from chattune.serving.instance import SETTINGS_ENV
from chattune.serving.keys import INSTANCE_TOKEN_ENV, INSTANCE_TOKEN_FILE, instance_token
from chattune.settings import Settings
from chattune.store.base import Store

log = logging.getLogger("chattune.supervisor")

STARTUP_POLL_S = 0.5
# Loading an adapter waits for the running batch's next step.
ADAPTER_TIMEOUT_S = 60.0
# How long a PUT /threads may take: the instance applies it after its current decoding step. A pass that waits
# longer moves on (the call is repeated on the next pass), so a stuck instance does not hold up the others' probes.
THREADS_TIMEOUT_S = 5.0
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
    # A deployment on a Ray target has one "instance": its Serve application, reached through Serve's proxy at
    # host:port/prefix, holding up to `slots` x max concurrency requests (its replicas); `pid` is its driver.
    host: str = "127.0.0.1"
    prefix: str = ""
    slots: int = 1
    config: str | None = None  # the settings it was deployed with (a Ray application is redeployed when they change)
    replicas: dict[str, dict[str, int]] = field(default_factory=dict)  # Serve's: {deployment: {replica state: n}}
    # The adapters of deployments served from this one's instances (--share-base-with) it has: {model id: path}.
    adapters: dict[str, str] = field(default_factory=dict)
    threads: int | None = None  # the torch threads a local instance confirmed it runs on (None: not told yet)

    @property
    def url(self) -> str:
        """The instance's base URL (a local instance's on loopback; a Ray application's through Serve's proxy)."""
        return f"http://{self.host}:{self.port}{self.prefix}"

    def record(self) -> dict[str, Any]:
        """The instance as stored in its deployment's ``instances`` column."""
        keys = ("index", "pid", "port", "state", "restarts", "started_at", "error")
        if self.prefix:
            return {k: getattr(self, k) for k in (*keys, "host", "prefix", "slots", "replicas")}
        extra = (("threads",) if self.threads else ()) + (("adapters",) if self.adapters else ())
        return {k: getattr(self, k) for k in (*keys, *extra)}


def served_models(dep: Deployment) -> set[str]:
    """The model ids a deployment's own instances serve whatever shares them: its model and extra models."""
    return {f"{dep.model_name}:{dep.model_version}", *dep.extra_models}


def instance_args(registry: Registry, dep: Deployment, guests: dict[str, str] | None = None) -> list[str]:
    """The serving process's arguments for a deployment: base weights, its adapter and any extra adapters.

    ``guests``: {model id: path} of the adapters of deployments served from its instances, loaded too.
    """
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
    for model, path in (guests or {}).items():
        args += ["--extra-adapter", f"{model}={path}"]
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
        # Deployments served from another's instances (--share-base-with): the adapters each host should have
        # ({host: {model id: path}}), the hosts as last read, and adapters that failed to load ({model id: why}).
        self.guests: dict[str, dict[str, str]] = {}
        self.hosts: dict[str, Deployment] = {}
        self.adapter_errors: dict[str, str] = {}
        # The torch threads each local instance gets: this machine's cores shared out between the local instances
        # of every endpoint of the workspace (None: OMP_NUM_THREADS in the environment chooses).
        self.threads: int | None = None
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
        live: dict[str, Deployment] = {}
        for dep in deployments.values():
            if dep.state == ProvisioningState.DELETING:
                if dep.share_base_with is None:  # a guest has no processes: its host unloads its adapter
                    for inst in self.instances.pop(dep.name, self._adopt(dep)):
                        await _stop(inst.pid)
                if dep.compute != LOCAL_COMPUTE:
                    await asyncio.to_thread(remove_ray_app, self.store, dep)
                self.store.delete_deployment(self.endpoint, dep.name)
                continue
            live[dep.name] = dep
        hosts = {name: dep for name, dep in live.items() if dep.share_base_with is None}
        self.threads = processes.threads_each(self._machine_instances(hosts))
        self.hosts, self.guests = hosts, {name: self._guest_adapters(dep, live) for name, dep in hosts.items()}
        for dep in hosts.values():
            await self._reconcile_deployment(dep)
        for dep in live.values():
            if dep.share_base_with is not None:
                self._reconcile_guest(dep, hosts.get(dep.share_base_with))

    def _machine_instances(self, own: dict[str, Deployment]) -> int:
        """The workspace's local instances on this machine: those ``own`` (this endpoint's) want, others' that run.

        Another endpoint's instances count while their processes live (a stopped endpoint's deployments run nothing).
        Torch threads of each on every core would oversubscribe the machine (a blue/green pair behind one endpoint as
        much as two endpoints): the supervisor shares the cores out between them.
        """
        wanted = sum(
            dep.settings.instance_count
            for dep in own.values()
            if dep.compute == LOCAL_COMPUTE and dep.state != ProvisioningState.FAILED
        )
        for endpoint in self.store.list_endpoints():
            if endpoint.name == self.endpoint:
                continue
            for dep in self.store.list_deployments(endpoint.name):
                if dep.compute == LOCAL_COMPUTE and dep.share_base_with is None:
                    wanted += sum(1 for rec in dep.instances if processes.alive(rec.get("pid")))
        return wanted

    async def _sync_threads(self, dep: Deployment, inst: Instance) -> None:
        """Tell a ready local instance its share of the cores when it differs from what it runs on."""
        if self.threads is None or inst.threads == self.threads:
            return
        r = await self._instance_call(inst, "PUT", "/threads", {"threads": self.threads}, THREADS_TIMEOUT_S)
        if r is not None and r.status_code == 204:  # else the next pass tries again
            inst.threads = self.threads
            log.info("%s/%s instance %d: %d torch threads", self.endpoint, dep.name, inst.index, self.threads)

    # deployments served from another's instances ------------------------------------------------------------------
    def _guest_adapters(self, host: Deployment, live: dict[str, Deployment]) -> dict[str, str]:
        """{model id: adapter path} of the deployments served from ``host``'s instances, but what it serves anyway."""
        wanted: dict[str, str] = {}
        for dep in live.values():
            model = f"{dep.model_name}:{dep.model_version}"
            if dep.share_base_with != host.name or model in served_models(host) or model in self.adapter_errors:
                continue
            try:
                wanted[model] = self.registry.get(model).path
            except ChattuneError as exc:
                self.adapter_errors[model] = exc.message
        return wanted

    def serving(self, dep: Deployment) -> tuple[list[Instance], int]:
        """The ready instances that serve ``dep`` and how many of its requests each takes at once.

        A deployment served from another's instances gets those that have its adapter, under that one's limit.
        """
        host = self.hosts.get(dep.share_base_with) if dep.share_base_with else dep
        if host is None:
            return [], 0
        model = f"{dep.model_name}:{dep.model_version}"
        ready = [
            i
            for i in self.instances.get(host.name, [])
            if i.state == "Ready" and (host is dep or model in i.adapters or model in served_models(host))
        ]
        return ready, host.settings.max_concurrent_requests_per_instance

    def _reconcile_guest(self, dep: Deployment, host: Deployment | None) -> None:
        """A deployment served from ``host``'s instances: its state and instances as those have its adapter."""
        model = f"{dep.model_name}:{dep.model_version}"
        error = self.adapter_errors.get(model)
        if host is None:
            error = f"deployment {dep.share_base_with!r}, whose instances served it, is gone"
        insts = self.instances.get(host.name, []) if host else []
        has = {i.index for i in insts if model in i.adapters or (host is not None and model in served_models(host))}
        records: list[dict[str, Any]] = [
            {"index": i.index, "state": i.state if i.index in has else "Starting", "on": i.deployment} for i in insts
        ]
        state: ProvisioningState = dep.state
        if error is None and host is not None and host.state == ProvisioningState.FAILED:
            error = f"deployment {host.name!r}, whose instances serve it, failed"
        if error:
            state = ProvisioningState.FAILED
            records = [{"index": 0, "state": "Failed", "error": error}]
        elif insts and all(r["state"] == "Ready" for r in records):
            state = ProvisioningState.SUCCEEDED
        if records != dep.instances or state != dep.state:
            self.store.update_deployment(self.endpoint, dep.name, instances=records, state=state)

    async def _sync_adapters(self, dep: Deployment, inst: Instance) -> None:
        """Load into a ready instance the adapters of the deployments now served from it; unload those gone."""
        wanted = self.guests.get(dep.name, {})
        for model in [m for m in inst.adapters if m not in wanted]:
            if await self._adapter_call(inst, "DELETE", model) is None:
                del inst.adapters[model]
        for model, path in wanted.items():
            if model in inst.adapters:
                continue
            failure = await self._adapter_call(inst, "PUT", model, {"path": path})
            if failure is None:
                inst.adapters[model] = path
            elif failure:  # the instance refused it (an unreadable adapter): the deployment that wants it fails
                self.adapter_errors[model] = failure
                log.warning("%s/%s instance %d: adapter %s not loaded: %s", self.endpoint, dep.name, inst.index,
                            model, failure)  # fmt: skip

    async def _adapter_call(self, inst: Instance, method: str, model: str, body: Any = None) -> str | None:
        """PUT or DELETE /adapters/MODEL on an instance: None when done, the instance's refusal, or "" to retry."""
        path = f"/adapters/{urllib.parse.quote(model, safe='')}"
        r = await self._instance_call(inst, method, path, body, ADAPTER_TIMEOUT_S)
        if r is None:
            return ""  # unreachable now: the next pass tries again (or the instance is restarted with it)
        if r.status_code == 204 or (method == "DELETE" and r.status_code == 404):
            return None  # done (or the adapter was not there to unload)
        if r.status_code >= 500:
            return ""  # still loading its model, or failing: the next pass tries again
        return str(r.json().get("error", {}).get("message", r.text))

    async def _instance_call(
        self, inst: Instance, method: str, path: str, body: Any, timeout: float
    ) -> httpx.Response | None:
        """One of the gateway's own calls on an instance (with the instance token); None when it did not answer."""
        try:
            auth = {"Authorization": f"Bearer {self.token}"}
            return await self._client.request(method, f"{inst.url}{path}", json=body, headers=auth, timeout=timeout)
        except httpx.HTTPError:
            return None

    def _adopt(self, dep: Deployment) -> list[Instance]:
        """Instances recorded by an earlier gateway: kept when their process is still there."""
        adopted = []
        for rec in dep.instances:
            inst = Instance(dep.name, rec["index"], rec.get("pid"), rec.get("port"), "Starting", rec.get("restarts", 0))
            inst.host, inst.prefix, inst.slots = rec.get("host", inst.host), rec.get("prefix", ""), rec.get("slots", 1)
            inst.config = dep.settings.model_dump_json() if inst.prefix else None  # deployed as now recorded
            inst.adapters = dict(rec.get("adapters", {}))
            inst.threads = rec.get("threads")
            if not processes.alive(inst.pid):
                inst.pid = None
            adopted.append(inst)
        return adopted

    async def _reconcile_deployment(self, dep: Deployment) -> None:
        if dep.name not in self.instances:
            self.instances[dep.name] = self._adopt(dep)
        insts = self.instances[dep.name]
        on_ray = dep.compute != LOCAL_COMPUTE
        wanted = 1 if on_ray else dep.instance_count  # on Ray: one application, its replicas are Serve's
        while len(insts) < wanted:
            insts.append(Instance(dep.name, len(insts)))
        while len(insts) > wanted:
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
            if on_ray and inst.config != dep.settings.model_dump_json():
                # New replica count or bounds: the application is updated in place and keeps serving meanwhile.
                serving = inst.state
                await self._restart(dep, inst, None)
                inst.state = serving
                continue
            await self._probe(dep, inst, now)
            if inst.state == "Ready" and not on_ray:
                await self._sync_threads(dep, inst)
                await self._sync_adapters(dep, inst)
        failed = [i for i in insts if i.state == "Failed"]
        state: ProvisioningState = dep.state
        if failed and not any(i.ever_ready for i in insts):
            state = ProvisioningState.FAILED
        elif all(i.state == "Ready" for i in insts):
            state = ProvisioningState.SUCCEEDED
        elif dep.state == ProvisioningState.SUCCEEDED and len(insts) != len(dep.instances):
            state = ProvisioningState.UPDATING
        if on_ray and state == ProvisioningState.SUCCEEDED and not self._serve_caught_up(dep, insts[0]):
            state = dep.state  # Ready through the proxy, but Serve still brings the replicas to the new count
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
            guests = self.guests.get(dep.name, {})
            args = instance_args(self.registry, dep, guests)
            inst.adapters = dict(guests)
            env = {INSTANCE_TOKEN_ENV: self.token, SETTINGS_ENV: dep.settings.model_dump_json()}
            if dep.compute == LOCAL_COMPUTE:
                # Its share of this machine's cores comes once it is ready (_sync_threads), as Ray shares a node's by
                # CPUs: started without OMP_NUM_THREADS, it forks from chattune's preloaded server when one runs.
                inst.threads = None
                log_path = self.log_path(dep.name)
                inst.pid, inst.port = processes.spawn("chattune.serving.instance", args, log_path, env=env)
            else:
                self._start_ray_app(dep, inst, args, env)
        except ChattuneError as exc:
            inst.state, inst.error = "Failed", exc.message
            return
        inst.state, inst.started_at = "Starting", time.time()
        inst.live_failures = inst.ready_failures = inst.ready_successes = 0
        inst.next_probe = 0.0

    def _start_ray_app(self, dep: Deployment, inst: Instance, args: list[str], env: dict[str, str]) -> None:
        """Start the driver that deploys (or updates) the deployment's Serve application (serving.ray_serve)."""
        target = ComputeTargets(self.store).get(dep.compute)
        inst.host, inst.port = target.serve_address
        inst.prefix = ray_serve.route_prefix(self.endpoint, dep.name)
        inst.slots = dep.settings.max_instance_count
        inst.config = dep.settings.model_dump_json()
        own = ["--address", target.address, "--app", ray_serve.app_name(self.endpoint, dep.name)]
        own += ["--route-prefix", inst.prefix, "--host", inst.host, "--port", str(inst.port)]
        own += ["--status-file", str(self._status_path(dep.name))]
        inst.pid = processes.start_module(
            "chattune.serving.ray_serve",
            [*own, "--", *args],
            self.log_path(dep.name),
            env=processes.child_env(**env, **driver_env(target)),
        )

    def _serve_caught_up(self, dep: Deployment, inst: Instance) -> bool:
        """Whether Serve runs the application as the deployment's settings now say (its driver's status file).

        Also keeps the replica counts Serve reports on the instance, for ``deployments show``.
        """
        status = ray_serve.read_status(self._status_path(dep.name))
        inst.replicas = status.get("replicas", {}) if status else {}
        if not status or status.get("settings") != inst.config or status.get("status") != "RUNNING":
            return False
        running = sum(counts.get("RUNNING", 0) for counts in inst.replicas.values())
        scale = dep.settings.autoscale
        low, high = (scale.min_instances, scale.max_instances) if scale else (dep.instance_count, dep.instance_count)
        return low <= running <= high

    def _status_path(self, deployment: str) -> Path:
        return self.settings.endpoints_dir / self.endpoint / f"{deployment}.serve.json"

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


def remove_ray_app(store: Store, dep: Deployment) -> None:
    """Delete a Ray deployment's Serve application from its cluster (its driver is stopped already).

    A cluster that is gone or unreachable is logged, not raised: the deployment is removed from the workspace anyway
    (Serve's application, if the cluster comes back, is removed with ``serve delete`` there).
    """
    try:
        target = ComputeTargets(store).get(dep.compute)
        app = ray_serve.app_name(dep.endpoint, dep.name)
        ray_serve.delete_app(target.address, app, driver_env(target), dep.log_path)
    except ChattuneError as exc:
        log.warning("%s/%s: Serve application not deleted: %s", dep.endpoint, dep.name, exc.message)


async def _stop(pid: int | None) -> None:
    """Stop a process without blocking the gateway's event loop (a hung instance gets SIGKILL after 3 s)."""
    await asyncio.to_thread(processes.stop, pid, 3.0)
