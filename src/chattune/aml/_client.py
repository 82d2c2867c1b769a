"""``MLClient`` and its operations, over the same workspace services as the CLI (no second implementation)."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chattune import compute
from chattune.aml.dsl import PipelineComponent, PipelineJob
from chattune.aml.entities import (
    AmlCompute,
    ComputeSize,
    EndpointAuthKeys,
    Job,
    ManagedOnlineDeployment,
    ManagedOnlineEndpoint,
    Model,
    ProbeSettings,
)
from chattune.endpoints.config import deployment_settings
from chattune.errors import ChattuneError, NotFoundError, UserError
from chattune.pipeline.config import PARAM_MODELS
from chattune.settings import Settings
from chattune.workspace import Workspace

# Azure's job statuses for ours.
_STATUS = {
    "queued": "Queued",
    "validating_files": "Preparing",
    "running": "Running",
    "succeeded": "Completed",
    "failed": "Failed",
    "cancelled": "Canceled",
}
PIPELINE_COMPONENTS = ("chat_completion_pipeline",)
_INPUTS = {"train_file_path": "train", "validation_file_path": "validation", "test_file_path": "test"}


class LocalOnlyWarning(UserWarning):
    """Parameters that name cloud resources: accepted and recorded, meaningless on one machine."""


@dataclass
class JobOutput:
    type: str
    path: str


class Poller:
    """``begin_*`` operations finish before they return; ``wait()`` and ``result()`` are there for the call sites."""

    def __init__(self, result: Any = None):
        self._result = result

    def wait(self, timeout: float | None = None) -> None:
        return None

    def result(self, timeout: float | None = None) -> Any:
        return self._result

    def done(self) -> bool:
        return True


class MLClient:
    """``MLClient`` for the local chattune workspace (``$CHATTUNE_HOME``).

    ``MLClient(credential, subscription_id=..., resource_group_name=..., workspace_name=...)`` and
    ``MLClient.from_config(credential=...)`` give the workspace; ``MLClient(credential, registry_name="azureml")``
    gives the built-in catalog. Subscription, resource group and workspace names are recorded, not used: there is
    one local workspace.
    """

    def __init__(
        self,
        credential: Any = None,
        subscription_id: str | None = None,
        resource_group_name: str | None = None,
        workspace_name: str | None = None,
        registry_name: str | None = None,
        *,
        settings: Settings | None = None,
        **kwargs: Any,
    ):
        self.credential = credential
        self.subscription_id = subscription_id
        self.resource_group_name = resource_group_name
        self.workspace_name = workspace_name
        self.registry_name = registry_name
        self.workspace = Workspace.open(settings)
        self.local_only: list[str] = []  # cloud-only parameters given to this client, recorded
        self.models = ModelOperations(self)
        self.compute = ComputeOperations(self)
        self.components = ComponentOperations(self)
        self.jobs = JobOperations(self)
        self.online_endpoints = OnlineEndpointOperations(self)
        self.online_deployments = OnlineDeploymentOperations(self)

    @classmethod
    def from_config(
        cls, credential: Any = None, *, path: str | os.PathLike[str] | None = None, file_name: str = "config.json"
    ) -> MLClient:
        """Read ``config.json`` as Azure does.

        Looks at the given path, or the current directory and its parents (also in ``.azureml/``). Raises when none is
        found, so the seed's fallback to explicit names runs.
        """
        start = Path(path) if path else Path.cwd()
        candidates = [start] if start.is_file() else []
        for folder in [start, *start.parents] if start.is_dir() else []:
            candidates += [folder / file_name, folder / ".azureml" / file_name]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise UserError(
                f"no {file_name} found in {start} or its parents",
                remedy="Write one with subscription_id, resource_group and workspace_name, or pass them to MLClient.",
            )
        config = json.loads(found.read_text(encoding="utf-8"))
        return cls(
            credential,
            subscription_id=config.get("subscription_id"),
            resource_group_name=config.get("resource_group") or config.get("resource_group_name"),
            workspace_name=config.get("workspace_name"),
        )

    def begin_create_or_update(self, entity: Any) -> Poller:
        if isinstance(entity, ManagedOnlineEndpoint):
            return self.online_endpoints.begin_create_or_update(entity)
        if isinstance(entity, ManagedOnlineDeployment):
            return self.online_deployments.begin_create_or_update(entity)
        if isinstance(entity, AmlCompute):
            return self.compute.begin_create_or_update(entity)
        raise UserError(f"begin_create_or_update: {type(entity).__name__} is not supported here")


def _local_only(client: MLClient, what: str) -> None:
    """Record a cloud-only parameter; the first one of a client is explained in one warning."""
    client.local_only.append(what)
    if len(client.local_only) == 1:
        warnings.warn(
            f"{what}: compute names, instance types and cluster sizes name cloud resources; chattune runs on this "
            "machine, so they are recorded (MLClient.local_only) and otherwise not used. This is said once.",
            LocalOnlyWarning,
            stacklevel=3,
        )


def _tag(value: Any) -> str:
    """Azure keeps tags as strings; the seed parses lists and dicts back with ast.literal_eval."""
    return value if isinstance(value, str) else repr(value)


class ModelOperations:
    def __init__(self, client: MLClient):
        self.client = client

    def get(self, name: str, version: str | None = None, label: str | None = None) -> Model:
        if self.client.registry_name:
            entry = self.client.workspace.catalog.get(name)
            return Model(
                name=entry.display_name,
                version=entry.version,
                id=entry.id,
                description=entry.description,
                tags={k: _tag(v) for k, v in entry.tags.items()},
                properties={"chattune_name": entry.name},
            )
        if version:
            ref = f"{name}:{version}"
        elif label and label != "latest":
            ref = f"{name}@{label}"  # an alias
        else:
            ref = name  # the newest version
        return _model(self.client.workspace.registry.get(ref))

    def create_or_update(self, model: Model) -> Model:
        """Register a job's output: ``path="azureml://jobs/<job>/outputs/trained_model"``."""
        prefix = "azureml://jobs/"
        if not model.path or not model.path.startswith(prefix):
            raise UserError(
                f"Model(path={model.path!r}): register a job's output, azureml://jobs/<job>/outputs/trained_model",
                remedy="Or use `chattune models register --job JOB`.",
            )
        job_id = model.path[len(prefix) :].split("/", 1)[0]
        mv = self.client.workspace.registry.register(
            job_id, name=model.name or None, version=model.version, description=model.description
        )
        return _model(mv)


