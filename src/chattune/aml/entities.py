"""Entities with ``azure.ai.ml.entities`` names and fields, as the seed notebook builds and reads them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chattune.aml.constants import AssetTypes
from chattune.entities import DeploymentSettings
from chattune.entities import ProbeSettings as _Probe
from chattune.schemas import EndpointKeys

# Defaults come from the one typed model (chattune.entities); these dataclasses only carry Azure's names.
_DEFAULT = DeploymentSettings()
_PROBE = _Probe()


@dataclass
class Input:
    """``azure.ai.ml.Input``: a file or folder given to a pipeline."""

    type: str = AssetTypes.URI_FILE
    path: str = ""


@dataclass
class Model:
    """A model asset: a catalog model (``registry_ml_client.models.get``) or a registered fine-tune."""

    name: str = ""
    version: str | None = None
    path: str | None = None
    type: str = AssetTypes.MLFLOW_MODEL
    description: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    id: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class AmlCompute:
    """A compute target.

    Locally there is one: this machine; ``size`` names it: ``local-cpu``, or with GPUs the Azure size they match
    (``Standard_NC24ads_A100_v4`` for one 80 GB GPU; see ``compute.local_size``), so allow lists can name it.
    """

    name: str = "local"
    size: str = ""
    type: str = "amlcompute"
    min_instances: int = 0
    max_instances: int = 1
    idle_time_before_scale_down: int | None = None
    tier: str | None = None
    provisioning_state: str = "Succeeded"


@dataclass
class ComputeSize:
    """One entry of ``compute.list_sizes()``."""

    name: str
    gpus: int
    v_cpus: int
    memory_gb: float


@dataclass
class ProbeSettings:
    """Azure's probe settings (seconds); defaults as Azure's."""

    initial_delay: int = int(_PROBE.initial_delay)
    period: int = int(_PROBE.period)
    timeout: int = int(_PROBE.timeout)
    success_threshold: int = _PROBE.success_threshold
    failure_threshold: int = _PROBE.failure_threshold

    def to_dict(self) -> dict[str, Any]:
        """The probe settings as a dict of their fields."""
        return dict(vars(self))


@dataclass
class OnlineRequestSettings:
    """Azure's request settings of a deployment: timeout, concurrency per instance, queue wait."""

    request_timeout_ms: int = _DEFAULT.request_timeout_ms
    max_concurrent_requests_per_instance: int = _DEFAULT.max_concurrent_requests_per_instance
    max_queue_wait_ms: int = _DEFAULT.max_queue_wait_ms


@dataclass
class ManagedOnlineEndpoint:
    """Azure's managed online endpoint, as ``online_endpoints`` takes and returns it."""

    name: str
    description: str = ""
    auth_mode: str = "key"
    traffic: dict[str, int] = field(default_factory=dict)
    mirror_traffic: dict[str, int] = field(default_factory=dict)
    scoring_uri: str | None = None
    openai_base_url: str | None = None
    provisioning_state: str | None = None


@dataclass
class ManagedOnlineDeployment:
    """Azure's managed online deployment, as ``online_deployments`` takes and returns it."""

    name: str
    endpoint_name: str
    model: str | Model | None = None
    instance_type: str | None = None
    instance_count: int = _DEFAULT.instance_count
    liveness_probe: ProbeSettings | None = None
    readiness_probe: ProbeSettings | None = None
    request_settings: OnlineRequestSettings | None = None
    provisioning_state: str | None = None


# Azure's name for the key pair; the same schema as `chattune endpoints keys --json` (one shape of the pair).
EndpointAuthKeys = EndpointKeys


@dataclass
class Job:
    """A pipeline job as ``jobs.create_or_update`` / ``jobs.get`` return it."""

    name: str
    display_name: str
    experiment_name: str
    status: str
    outputs: dict[str, Any] = field(default_factory=dict)
    studio_url: str | None = None
