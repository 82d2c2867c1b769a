"""Endpoint and deployment lifecycle: create (keys, gateway process), deploy (instance process), traffic, invoke,
delete (every process stopped, ports freed)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx

from chattune.endpoints import processes
from chattune.endpoints.keys import KEY_TYPES, generate_key, hash_key
from chattune.entities import Deployment, Endpoint, ProvisioningState
from chattune.errors import ChattuneError, ConflictError, UserError
from chattune.registry import Registry
from chattune.settings import Settings
from chattune.store.base import Store

# Azure's rule for endpoint and deployment names: 3-32 characters, letters, digits and '-', starting with a letter.
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9-]{1,30}[A-Za-z0-9]$")
MAX_REQUEST_TIMEOUT_MS = 180_000


def check_name(kind: str, name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise UserError(
            f"invalid {kind} name {name!r}",
            remedy="Use 3-32 letters, digits or '-', starting with a letter and not ending with '-'.",
        )
    return name


class EndpointService:
    def __init__(self, settings: Settings, store: Store, registry: Registry):
        self.settings = settings
        self.store = store
        self.registry = registry

    def _dir(self, endpoint: str) -> Path:
        return self.settings.endpoints_dir / endpoint

    def scoring_uri(self, ep: Endpoint) -> str | None:
        return ep.scoring_uri(self.settings.host)

    def describe(self, ep: Endpoint) -> dict[str, Any]:
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
        log = self._dir(name) / "gateway.log"
        try:
            pid, port = processes.spawn("chattune.endpoints.gateway", ["--endpoint", name], log, self.settings.host)
            self.store.update_endpoint(name, pid=pid, port=port)
            processes.wait_until_ready(f"http://{self.settings.host}:{port}/health/live", pid, log, 60)
        except ChattuneError:
            self.store.update_endpoint(name, state=ProvisioningState.FAILED)
            raise
        return self.store.update_endpoint(name, state=ProvisioningState.SUCCEEDED), keys

    def get(self, name: str) -> Endpoint:
        return self.store.get_endpoint(name)

    def list_endpoints(self) -> list[Endpoint]:
        return self.store.list_endpoints()

    def regenerate_key(self, name: str, key_type: str) -> str:
        if key_type not in KEY_TYPES:
            raise UserError(f"--key must be one of {', '.join(KEY_TYPES)}, not {key_type!r}")
        self.store.get_endpoint(name)
        key = generate_key()
        self.store.set_key_hash(name, key_type, hash_key(key))  # the gateway reads hashes per request
        return key

    def set_traffic(self, name: str, traffic: dict[str, int]) -> Endpoint:
        self.store.get_endpoint(name)
        deployments = {d.name for d in self.store.list_deployments(name)}
        unknown = sorted(set(traffic) - deployments)
        if unknown:
            raise UserError(
                f"unknown deployment(s) {', '.join(unknown)} on endpoint {name!r}",
                remedy=f"Deployments: {', '.join(sorted(deployments)) or 'none yet'}.",
            )
        if any(p < 0 or p > 100 for p in traffic.values()):
            raise UserError("each traffic percentage must be between 0 and 100")
        total = sum(traffic.values())
        if total not in (0, 100):
            raise UserError(f"traffic must sum to 0 or 100, not {total}", remedy="e.g. `blue=90 green=10`.")
        return self.store.update_endpoint(name, traffic=traffic)

    def delete(self, name: str) -> None:
        """Stop every deployment instance and the gateway, then remove the endpoint."""
        ep = self.store.get_endpoint(name)
        self.store.update_endpoint(name, state=ProvisioningState.DELETING)
        for dep in self.store.list_deployments(name):
            processes.stop(dep.pid)
            self.store.delete_deployment(name, dep.name)
        processes.stop(ep.pid)
        self.store.delete_endpoint(name)

    # deployments ----------------------------------------------------------------------------------------------
    def deploy(
        self,
        endpoint: str,
        name: str,
        model_ref: str,
        *,
        instance_count: int = 1,
        request_timeout_ms: int = 5000,
        max_concurrent: int = 1,
    ) -> Deployment:
        check_name("deployment", name)
        ep = self.store.get_endpoint(endpoint)
        if ep.state != ProvisioningState.SUCCEEDED:
            raise ConflictError(f"endpoint {endpoint!r} is {ep.state}")
        if instance_count != 1:
            raise UserError(
                "--instances other than 1 is not supported yet (multi-instance deployments come with the "
                "serving issue)",
                remedy="Use --instances 1.",
            )
        if not 0 < request_timeout_ms <= MAX_REQUEST_TIMEOUT_MS:
            raise UserError(f"--request-timeout-ms must be in 1..{MAX_REQUEST_TIMEOUT_MS}, not {request_timeout_ms}")
        if max_concurrent < 1:
            raise UserError("--max-concurrent must be at least 1")
        mv = self.registry.get(model_ref)
        dep = Deployment(
            endpoint=endpoint,
            name=name,
            model_name=mv.name,
            model_version=mv.version,
            state=ProvisioningState.CREATING,
            created_at=time.time(),
            instance_count=instance_count,
            request_timeout_ms=request_timeout_ms,
            max_concurrent_requests_per_instance=max_concurrent,
        )
        self.store.create_deployment(dep)
        log = self._dir(endpoint) / f"{name}.log"
        # A LoRA version is served over its base model; a full fine-tune is a complete model of its own.
        weights = mv.base_model_path if mv.kind == "lora" else mv.path
        args = ["--base", weights, "--name", mv.id, "--base-name", mv.base_model]
        if mv.kind == "lora":
            args += ["--adapter", mv.path]
        try:
            pid, port = processes.spawn("chattune.serving.instance", args, log, self.settings.host)
            self.store.update_deployment(endpoint, name, pid=pid, port=port, log_path=str(log))
            processes.wait_until_ready(
                f"http://{self.settings.host}:{port}/health/ready", pid, log, self.settings.ready_timeout_s
            )
        except ChattuneError:
            self.store.update_deployment(endpoint, name, state=ProvisioningState.FAILED)
            raise
        return self.store.update_deployment(endpoint, name, state=ProvisioningState.SUCCEEDED)

    def list_deployments(self, endpoint: str) -> list[Deployment]:
        self.store.get_endpoint(endpoint)
        return self.store.list_deployments(endpoint)

    def delete_deployment(self, endpoint: str, name: str) -> None:
        dep = self.store.get_deployment(endpoint, name)
        ep = self.store.get_endpoint(endpoint)
        if ep.traffic.get(name, 0) > 0:
            raise ConflictError(
                f"deployment {name!r} still receives {ep.traffic[name]}% of traffic",
                remedy=f"Move its traffic first: `chattune endpoints traffic {endpoint} OTHER=100`.",
            )
        processes.stop(dep.pid)
        self.store.delete_deployment(endpoint, name)

    def logs(self, endpoint: str, name: str, lines: int = 50) -> str:
        dep = self.store.get_deployment(endpoint, name)
        return processes.tail(Path(dep.log_path), lines) if dep.log_path else ""

    # invoke ---------------------------------------------------------------------------------------------------
    def invoke(
        self, endpoint: str, request_file: Path, key: str, deployment: str | None = None, timeout_s: float = 180.0
    ) -> Any:
        """POST the request file to the endpoint's /score, as ``online_endpoints.invoke`` does."""
        ep = self.store.get_endpoint(endpoint)
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
            raise ChattuneError(f"endpoint {endpoint!r} unreachable at {uri}: {exc}") from exc
        if r.status_code >= 400:
            try:
                message = r.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = r.text[:500]
            err = UserError if r.status_code < 500 else ChattuneError
            raise err(f"endpoint {endpoint!r} answered {r.status_code}: {message}")
        return r.json()
