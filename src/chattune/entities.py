"""Plain domain entities. Stores return these; database rows never leave the store."""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover - Python 3.10

    class StrEnum(str, Enum):
        """A ``str`` enum whose ``str()`` is its value, as Python 3.11's ``enum.StrEnum``."""

        def __str__(self) -> str:
            return str(self.value)


class Task(StrEnum):
    """What a job tunes the model for: chat completion (supervised, Azure's task) or preferences (DPO)."""

    CHAT_COMPLETION = "chat_completion"
    PREFERENCE = "preference"


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
        """Whether the job has finished (succeeded, failed or cancelled) and will not change again."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class StepStatus(StrEnum):
    """The state of one step of a job's pipeline."""

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Whether the step has finished (succeeded, failed, skipped or cancelled)."""
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
        """Whether provisioning has finished (succeeded, failed or canceled)."""
        return self in (ProvisioningState.SUCCEEDED, ProvisioningState.FAILED, ProvisioningState.CANCELED)


class ComputeKind(StrEnum):
    """What runs a job: this machine's processes, or a Ray cluster."""

    LOCAL = "local"
    RAY = "ray"


@dataclass
class Entity:
    """Base of the stored entities: a dataclass that turns into a plain dict."""

    def to_dict(self) -> dict[str, Any]:
        """The entity's fields as a dict (nested dataclasses included), as stored and as shown with ``--json``."""
        return asdict(self)


@dataclass
class StepRun(Entity):
    """One step of a job's pipeline as run: its status, timing, log file and outputs."""

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
        """Seconds the step ran, or None until it has started and finished."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        """The step's fields as a dict, with ``duration_s`` added."""
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
    """A fine-tuning job: its spec, resolved config, status, outputs, metrics and steps."""

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
        """The version's reference, ``name:version``."""
        return f"{self.name}:{self.version}"


@dataclass
class Endpoint(Entity):
    """An online endpoint: its gateway's port and process, auth mode and traffic split."""

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
        """The endpoint's Azure-style scoring URL on ``host``, or None while it has no port."""
        return f"http://{host}:{self.port}/score" if self.port else None

    def openai_base_url(self, host: str) -> str | None:
        """The endpoint's OpenAI-compatible base URL on ``host``, or None while it has no port."""
        return f"http://{host}:{self.port}/v1" if self.port else None


class ProbeSettings(BaseModel):
    """Azure's ProbeSettings (seconds).

    Liveness failure restarts the instance; readiness failure takes it out of rotation. Until an instance first reports
    ready it is polled every half second (a start-up phase that never fails it), so a deployment is served as soon as
    its model is loaded instead of after ``initial_delay``.
    """

    model_config = ConfigDict(extra="forbid")

    initial_delay: float = Field(10, ge=0, description="seconds after start before the first liveness verdict")
    period: float = Field(10, gt=0, description="seconds between probes")
    timeout: float = Field(2, gt=0, description="seconds a probe waits for its answer")
    success_threshold: int = Field(1, ge=1, description="successes in a row that put an instance back in rotation")
    failure_threshold: int = Field(30, ge=1, description="failures in a row before a restart (liveness) or out")


class AutoscaleSettings(BaseModel):
    """Instances that follow the load, between a floor and a ceiling (a deployment on a Ray compute target).

    Azure scales a managed deployment between ``min_instances`` and ``max_instances``; on Ray Serve these are the
    replica bounds of its autoscaling config, and ``target_requests_per_instance`` is Serve's
    ``target_ongoing_requests``: Serve adds replicas while the requests in flight per replica stay above it.
    """

    model_config = ConfigDict(extra="forbid")

    min_instances: int = Field(1, ge=1, description="the fewest instances (replicas) kept running")
    max_instances: int = Field(..., ge=1, description="the most instances (replicas) scaled up to")
    target_requests_per_instance: float = Field(
        2.0, gt=0, description="requests in flight per instance that autoscaling aims at"
    )

    @model_validator(mode="after")
    def _bounds(self) -> AutoscaleSettings:
        if self.min_instances > self.max_instances:
            raise ValueError(f"min_instances ({self.min_instances}) is above max_instances ({self.max_instances})")
        return self


MAX_REQUEST_TIMEOUT_MS = 180_000
# The most sequences one request can ask for (OpenAI's `n`); the engine's batch holds that many per request.
MAX_CHOICES = 8


# The settings that act in a deployment's instances (how many, how they batch, probe and cap answers); a deployment
# served from another's instances (``share_base_with``) takes that one's. The others act at the gateway.
INSTANCE_SETTINGS = frozenset(
    {
        "instance_count", "max_concurrent_requests_per_instance", "liveness_probe", "readiness_probe",
        "max_batch_size", "max_new_tokens_cap", "autoscale", "cpus_per_instance", "prefix_cache_mb",
    }
)  # fmt: skip


