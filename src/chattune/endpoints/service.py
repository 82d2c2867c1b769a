"""Endpoint and deployment lifecycle.

Create (keys, gateway process), deploy (instance process), traffic, invoke, delete (every process stopped, ports freed).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from chattune import processes
from chattune.compute.targets import ComputeTargets
from chattune.endpoints.config import FLAGS, deployment_settings
from chattune.endpoints.supervisor import remove_ray_app
from chattune.entities import (
    INSTANCE_SETTINGS,
    LOCAL_COMPUTE,
    Deployment,
    DeploymentSettings,
    Endpoint,
    ModelVersion,
    ProvisioningState,
)
from chattune.errors import (
    ChattuneError,
    ConflictError,
    NotFoundError,
    ProcessError,
    UnreachableError,
    UserError,
    WaitTimeoutError,
)
from chattune.registry import Registry, check_ref
from chattune.serving.keys import INSTANCE_TOKEN_FILE, KEY_TYPES, KeyRing, generate_key, hash_key
from chattune.settings import Settings
from chattune.store.base import Store

# Azure's rule for endpoint and deployment names: 3-32 characters, letters, digits and '-', starting with a letter.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
# Azure lets at most half of the live traffic be mirrored.
MAX_MIRROR_PERCENT = 50


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid endpoint or deployment name.

    Raises:
        UserError: The name is not 3-32 letters, digits or '-', starting with a letter and not ending with '-'.
    """
    if not NAME_RE.fullmatch(name):
        raise UserError(
            f"invalid {kind} name {name!r}",
            remedy="Use 3-32 letters, digits or '-', starting with a letter and not ending with '-'.",
        )
    return name


