"""Plain domain entities. Stores return these; database rows never leave the store."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        def __str__(self) -> str:
            return str(self.value)


class JobStatus(StrEnum):
    """OpenAI's fine-tuning job states."""

    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class StepStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (StepStatus.SUCCEEDED, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELLED)


class ProvisioningState(StrEnum):
    """Azure's provisioning states for endpoints and deployments."""

    CREATING = "Creating"
    UPDATING = "Updating"
    DELETING = "Deleting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"
    SCALING = "Scaling"  # deployments only: instance_count changing

    @property
    def is_terminal(self) -> bool:
        return self in (ProvisioningState.SUCCEEDED, ProvisioningState.FAILED, ProvisioningState.CANCELED)


@dataclass
class Entity:
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepRun(Entity):
    job_id: str
    name: str
    status: StepStatus = StepStatus.PENDING
    started_at: float | None = None
    finished_at: float | None = None
    log_path: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    mlflow_run_id: str | None = None
    # Hash of the step's inputs (data and model content, its resolved config, its inputs' keys).
    cache_key: str | None = None
    # The job whose finished step with the same cache_key was reused instead of running again.
    reused_from: str | None = None

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["duration_s"] = self.duration_s
        return out


@dataclass(frozen=True)
class JobError:
    """Why a job failed: stored with the job, shown by ``jobs show`` (``chattune.schemas.JobError`` on the wire).

    Attributes:
        code: A chattune error code: an error class's ``code``, or the runner's own (``runner_failed``,
            ``runner_died``).
        message: What went wrong.
        step: The step that failed, when one did.
        details: The error's structured data (a data file's errors, a config's problems).
    """

    code: str
    message: str
    step: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job(Entity):
    id: str
    display_name: str
    experiment_name: str
    model: str
    status: JobStatus
    created_at: float
    spec: dict[str, Any]
    resolved_config: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    mlflow_run_id: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: JobError | None = None
    steps: list[StepRun] = field(default_factory=list)


@dataclass
class ModelVersion(Entity):
    """A registered model version. A LoRA version holds the adapter and refers to its base by content hash."""

    name: str
    version: str
    created_at: float
    kind: str  # "lora" or "full"
    path: str
    base_model: str
    base_model_hash: str
    base_model_path: str
    job_id: str | None = None
    description: str = ""
    tags: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    # The same model in the workspace's MLflow registry: models:/NAME/<mlflow_version>.
    mlflow_version: str | None = None

    @property
    def id(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass
class Endpoint(Entity):
    name: str
    auth_mode: str
    state: ProvisioningState
    created_at: float
    description: str = ""
    traffic: dict[str, int] = field(default_factory=dict)
    mirror_traffic: dict[str, int] = field(default_factory=dict)
    port: int | None = None
    pid: int | None = None

    def scoring_uri(self, host: str) -> str | None:
        return f"http://{host}:{self.port}/score" if self.port else None

    def openai_base_url(self, host: str) -> str | None:
        return f"http://{host}:{self.port}/v1" if self.port else None


@dataclass
class Deployment(Entity):
    endpoint: str
    name: str
    model_name: str
    model_version: str
    state: ProvisioningState
    created_at: float
    instance_count: int = 1
    request_timeout_ms: int = 5000
    max_concurrent_requests_per_instance: int = 1
    port: int | None = None
    pid: int | None = None
    log_path: str | None = None
    # {"liveness_probe": {...}, "readiness_probe": {...}}: Azure's ProbeSettings fields; defaults in PROBE_DEFAULTS.
    probes: dict[str, Any] = field(default_factory=dict)
    # Written by the endpoint's gateway, which supervises them: [{"index", "pid", "port", "state", "restarts", ...}].
    instances: list[dict[str, Any]] = field(default_factory=list)
    # More registered LoRA versions of the same base, served from the one loaded base ("model" picks one).
    extra_models: list[str] = field(default_factory=list)