class DeploymentSettings(BaseModel):
    """How a deployment serves: Azure's names and defaults, stated here once.

    Azure's OnlineRequestSettings, ProbeSettings and instance_count, carried from the CLI flag and the SDK through the
    store to the gateway and the instance.

    The gateway enforces ``request_timeout_ms`` and ``max_concurrent_requests_per_instance``; a request beyond it waits
    in the deployment's queue (``max_queue_wait_ms``, ``max_queue_length``), then gets a 429. The instance reads the
    engine's settings (``engine_batch_size``, ``max_new_tokens_cap``) from its environment.
    """

    model_config = ConfigDict(extra="forbid")

    instance_count: int = Field(1, ge=1, description="instances (processes) behind the gateway")
    request_timeout_ms: int = Field(
        5000, gt=0, le=MAX_REQUEST_TIMEOUT_MS, description="how long the gateway waits for an instance to answer"
    )
    max_concurrent_requests_per_instance: int = Field(
        1, ge=1, description="requests one instance holds at once; beyond that on every instance a request queues"
    )
    # Azure's default (500 ms, a setting it has since deprecated) suits a GPU server that answers in milliseconds; on
    # a CPU one answer takes seconds, so a request waits as it would in vLLM's queue, bounded as Azure bounds it.
    max_queue_wait_ms: int = Field(
        60_000,
        ge=0,
        le=MAX_REQUEST_TIMEOUT_MS,
        description="how long a request waits for a free instance before a 429 (0: refused at once)",
    )
    max_queue_length: int = Field(
        128, ge=0, description="requests that may wait for a free instance at once; beyond that: 429 at once"
    )
    liveness_probe: ProbeSettings = Field(default_factory=ProbeSettings)
    readiness_probe: ProbeSettings = Field(default_factory=ProbeSettings)
    max_batch_size: int | None = Field(
        None,
        ge=1,
        description="sequences sharing one forward pass; unset: max_concurrent_requests_per_instance x MAX_CHOICES",
    )
    max_new_tokens_cap: int = Field(1024, ge=1, description="the server-side cap on tokens generated per answer")
    # 64 MB: ~2,800 tokens of SmolLM2-135M in bf16 (23 KB each), ~500 of a 7B model with grouped KV heads (128 KB)
    prefix_cache_mb: int = Field(
        64,
        ge=0,
        description="memory per instance for the keys and values of recent prompts and answers, reused by requests "
        "that begin the same way (a system prompt, a conversation's earlier turns); 0: off",
    )
    autoscale: AutoscaleSettings | None = Field(
        None, description="instances between a floor and a ceiling, following the load (Ray compute targets only)"
    )
    cpus_per_instance: float = Field(
        1.0, gt=0, description="CPUs Ray reserves for each replica; its torch threads follow (Ray compute targets only)"
    )

    @property
    def max_instance_count(self) -> int:
        """The most instances the deployment can have: the autoscaling ceiling, else ``instance_count``."""
        return self.autoscale.max_instances if self.autoscale else self.instance_count

    @property
    def engine_batch_size(self) -> int:
        """The engine's batch size, following the deployment's concurrency.

        Every admitted request's choices fit at once (more memory per instance, no request waiting behind another's).
        """
        return self.max_batch_size or self.max_concurrent_requests_per_instance * MAX_CHOICES

    def columns(self) -> dict[str, Any]:
        """The settings as ``Deployment`` holds them (one field each, probes as one dict)."""
        flat = self.model_dump(exclude={"liveness_probe", "readiness_probe"})
        flat["probes"] = {probe: getattr(self, probe).model_dump() for probe in ("liveness_probe", "readiness_probe")}
        return flat


_DEFAULT = DeploymentSettings()