def _model(mv: Any) -> Model:
    return Model(
        name=mv.name,
        version=mv.version,
        path=mv.path,
        description=mv.description,
        tags={k: _tag(v) for k, v in mv.tags.items()},
        id=f"azureml:{mv.name}:{mv.version}",
        properties={"job_id": mv.job_id, "base_model": mv.base_model, "mlflow_version": mv.mlflow_version},
    )


class ComputeOperations:
    """There is one compute: this machine. Any cluster name gets it, described as Azure describes a compute."""

    def __init__(self, client: MLClient):
        self.client = client

    def get(self, name: str) -> AmlCompute:
        _local_only(self.client, f"compute {name!r}")
        return AmlCompute(name=name, size=compute.detect().size)

    def begin_create_or_update(self, entity: AmlCompute) -> Poller:
        _local_only(self.client, f"AmlCompute(name={entity.name!r}, size={entity.size!r})")
        return Poller(AmlCompute(name=entity.name, size=compute.detect().size))

    def list_sizes(self, location: str | None = None) -> list[ComputeSize]:
        info = compute.detect()
        return [ComputeSize(info.size, len(info.gpus), info.cpu_cores, info.ram_gb)]


class ComponentOperations:
    def __init__(self, client: MLClient):
        self.client = client

    def get(self, name: str, version: str | None = None, label: str | None = None) -> PipelineComponent:
        if name not in PIPELINE_COMPONENTS:
            raise NotFoundError(f"component {name!r} not found", remedy=f"Available: {', '.join(PIPELINE_COMPONENTS)}.")
        return PipelineComponent(name)


