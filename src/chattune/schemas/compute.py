"""This machine's compute and the fit check on the wire (``compute show``, ``compute check``)."""

from __future__ import annotations

from chattune.schemas.base import Schema


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