@dataclass
class Deployment(Entity):
    """A deployment of a registered model version on an endpoint, with its settings and instances."""

    endpoint: str
    name: str
    model_name: str
    model_version: str
    state: ProvisioningState
    created_at: float
    # DeploymentSettings, one column each (``settings`` gives them typed); defaults only in DeploymentSettings.
    instance_count: int = _DEFAULT.instance_count
    request_timeout_ms: int = _DEFAULT.request_timeout_ms
    max_concurrent_requests_per_instance: int = _DEFAULT.max_concurrent_requests_per_instance
    max_queue_wait_ms: int | None = None  # None (a deployment recorded before it existed): the default
    max_queue_length: int | None = None  # as above
    max_batch_size: int | None = None
    max_new_tokens_cap: int | None = None  # None (a deployment recorded before it existed): the default
    autoscale: dict[str, Any] | None = None  # AutoscaleSettings' fields; None: a fixed instance_count
    cpus_per_instance: float | None = None  # None: the default
    prefix_cache_mb: int | None = None  # None (a deployment recorded before it existed): the default
    # The compute target its instances run on: `local` (processes the gateway supervises) or a Ray target (replicas
    # of a Ray Serve application, chattune.serving.ray_serve).
    compute: str = "local"
    port: int | None = None
    pid: int | None = None
    log_path: str | None = None
    # {"liveness_probe": {...}, "readiness_probe": {...}}: Azure's ProbeSettings fields; defaults in ProbeSettings.
    probes: dict[str, Any] = field(default_factory=dict)
    # Written by the endpoint's gateway, which supervises them: [{"index", "pid", "port", "state", "restarts", ...}].
    instances: list[dict[str, Any]] = field(default_factory=list)
    # More registered LoRA versions of the same base, served from the one loaded base ("model" picks one).
    extra_models: list[str] = field(default_factory=list)
    # Another deployment of the endpoint whose instances serve this one's LoRA adapter over their loaded base: this
    # deployment has no instances of its own (`deployments create --share-base-with`).
    share_base_with: str | None = None

    @property
    def settings(self) -> DeploymentSettings:
        """The deployment's serving settings, typed and with every default filled in."""
        given: dict[str, Any] = {
            "instance_count": self.instance_count,
            "request_timeout_ms": self.request_timeout_ms,
            "max_concurrent_requests_per_instance": self.max_concurrent_requests_per_instance,
            "max_batch_size": self.max_batch_size,
            **{probe: self.probes[probe] for probe in ("liveness_probe", "readiness_probe") if self.probes.get(probe)},
        }
        optional = (
            "max_queue_wait_ms", "max_queue_length", "max_new_tokens_cap", "autoscale", "cpus_per_instance",
            "prefix_cache_mb",
        )  # fmt: skip
        given.update({name: getattr(self, name) for name in optional if getattr(self, name) is not None})
        return DeploymentSettings.model_validate(given)


@dataclass
class UserModel(Entity):
    """A base model the user imported into the workspace's catalog (``models import NAME --from SOURCE``).

    Its weights are stored by content hash under the workspace's models directory; ``source`` says where they came
    from (the catalog's ``ModelSource`` record) and ``derived`` what was derived from them at import, each value with
    its source (``{field: {"value": ..., "source": ...}}``, as a job's resolved config).
    """

    name: str
    version: str
    content_hash: str
    path: str
    source: dict[str, Any]
    derived: dict[str, Any]
    created_at: float


# The built-in compute target (this machine), and the names `compute add` accepts and a job's `compute:` names.
LOCAL_COMPUTE = "local"
SERVE_DEFAULT_PORT = 8000  # Ray Serve's HTTP proxy port unless told otherwise
COMPUTE_NAME_PATTERN = r"^[a-z][a-z0-9-]{0,31}$"


@dataclass
class LocalRayCluster:
    """A Ray cluster that ``compute start-ray`` started on this machine, with what ``compute stop-ray`` stops.

    Attributes:
        temp_dir: Ray's temp dir (``--temp-dir``): the session's logs and sockets; every daemon names it.
        gcs_port: The head's GCS port on 127.0.0.1 (the cluster's address is ``127.0.0.1:<gcs_port>``).
        node_cpus: Each node's ``--num-cpus``, head first.
        pids: Each node's ``ray start --block`` process, head first: it started that node's daemons and stops them
            when it gets SIGTERM.
        daemon_pids: The Ray daemons seen when the cluster came up (GCS, raylets, agents), stopped if any outlives
            its node's ``ray start`` process.
        up_at: When the cluster was up (epoch seconds): a recorded pid whose process started later is not the
            cluster's (the pid was reused) and is left alone.
    """

    temp_dir: str
    gcs_port: int
    node_cpus: list[int]
    pids: list[int]
    daemon_pids: list[int] = field(default_factory=list)
    up_at: float = 0.0


@dataclass
class ComputeTarget(Entity):
    """A named compute target of the workspace (Azure's compute targets): a Ray cluster by address.

    ``local`` (this machine) is built in and never stored.

    Attributes:
        name: The target's name, as jobs give it (``compute: NAME``, ``jobs create --compute NAME``).
        kind: ``ray``.
        address: The Ray address: ``auto``, ``ray://host:port`` (Ray Client) or a head's GCS ``host:port``.
        created_at: When it was added.
        local_cluster: Set when chattune started the cluster on this machine (``compute start-ray``).
        serve_port: The port of the cluster's Ray Serve HTTP proxy (None: Serve's default, 8000).
    """

    name: str
    kind: ComputeKind
    address: str
    created_at: float
    local_cluster: LocalRayCluster | None = None
    serve_port: int | None = None

    @property
    def serve_address(self) -> tuple[str, int]:
        """Where Ray Serve's HTTP proxy of this cluster listens: the head's host and ``serve_port``.

        Serve runs one proxy, on the head (``HeadOnly``); the port is Serve's default, 8000, unless the target names
        another (``compute add --serve-port``; ``compute start-ray`` picks a free one). An ``auto`` address is this
        machine's cluster: loopback.
        """
        host = self.address.removeprefix("ray://").rsplit(":", 1)[0] if self.address != "auto" else "127.0.0.1"
        return host, self.serve_port or SERVE_DEFAULT_PORT