class JobOperations:
    def __init__(self, client: MLClient):
        self.client = client

    def create_or_update(self, job: PipelineJob, *, experiment_name: str | None = None, **kwargs: Any) -> Job:
        """Submit a ``@pipeline`` job: the component's Azure parameter names become a chattune job spec."""
        if len(job.nodes) != 1:
            raise UserError(f"pipeline {job.display_name!r}: expected one chat_completion_pipeline call")
        spec = _spec(self.client, job, experiment_name or job.experiment_name or "chat_completion")
        created, _ = self.client.workspace.jobs.create(spec)
        return self._job(created.id)

    def stream(self, name: str, emit: Callable[[str], None] = print) -> None:
        """Print the job's log until it ends; raise if it did not complete, as Azure's stream does."""
        final = self.client.workspace.jobs.stream(name, emit)
        if str(final.status) != "succeeded":
            raise ChattuneError(f"job {name} {final.status}: {final.error.message if final.error else ''}")

    def get(self, name: str) -> Job:
        return self._job(name)

    def _job(self, job_id: str) -> Job:
        job = self.client.workspace.jobs.get(job_id)
        # The job's named outputs (the pipeline's `trained_model`), as Azure addresses them.
        outputs = {
            name: JobOutput("mlflow_model", f"azureml://jobs/{job.id}/outputs/{name}")
            for name, path in job.outputs.items()
            if path
        }
        return Job(
            name=job.id,
            display_name=job.display_name,
            experiment_name=job.experiment_name,
            status=_STATUS.get(str(job.status), str(job.status)),
            outputs=outputs,
        )


def _spec(client: MLClient, job: PipelineJob, experiment_name: str) -> dict[str, Any]:
    params = dict(job.nodes[0].parameters)
    model_ref = str(params.pop("mlflow_model_path", None) or params.pop("model_name", None) or "")
    entries = client.workspace.catalog.list()
    model = next((e.name for e in entries if model_ref in (e.id, e.name, e.display_name)), model_ref)
    data: dict[str, Any] = {}
    for key, role in _INPUTS.items():
        value = params.pop(key, None)
        if value is not None:
            data[role] = str(Path(getattr(value, "path", value)).resolve())
    computes = {k: params.pop(k) for k in list(params) if k.startswith("compute_")}
    if computes:
        _local_only(client, ", ".join(f"{k}={v!r}" for k, v in computes.items()))
    gpus = params.get("number_of_gpu_to_use_finetuning")
    if gpus is not None and int(gpus) == 0:
        params["number_of_gpu_to_use_finetuning"] = 1  # a machine without GPUs trains in one CPU process
    sections: dict[str, dict[str, Any]] = {"training": {}, "optimization": {}}
    for key, value in params.items():
        section = next((s for s, m in PARAM_MODELS.items() if key in m.model_fields), "training")
        sections[section][key] = value  # an unknown name fails validation, naming the closest valid one
    return {
        "model": model,
        "experiment_name": experiment_name,
        "display_name": job.display_name,
        "data": data,
        **sections,
        "settings": {
            "force_rerun": job.settings.force_rerun,
            "continue_on_step_failure": job.settings.continue_on_step_failure,
        },
    }


