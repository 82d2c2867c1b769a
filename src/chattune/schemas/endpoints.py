"""Endpoints and deployments on the wire (Azure's online endpoint shapes)."""

from __future__ import annotations

from typing import Any

from pydantic import RootModel

from chattune.entities import Deployment, ProvisioningState
from chattune.schemas.base import Schema


class EndpointKeys(Schema):
    """An endpoint's key pair as this client holds it (the endpoint stores only their hashes).

    The one shape of the pair: ``endpoints create``, ``endpoints keys``, ``endpoints regenerate-keys``, quickstart
    and the SDK's ``get_keys`` all answer it.
    """

    primary_key: str | None = None
    secondary_key: str | None = None

    @classmethod
    def from_key_types(cls, keys: dict[str, str]) -> EndpointKeys:
        """From the keyring's ``{"primary": ..., "secondary": ...}``.

        Args:
            keys: Key values by key type.

        Returns:
            The key pair.
        """
        return cls(primary_key=keys.get("primary"), secondary_key=keys.get("secondary"))


class EndpointPublic(Schema):
    """An endpoint: its state, where to call it and how its traffic is split."""

    name: str
    state: ProvisioningState
    auth_mode: str
    scoring_uri: str | None = None
    openai_base_url: str | None = None
    traffic: dict[str, int] = {}
    mirror_traffic: dict[str, int] = {}
    deployments: list[str] = []
    created_at: float


class EndpointCreated(EndpointPublic):
    """``endpoints create``: the endpoint and its two keys, shown this once."""

    keys: EndpointKeys


class DeploymentPublic(Schema):
    """A deployment of a registered model version behind an endpoint, with its instances."""

    endpoint: str
    name: str
    model_name: str
    model_version: str
    state: ProvisioningState
    created_at: float
    instance_count: int
    request_timeout_ms: int
    max_concurrent_requests_per_instance: int
    max_queue_wait_ms: int | None = None
    max_queue_length: int | None = None
    port: int | None = None
    pid: int | None = None
    log_path: str | None = None
    probes: dict[str, Any] = {}
    instances: list[dict[str, Any]] = []
    extra_models: list[str] = []
    share_base_with: str | None = None
    max_batch_size: int | None = None
    max_new_tokens_cap: int | None = None
    autoscale: dict[str, Any] | None = None
    cpus_per_instance: float | None = None
    prefix_cache_mb: int | None = None
    compute: str = "local"

    @classmethod
    def from_deployment(cls, dep: Deployment) -> DeploymentPublic:
        """The deployment as shown."""
        return cls.model_validate(dep.to_dict())


class EndpointList(RootModel[list[EndpointPublic]]):
    """``endpoints list`` and ``endpoints up``: endpoints, oldest first."""


class DeploymentList(RootModel[list[DeploymentPublic]]):
    """``deployments list``: an endpoint's deployments, oldest first."""


class ScoreAnswer(RootModel[Any]):
    """``endpoints invoke``: the deployment's answer to a /score request, as it sent it (Azure's scoring shape)."""