class EndpointService:
    """Endpoints and their deployments: the operations behind the CLI's and the SDK's endpoint commands.

    Args:
        settings: The workspace settings.
        store: The workspace database.
        registry: The model registry deployments are made from.
    """

    def __init__(self, settings: Settings, store: Store, registry: Registry):
        self.settings = settings
        self.store = store
        self.registry = registry
        self.keyring = KeyRing(settings.credentials_path, settings.home)

    def _dir(self, endpoint: str) -> Path:
        return self.settings.endpoints_dir / endpoint

    def scoring_uri(self, ep: Endpoint) -> str | None:
        """The endpoint's scoring URL on the configured host, or None while it has no port."""
        return ep.scoring_uri(self.settings.host)

    def describe(self, ep: Endpoint) -> dict[str, Any]:
        """The endpoint as ``endpoints show`` presents it: state, URLs, traffic and deployments."""
        return {
            "name": ep.name,
            "state": str(ep.state),
            "auth_mode": ep.auth_mode,
            "scoring_uri": ep.scoring_uri(self.settings.host),
            "openai_base_url": ep.openai_base_url(self.settings.host),
            "traffic": ep.traffic,
            "mirror_traffic": ep.mirror_traffic,
            "deployments": [d.name for d in self.store.list_deployments(ep.name)],
            "created_at": ep.created_at,
        }

    # endpoints ------------------------------------------------------------------------------------------------
    def create(self, name: str, description: str = "", auth_mode: str = "key") -> tuple[Endpoint, dict[str, str]]:
        """Create the endpoint and start its gateway; return it with its two keys (shown once, stored hashed)."""
        check_name("endpoint", name)
        if auth_mode != "key":
            raise UserError(f"auth_mode {auth_mode!r} is not supported", remedy="Use auth_mode 'key'.")
        keys = {t: generate_key() for t in KEY_TYPES}
        ep = Endpoint(
            name=name,
            auth_mode=auth_mode,
            state=ProvisioningState.CREATING,
            created_at=time.time(),
            description=description,
        )
        self.store.create_endpoint(ep, {t: hash_key(k) for t, k in keys.items()})
        self.keyring.save(name, keys)
        try:
            self._start_gateway(name)
        except ChattuneError:
            self.store.update_endpoint(name, state=ProvisioningState.FAILED)
            raise
        return self.store.update_endpoint(name, state=ProvisioningState.SUCCEEDED), keys

    def _start_gateway(self, name: str, port: int = 0) -> None:
        log = self._dir(name) / "gateway.log"
        pid, port = processes.spawn("chattune.endpoints.gateway", ["--endpoint", name], log, self.settings.host, port)
        self.store.update_endpoint(name, pid=pid, port=port)
        processes.wait_until_ready(f"http://{self.settings.host}:{port}/health/live", pid, log, 60)

    def up(self) -> list[Endpoint]:
        """Start every endpoint's gateway that is not running (after a machine restart or a killed gateway).

        Each gateway is started on its old port when that is free. Each gateway adopts the instances still running and
        starts the rest; keys (hashes), traffic and deployments come from the workspace database, so nothing changes for
        clients.
        """
        started = []
        for ep in self.store.list_endpoints():
            if ep.state == ProvisioningState.DELETING or processes.alive(ep.pid):
                continue
            deployments = [d for d in self.store.list_deployments(ep.name) if d.state != ProvisioningState.FAILED]
            for dep in deployments:  # Succeeded again once the gateway has every instance ready
                self.store.update_deployment(ep.name, dep.name, state=ProvisioningState.UPDATING)
            try:
                self._start_gateway(ep.name, ep.port or 0)
            except ChattuneError:
                self._start_gateway(ep.name)  # the old port is taken: a new one (see `endpoints show`)
            for dep in deployments:
                self.wait_deployment(ep.name, dep.name)
            started.append(self.store.update_endpoint(ep.name, state=ProvisioningState.SUCCEEDED))
        return started

    def keys(self, name: str) -> dict[str, str]:
        """The keys as this client received them (the server keeps only hashes)."""
        self.get(name)
        keys = self.keyring.get(name)
        if not keys:
            raise NotFoundError(
                f"no saved keys for endpoint {name!r} on this client",
                remedy=f"Regenerate one: `chattune endpoints regenerate-keys {name} --key primary`.",
            )
        return keys

    def get(self, name: str) -> Endpoint:
        """Look up an endpoint by name, refusing a name that cannot be one.

        Every command that names an endpoint looks it up here (or checks the name itself): a name that cannot be one
        (`../x`, `a/b`, spaces, NUL) is refused as invalid rather than searched for.
        """
        return self.store.get_endpoint(check_name("endpoint", name))

    def list_endpoints(self) -> list[Endpoint]:
        """Every endpoint of the workspace, oldest first."""
        return self.store.list_endpoints()

    def regenerate_key(self, name: str, key_type: str) -> str:
        """Replace the endpoint's ``primary`` or ``secondary`` key with a new one; return the new key.

        The workspace keeps only the new key's hash; the key itself is saved in this client's keyring.
        """
        if key_type not in KEY_TYPES:
            raise UserError(f"--key must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")
        self.get(name)
        key = generate_key()
        self.store.set_key_hash(name, key_type, hash_key(key))  # the gateway reads hashes per request
        self.keyring.save(name, {key_type: key})
        return key

    def _check_split(self, name: str, split: dict[str, int], what: str) -> set[str]:
        check_name("endpoint", name)
        for dep in split:
            check_name("deployment", dep)
        self.get(name)
        deployments = {d.name for d in self.store.list_deployments(name)}
        unknown = sorted(set(split) - deployments)
        if unknown:
            raise UserError(
                f"unknown deployment(s) {', '.join(unknown)} on endpoint {name!r}",
                remedy=f"Deployments: {', '.join(sorted(deployments)) or 'none yet'}.",
            )
        if any(p < 0 or p > 100 for p in split.values()):
            raise UserError(f"each {what} percentage must be between 0 and 100")
        return deployments

    def set_traffic(self, name: str, traffic: dict[str, int]) -> Endpoint:
        """Set the endpoint's live traffic split, in percent per deployment.

        Raises:
            UserError: The split does not sum to 0 or 100, names an unknown deployment, or gives live traffic to a
                deployment that receives mirrored traffic.
        """
        self._check_split(name, traffic, "traffic")
        total = sum(traffic.values())
        if total not in (0, 100):
            raise UserError(f"traffic must sum to 0 or 100, not {total}", remedy="e.g. `blue=90 green=10`.")
        mirrored = {d for d, p in self.store.get_endpoint(name).mirror_traffic.items() if p > 0}
        both = sorted(d for d, p in traffic.items() if p > 0 and d in mirrored)
        if both:
            raise UserError(
                f"deployment(s) {', '.join(both)} receive mirrored traffic and cannot also take live traffic",
                remedy=f"Stop the mirror first: `chattune endpoints mirror {name} {both[0]}=0`.",
            )
        return self.store.update_endpoint(name, traffic=traffic)

    def set_mirror(self, name: str, mirror: dict[str, int]) -> Endpoint:
        """Copy a share of live traffic to a shadow deployment; its answers are discarded (Azure's rules)."""
        self._check_split(name, mirror, "mirror")
        active = {d: p for d, p in mirror.items() if p > 0}
        if len(active) > 1:
            raise UserError("mirror traffic goes to one deployment at a time", remedy="e.g. `green=10`.")
        traffic = self.store.get_endpoint(name).traffic
        for dep, pct in active.items():
            if pct > MAX_MIRROR_PERCENT:
                raise UserError(f"mirror traffic is at most {MAX_MIRROR_PERCENT}%, not {pct}%")
            if traffic.get(dep, 0) > 0:
                raise UserError(
                    f"deployment {dep!r} receives {traffic[dep]}% of live traffic; a mirror target must have none",
                    remedy="Mirror to a deployment at 0% live traffic (e.g. a new green).",
                )
        return self.store.update_endpoint(name, mirror_traffic=active)

    def delete(self, name: str) -> None:
        """Stop the gateway (so nothing restarts the instances), every instance, then remove the endpoint."""
        ep = self.get(name)
        self.store.update_endpoint(name, state=ProvisioningState.DELETING)
        processes.stop(ep.pid)
        for dep in self.store.list_deployments(name):
            for inst in dep.instances:
                processes.stop(inst.get("pid"))
            if dep.compute != LOCAL_COMPUTE:
                remove_ray_app(self.store, dep)
            self.store.delete_deployment(name, dep.name)
        self.store.delete_endpoint(name)
        self.keyring.forget(name)
        # Its logs stay for inspection; its instances' token goes with it (an endpoint of the same name gets its own).
        (self._dir(name) / INSTANCE_TOKEN_FILE).unlink(missing_ok=True)

    # deployments ----------------------------------------------------------------------------------------------
    def _gateway_running(self, ep: Endpoint) -> None:
        if not processes.alive(ep.pid):
            raise ConflictError(
                f"endpoint {ep.name!r} has no running gateway", remedy="Start it with `chattune endpoints up`."
            )

    def deploy(
        self,
        endpoint: str,
        name: str,
        model_ref: str,
        settings: DeploymentSettings | None = None,
        *,
        extra_models: list[str] | None = None,
        compute: str = LOCAL_COMPUTE,
        share_base_with: str | None = None,
        wait: bool = True,
    ) -> Deployment:
        """Record the deployment; the endpoint's gateway starts its instances.

        Args:
            endpoint: The endpoint's name.
            name: The deployment's name.
            model_ref: The registered model version served (NAME:VERSION or NAME@ALIAS).
            settings: How it serves (timeouts, concurrency, probes, instances, engine); defaults when None.
            extra_models: More LoRA versions of the same base, served from the one loaded base.
            compute: Where its instances run: ``local`` (processes the gateway supervises) or a Ray compute target
                (replicas of a Ray Serve application; autoscaling bounds only there).
            share_base_with: Another deployment of the endpoint, serving a LoRA version of the same base: its
                instances load this deployment's adapter beside their own, over the base they have loaded already,
                and serve both in the same batches. This deployment then has no instances of its own (so no
                instance settings); its traffic, keys, timeouts and queue are its own.
            wait: Return only once every instance is ready (or the deployment failed).

        Returns:
            The deployment as recorded (ready, when ``wait``).
        """
        settings = settings or DeploymentSettings()
        check_name("endpoint", endpoint)
        check_name("deployment", name)
        for ref in [model_ref, *(extra_models or [])]:
            check_ref(ref)
        self._check_compute(compute, settings)
        ep = self.get(endpoint)
        if ep.state != ProvisioningState.SUCCEEDED:
            raise ConflictError(f"endpoint {endpoint!r} is {ep.state}")
        self._gateway_running(ep)
        mv = self.registry.get(model_ref)
        self.registry.check_template(mv)
        extras = [self._extra(mv, ref) for ref in extra_models or []]
        if share_base_with is not None:
            self._check_sharing(endpoint, mv, share_base_with, settings, extras, compute)
        dep = Deployment(
            endpoint=endpoint,
            name=name,
            model_name=mv.name,
            model_version=mv.version,
            state=ProvisioningState.CREATING,
            created_at=time.time(),
            log_path=str(self._dir(endpoint) / f"{share_base_with or name}.log"),  # a guest's is its host's
            extra_models=extras,
            compute=compute,
            share_base_with=share_base_with,
            **settings.columns(),
        )
        self.store.create_deployment(dep)
        return self.wait_deployment(endpoint, name) if wait else dep

    def _check_compute(self, compute: str, settings: DeploymentSettings) -> None:
        """A deployment's compute: ``local`` or a recorded Ray target; autoscaling and CPUs need Ray Serve.

        Raises:
            NotFoundError: No such target.
            UserError: Autoscaling bounds on ``local`` (its gateway keeps a fixed instance count), or CPUs per
                instance (a local instance uses the machine's).
        """
        if compute != LOCAL_COMPUTE:
            ComputeTargets(self.store).get(compute)
        elif "cpus_per_instance" in settings.model_fields_set:
            raise UserError(
                "--cpus-per-instance is what Ray reserves per replica: it needs a Ray compute target",
                remedy="Deploy with --compute NAME, or leave it out (a local instance uses this machine's CPUs).",
            )
        elif settings.autoscale is not None:
            raise UserError(
                "--min-instances/--max-instances need a Ray compute target: local instances keep a fixed count",
                remedy="Deploy with --compute NAME (a Ray target, `chattune compute list`), or give --instances.",
            )

    def _extra(self, main: ModelVersion, ref: str, flag: str = "--extra-model") -> str:
        """An extra adapter served from the same loaded base: a LoRA version of the same base model."""
        mv = self.registry.get(ref)
        if mv.kind != "lora" or main.kind != "lora" or mv.base_model_hash != main.base_model_hash:
            raise UserError(
                f"{flag} {ref}: only LoRA versions of the same base as {main.id} share one loaded base",
                remedy=f"{main.id} is {main.kind} on {main.base_model}; {mv.id} is {mv.kind} on {mv.base_model}.",
            )
        self.registry.check_template(mv)
        return mv.id

    def _check_sharing(
        self,
        endpoint: str,
        mv: ModelVersion,
        host_name: str,
        settings: DeploymentSettings,
        extras: list[str],
        compute: str,
    ) -> None:
        """Check a deployment served from ``host_name``'s instances.

        The host is a local LoRA deployment of the same base that is not itself served from another's instances,
        and the new deployment gives no instance settings of its own (the instances are the host's).

        Raises:
            UserError: naming ``--share-base-with`` or the flag that does not apply.
        """
        check_name("deployment", host_name)
        flag = f"--share-base-with {host_name}"
        try:
            host = self.store.get_deployment(endpoint, host_name)
        except NotFoundError:
            have = ", ".join(d.name for d in self.store.list_deployments(endpoint)) or "none"
            raise UserError(f"{flag}: no deployment {host_name!r} on endpoint {endpoint!r} (have: {have})") from None
        if host.share_base_with is not None:
            raise UserError(
                f"{flag}: {host_name!r} is itself served from {host.share_base_with!r}'s instances",
                remedy=f"Share the base with {host.share_base_with!r}, the deployment that has the instances.",
            )
        if compute != LOCAL_COMPUTE or host.compute != LOCAL_COMPUTE:
            raise UserError(f"{flag}: only local deployments share instances (not Ray Serve applications)")
        host_mv = self.registry.get(f"{host.model_name}:{host.model_version}")
        self._extra(host_mv, mv.id, flag="--model")
        instance_side = sorted(set(settings.model_fields_set) & INSTANCE_SETTINGS)
        if instance_side or extras:
            flags = {**FLAGS, "autoscale": "--max-instances"}
            given = [flags[name] for name in instance_side] + ["--extra-model"] * bool(extras)
            raise UserError(
                f"{flag}: {', '.join(given)} set how instances run, and this deployment runs on {host_name!r}'s",
                remedy=f"Leave them out; set them on {host_name!r} (or deploy without {flag}).",
            )

    def wait_deployment(self, endpoint: str, name: str, timeout_s: float | None = None) -> Deployment:
        """Until every instance is ready (Succeeded) or the gateway gives up on them (Failed)."""
        deadline = time.monotonic() + (timeout_s or self.settings.ready_timeout_s)
        while True:
            dep = self.store.get_deployment(endpoint, name)
            if dep.state == ProvisioningState.SUCCEEDED:
                return dep
            if dep.state == ProvisioningState.FAILED:
                errors = [i.get("error") for i in dep.instances if i.get("error")]
                raise ProcessError(
                    f"deployment {name!r} failed: {errors[0] if errors else 'see its log'}",
                    remedy=f"`chattune deployments logs --endpoint {endpoint} --name {name}`.",
                )
            if time.monotonic() > deadline:
                raise WaitTimeoutError(
                    f"deployment {name!r} not ready after {self.settings.ready_timeout_s:.0f}s "
                    f"(state {dep.state}):\n{processes.tail(Path(dep.log_path or ''), 20)}"
                )
            self._gateway_running(self.store.get_endpoint(endpoint))
            time.sleep(0.2)

    def scale(self, endpoint: str, name: str, instance_count: int) -> Deployment:
        """Change a deployment's instance count and wait until the gateway has it running."""
        check_name("endpoint", endpoint)
        check_name("deployment", name)
        deployment_settings({"instance_count": instance_count})  # the bound, as a user error naming --instances
        dep = self.get_deployment(endpoint, name)
        if dep.share_base_with:
            raise UserError(
                f"deployment {name!r} is served from {dep.share_base_with!r}'s instances; it has none of its own",
                remedy=f"Scale {dep.share_base_with!r}: `chattune deployments update --endpoint {endpoint} "
                f"--name {dep.share_base_with} --instances N`.",
            )
        if dep.autoscale:
            raise UserError(
                f"deployment {name!r} autoscales between {dep.autoscale['min_instances']} and "
                f"{dep.autoscale['max_instances']} instances; --instances does not apply",
                remedy="Create it again without --min-instances/--max-instances for a fixed count.",
            )
        self.store.update_deployment(endpoint, name, instance_count=instance_count, state=ProvisioningState.SCALING)
        return self.wait_deployment(endpoint, name)

    def get_deployment(self, endpoint: str, name: str) -> Deployment:
        """A deployment of an endpoint; NotFoundError if there is none."""
        check_name("endpoint", endpoint)
        check_name("deployment", name)
        self.get(endpoint)
        return self.store.get_deployment(endpoint, name)

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        """The endpoint's deployments, oldest first."""
        self.get(endpoint)
        return self.store.list_deployments(endpoint)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        """Delete a deployment: its gateway stops its instances; without a running gateway they are stopped here.

        Raises:
            ConflictError: The deployment still receives live or mirrored traffic, or others are served from its
                instances.
        """
        dep = self.get_deployment(endpoint, name)
        ep = self.store.get_endpoint(endpoint)
        guests = [d.name for d in self.store.list_deployments(endpoint) if d.share_base_with == name]
        if guests:
            raise ConflictError(
                f"deployment {name!r} serves {', '.join(guests)} from its instances (--share-base-with {name})",
                remedy="Delete those deployments first.",
            )
        if ep.traffic.get(name, 0) > 0:
            raise ConflictError(
                f"deployment {name!r} still receives {ep.traffic[name]}% of traffic",
                remedy=f"Move its traffic first: `chattune endpoints traffic {endpoint} OTHER=100`.",
            )
        mirrored = ep.mirror_traffic.get(name, 0)
        if mirrored > 0:
            raise ConflictError(
                f"deployment {name!r} still receives {mirrored}% mirrored traffic",
                remedy=f"Stop the mirror first: `chattune endpoints mirror {endpoint} {name}=0`.",
            )
        self.store.update_deployment(endpoint, name, state=ProvisioningState.DELETING)
        deadline = time.monotonic() + 60
        while processes.alive(ep.pid) and time.monotonic() < deadline:
            try:
                self.store.get_deployment(endpoint, name)
            except NotFoundError:
                return  # the gateway stopped the instances and removed the row
            time.sleep(0.2)
        for inst in dep.instances:  # no gateway to do it
            processes.stop(inst.get("pid"))
        if dep.compute != LOCAL_COMPUTE:
            remove_ray_app(self.store, dep)
        self.store.delete_deployment(endpoint, name)

    def logs(self, endpoint: str, name: str, lines: int = 50) -> str:
        """The last ``lines`` lines of the deployment's log."""
        dep = self.get_deployment(endpoint, name)
        return processes.tail(Path(dep.log_path), lines) if dep.log_path else ""

    # invoke ---------------------------------------------------------------------------------------------------
    def invoke(
        self,
        endpoint: str,
        request_file: Path,
        key: str | None = None,
        deployment: str | None = None,
        timeout_s: float = 180.0,
    ) -> Any:
        """POST the request file to the endpoint's /score, as ``online_endpoints.invoke`` does.

        Without ``key``, the primary key this client saved is used.
        """
        check_name("endpoint", endpoint)
        if deployment:
            check_name("deployment", deployment)
        ep = self.get(endpoint)
        key = key or self.keyring.get(endpoint).get("primary")
        if not key:
            raise UserError(
                f"no key for endpoint {endpoint!r}: none given and none saved on this client",
                remedy="Pass --key (or set CHATTUNE_ENDPOINT_KEY), or regenerate one with `endpoints regenerate-keys`.",
            )
        try:
            body = json.loads(Path(request_file).read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise UserError(f"--request-file {request_file}: file not found") from exc
        except json.JSONDecodeError as exc:
            raise UserError(f"--request-file {request_file}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
        headers = {"Authorization": f"Bearer {key}"}
        if deployment:
            headers["azureml-model-deployment"] = deployment
        uri = ep.scoring_uri(self.settings.host)
        if not uri:
            raise ConflictError(f"endpoint {endpoint!r} has no running gateway")
        try:
            r = httpx.post(uri, json=body, headers=headers, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise UnreachableError(f"endpoint {endpoint!r} unreachable at {uri}: {exc}") from exc
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:500]
            err = UserError if r.status_code < 500 else ChattuneError
            raise err(f"endpoint {endpoint!r} answered {r.status_code}: {message}")
        return r.json()