class OnlineEndpointOperations:
    def __init__(self, client: MLClient):
        self.client = client

    @property
    def _service(self) -> Any:
        return self.client.workspace.endpoints

    def begin_create_or_update(self, endpoint: ManagedOnlineEndpoint) -> Poller:
        service = self._service
        try:
            service.get(endpoint.name)
        except NotFoundError:
            service.create(endpoint.name, endpoint.description, endpoint.auth_mode)
        current = service.get(endpoint.name)
        if endpoint.traffic and endpoint.traffic != current.traffic:
            service.set_traffic(endpoint.name, dict(endpoint.traffic))
        if endpoint.mirror_traffic != current.mirror_traffic:
            service.set_mirror(endpoint.name, dict(endpoint.mirror_traffic))
        return Poller(self.get(endpoint.name))

    def get(self, name: str) -> ManagedOnlineEndpoint:
        doc = self._service.describe(self._service.get(name))
        return ManagedOnlineEndpoint(
            name=doc["name"],
            auth_mode=doc["auth_mode"],
            traffic=doc["traffic"],
            mirror_traffic=doc["mirror_traffic"],
            scoring_uri=doc["scoring_uri"],
            openai_base_url=doc["openai_base_url"],
            provisioning_state=doc["state"],
        )

    def list(self) -> list[ManagedOnlineEndpoint]:
        return [self.get(ep.name) for ep in self._service.list_endpoints()]

    def invoke(
        self,
        endpoint_name: str,
        request_file: str | os.PathLike[str],
        deployment_name: str | None = None,
        **kwargs: Any,
    ) -> str:
        """POST the request file to /score with this client's saved key; the raw response text, as Azure's."""
        return json.dumps(self._service.invoke(endpoint_name, Path(request_file), None, deployment_name))

    def get_keys(self, name: str) -> EndpointAuthKeys:
        keys = self._service.keys(name)
        return EndpointAuthKeys.from_key_types(keys)

    def begin_regenerate_keys(self, name: str, *, key_type: str = "primary", **kwargs: Any) -> Poller:
        self._service.regenerate_key(name, key_type)
        return Poller()

    def begin_delete(self, name: str, **kwargs: Any) -> Poller:
        self._service.delete(name)
        return Poller()


class OnlineDeploymentOperations:
    def __init__(self, client: MLClient):
        self.client = client

    def begin_create_or_update(self, deployment: ManagedOnlineDeployment, **kwargs: Any) -> Poller:
        model = deployment.model.id if isinstance(deployment.model, Model) else deployment.model
        if not model:
            raise UserError(f"ManagedOnlineDeployment({deployment.name!r}): model is required")
        ref = model.removeprefix("azureml:")
        if deployment.instance_type:
            _local_only(self.client, f"instance_type={deployment.instance_type!r}")
        request = vars(deployment.request_settings) if deployment.request_settings else {}
        settings = deployment_settings(
            {
                "instance_count": deployment.instance_count,
                "request_timeout_ms": request.get("request_timeout_ms"),
                "max_concurrent_requests_per_instance": request.get("max_concurrent_requests_per_instance"),
                "max_queue_wait_ms": request.get("max_queue_wait_ms"),
                "liveness_probe": _probe(deployment.liveness_probe),
                "readiness_probe": _probe(deployment.readiness_probe),
            }
        )
        self.client.workspace.endpoints.deploy(deployment.endpoint_name, deployment.name, ref, settings)
        return Poller(self.get(deployment.name, deployment.endpoint_name))

    def get(self, name: str, endpoint_name: str) -> ManagedOnlineDeployment:
        dep = self.client.workspace.store.get_deployment(endpoint_name, name)
        return ManagedOnlineDeployment(
            name=dep.name,
            endpoint_name=dep.endpoint,
            model=f"azureml:{dep.model_name}:{dep.model_version}",
            instance_count=dep.instance_count,
            provisioning_state=str(dep.state),
        )

    def get_logs(self, name: str, endpoint_name: str, lines: int = 50, **kwargs: Any) -> str:
        return str(self.client.workspace.endpoints.logs(endpoint_name, name, lines))


def _probe(probe: ProbeSettings | None) -> dict[str, Any] | None:
    return probe.to_dict() if probe else None
