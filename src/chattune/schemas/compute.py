"""Compute on the wire: this machine (``compute show``), the fit check, and compute targets (``compute list``)."""

from __future__ import annotations

from chattune.entities import ComputeKind
from chattune.schemas.base import ListPage, Schema


class GpuPublic(Schema):
    """One GPU."""

    index: int
    name: str
    memory_gb: float


class ComputePublic(Schema):
    """The local machine, in the fields the seed reads from Azure's compute."""

    size: str
    cpu_cores: int
    ram_gb: float
    ram_available_gb: float
    gpus: list[GpuPublic] = []
    gpu_count: int = 0
    provisioning_state: str = "Succeeded"
    platform: str


class MemoryEstimatePublic(Schema):
    """Training memory per device (GB), by part; ``offloaded_gb`` is host RAM taken by ZeRO's optimizer offload."""

    weights_gb: float
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    logits_gb: float
    total_gb: float
    offloaded_gb: float = 0.0
    zero_stage: int = 0
    world_size: int = 1


class ComputeCheckPublic(Schema):
    """Whether a catalog model can be fine-tuned here: the allow list and the memory estimate."""

    model: str
    compute: str
    ok: bool
    allow_list: list[str] | None = None
    allow_list_ok: bool
    estimated_memory_gb: float
    available_memory_gb: float
    fits: bool
    device: str
    messages: list[str] = []
    estimate: MemoryEstimatePublic | None = None


class RayNodePublic(Schema):
    """One node of a compute target as Ray reports it (``ray.nodes()``); ``local`` is this machine as one node."""

    node_id: str
    address: str
    alive: bool
    is_head: bool
    cpus: float
    gpus: float
    memory_gb: float
    object_store_gb: float


class LocalRayClusterPublic(Schema):
    """The processes of a Ray cluster chattune started on this machine (``compute start-ray``)."""

    temp_dir: str
    gcs_port: int
    node_cpus: list[int]
    pids: list[int]


class ComputeTargetPublic(Schema):
    """A compute target as recorded (``compute add``, ``compute start-ray``)."""

    name: str
    kind: ComputeKind
    address: str
    created_at: float
    local_cluster: LocalRayClusterPublic | None = None
    serve_port: int | None = None


class ComputeTargetStatus(Schema):
    """A compute target with what it has now: its nodes and their totals, or why it could not be reached."""

    name: str
    kind: ComputeKind
    address: str | None = None
    reachable: bool
    managed: bool = False
    ray_version: str | None = None
    nodes: list[RayNodePublic] = []
    cpus: float
    gpus: float
    memory_gb: float
    error: str | None = None


class ComputeTargetStopped(Schema):
    """What ``compute stop-ray`` stopped: the target, and the pids that needed SIGKILL after SIGTERM."""

    name: str
    stopped_pids: list[int]
    killed_pids: list[int] = []


ComputeTargetList = ListPage[ComputeTargetStatus]
