"""This machine's compute: devices, allow-list checks against catalog tags, and a training memory estimate."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from chattune.catalog import CatalogEntry, compute_skus
from chattune.errors import ComputeError
from chattune.processes import usable_cores


@dataclass
class Gpu:
    """One CUDA GPU of this machine."""

    index: int
    name: str
    memory_gb: float


@dataclass
class ComputeInfo:
    """What the seed reads from ``compute.get(...)`` and ``list_sizes()``, for the local machine."""

    size: str
    cpu_cores: int
    ram_gb: float
    ram_available_gb: float
    gpus: list[Gpu] = field(default_factory=list)
    provisioning_state: str = "Succeeded"
    platform: str = field(default_factory=platform.platform)

    @property
    def has_cuda(self) -> bool:
        """Whether this machine has a CUDA GPU."""
        return bool(self.gpus)

    @property
    def devices(self) -> int:
        """How many training processes this machine can run side by side: its GPUs, else its CPU cores."""
        return len(self.gpus) if self.gpus else self.cpu_cores

    def to_dict(self) -> dict[str, Any]:
        """The machine's description as a dict, with ``gpu_count`` added."""
        out = asdict(self)
        out["gpu_count"] = len(self.gpus)
        return out


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX): then 16-bit training runs as bf16 autocast."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):  # pragma: no cover - torch without oneDNN
        return False


def detect() -> ComputeInfo:
    """Describe this machine: CPU cores available to this process, RAM, and CUDA GPUs."""
    gpus: list[Gpu] = []
    try:
        import torch

        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                props = torch.cuda.get_device_properties(i)
                gpus.append(Gpu(i, props.name, round(props.total_memory / 2**30, 1)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    vm = psutil.virtual_memory()
    return ComputeInfo(
        size=local_size(gpus),
        cpu_cores=usable_cores(),
        ram_gb=round(vm.total / 2**30, 1),
        ram_available_gb=round(vm.available / 2**30, 1),
        gpus=gpus,
    )


# A GPU sold as "80 GB" reports a little less (79.2 GiB for an A100 80GB); a size's memory is met within 5%.
MEMORY_TOLERANCE = 0.95


def local_size(gpus: list[Gpu]) -> str:
    """The compute size name of a machine with ``gpus``, so that catalog allow lists can contain it.

    The largest Azure size in ``compute_skus.yaml`` whose GPUs this machine matches (at least as many, each with at
    least that memory): one 80 GB GPU is ``Standard_NC24ads_A100_v4``, as on Azure. A machine below every listed size
    is ``local-<n>x<gpu>``; one without a GPU ``local-cpu``.
    """
    if not gpus:
        return "local-cpu"
    smallest = min(g.memory_gb for g in gpus)
    matched = [
        (sku["gpus"] * sku["gpu_memory_gb"], sku["gpus"], name)
        for name, sku in compute_skus()["skus"].items()
        if sku["gpus"] <= len(gpus) and smallest >= sku["gpu_memory_gb"] * MEMORY_TOLERANCE
    ]
    if matched:
        return max(matched)[2]
    return f"local-{len(gpus)}x{gpus[0].name.replace(' ', '_')}"


@dataclass
class MemoryEstimate:
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


@dataclass
class CheckResult:
    """Whether a model can be fine-tuned on a compute: the allow list, the memory estimate, and messages saying why."""

    model: str
    compute: str
    ok: bool
    allow_list: list[str] | None
    allow_list_ok: bool
    estimated_memory_gb: float
    available_memory_gb: float
    fits: bool
    device: str
    messages: list[str] = field(default_factory=list)
    estimate: MemoryEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        """The result as a dict (the estimate included)."""
        return asdict(self)


# What `compute check --model NAME` assumes without a job file (and `models show` estimates with): LoRA, fp32, one
# sequence of 512 tokens per device.
CHECK_DEFAULTS: dict[str, Any] = {
    "lora": True,
    "load_in_4bit": False,
    "precision": "32",
    "seq_len": 512,
    "batch_size": 1,
}
# Bits per frozen weight under QLoRA: NF4's 4 bits plus its block constants after double quantization (one fp8
# constant per 64 weights, one fp32 per 256 of those): 4 + 8/64 + 32/(64*256) = 4.127 (Dettmers et al., 2023, 2.1).
NF4_BITS = 4 + 8 / 64 + 32 / (64 * 256)

GB = 2**30
# Headroom for the allocator, CUDA context / framework buffers and temporaries; calibrated in docs/benchmarks.md.
OVERHEAD = 1.2


def estimate_training_memory(
    parameters: int,
    *,
    lora: bool,
    load_in_4bit: bool = False,
    precision: str = "32",
    seq_len: int = 512,
    batch_size: int = 1,
    hidden: int = 0,
    layers: int = 0,
    vocab: int = 0,
    zero_stage: int = 0,
    world_size: int = 1,
    offload_optimizer: bool = False,
) -> MemoryEstimate:
    """A rough upper bound per device: weights + gradients + Adam moments of the trainable part + activations + logits.

    LoRA trains ~1% of the weights; full fine-tuning keeps gradients and two Adam moments for every weight.
    Activations: about 34 bytes per token per hidden unit per layer with bf16/fp32 mixed (Korthikanti et al.).
    Logits: fp32 batch x sequence x vocabulary, held three times (logits, log-softmax, their gradient); with a large
    vocabulary and a small model this term is as big as the weights (measured in docs/benchmarks.md).
    ZeRO (Rajbhandari et al.) over ``world_size`` devices: stage 1 partitions the optimizer state, stage 2 also the
    gradients, stage 3 also the weights; ``offload_optimizer`` (Azure's stage-2 config) moves the optimizer state to
    host RAM. Without ZeRO every process holds a full replica (DDP).
    QLoRA (``load_in_4bit``): the frozen weights take ``NF4_BITS`` each and compute in bf16 (activations at 2 bytes).
    """
    bytes_per = 2 if precision == "16" or load_in_4bit else 4
    n = max(1, world_size)
    trainable = parameters * (0.01 if lora else 1.0)
    weights = (parameters * NF4_BITS / 8 if load_in_4bit else parameters * bytes_per) / (n if zero_stage >= 3 else 1)
    gradients = trainable * 4 / (n if zero_stage >= 2 else 1)  # fp32 gradients
    optimizer = trainable * 8 / (n if zero_stage >= 1 else 1)  # two fp32 Adam moments
    offloaded = 0.0
    if offload_optimizer and zero_stage >= 1:
        offloaded, optimizer = optimizer, 0.0
    if not hidden:
        hidden = max(256, int((parameters / 12 / max(layers, 24)) ** 0.5))
    activations = 34 * seq_len * batch_size * hidden * max(layers, 24) * (bytes_per / 2)
    logits = 3 * 4 * seq_len * batch_size * vocab

    def gb(x: float) -> float:
        return round(x * OVERHEAD / GB, 3)

    return MemoryEstimate(
        weights_gb=gb(weights),
        gradients_gb=gb(gradients),
        optimizer_gb=gb(optimizer),
        activations_gb=gb(activations),
        logits_gb=gb(logits),
        total_gb=round((weights + gradients + optimizer + activations + logits) * OVERHEAD / GB, 2),
        offloaded_gb=round(offloaded * n * OVERHEAD / GB, 2),
        zero_stage=zero_stage,
        world_size=n,
    )


def estimate_training_memory_gb(parameters: int, **kwargs: Any) -> float:
    """The per-device total of ``estimate_training_memory``."""
    return estimate_training_memory(parameters, **kwargs).total_gb


def check(
    entry: CatalogEntry,
    info: ComputeInfo,
    *,
    lora: bool = True,
    load_in_4bit: bool = False,
    precision: str = "32",
    seq_len: int = 512,
    batch_size: int = 1,
    allow_list_tag: str = "finetune_compute_allow_list",
    zero_stage: int = 0,
    world_size: int = 1,
    offload_optimizer: bool = False,
) -> CheckResult:
    """The seed's compute checks, for this machine: allow list (or K80 deny list), GPUs, memory."""
    messages: list[str] = []
    allow = entry.tags.get(allow_list_tag)
    skus = compute_skus()["skus"]
    allow_ok = True
    if allow:
        # The local machine matches an allow-listed Azure size when it has a GPU with at least that size's memory.
        sku_memory = [skus[s]["gpu_memory_gb"] for s in allow if s in skus]
        best = max((g.memory_gb for g in info.gpus), default=0.0)
        allow_ok = info.size.lower() in {a.lower() for a in allow} or (
            bool(info.gpus) and (not sku_memory or best >= min(sku_memory) * MEMORY_TOLERANCE)
        )
        if not allow_ok:
            messages.append(
                f"{entry.name} allow-lists only GPU sizes ({', '.join(allow)}); "
                + (f"this machine's best GPU has {best} GB" if info.gpus else "this machine has no CUDA GPU")
            )
    elif info.size.lower() in compute_skus()["unsupported"]:
        allow_ok = False
        messages.append(f"{info.size} is an unsupported (K80) size")
    device = "cuda" if info.gpus else "cpu"
    if load_in_4bit and not info.gpus:
        allow_ok = False
        messages.append("QLoRA (load_in_4bit) needs a CUDA GPU: bitsandbytes' 4-bit kernels; this machine has none")
    estimate = estimate_training_memory(
        entry.parameters,
        lora=lora,
        load_in_4bit=load_in_4bit,
        precision=precision,
        seq_len=seq_len,
        batch_size=batch_size,
        hidden=entry.hidden_size,
        layers=entry.num_hidden_layers,
        vocab=entry.vocab_size,
        zero_stage=zero_stage,
        world_size=world_size,
        offload_optimizer=offload_optimizer,
    )
    if info.gpus:
        # Each process holds its share on its own GPU; the smallest GPU decides. Offloaded state sits in host RAM.
        needed, available = estimate.total_gb, min(g.memory_gb for g in info.gpus)
        fits = needed <= available and estimate.offloaded_gb <= info.ram_available_gb
        if estimate.offloaded_gb > info.ram_available_gb:
            messages.append(
                f"ZeRO offload needs {estimate.offloaded_gb} GB of host RAM, {info.ram_available_gb} GB available"
            )
    else:
        # CPU processes share the machine's RAM.
        needed = round(estimate.total_gb * estimate.world_size + estimate.offloaded_gb, 2)
        available = info.ram_available_gb
        fits = needed <= available
    if needed > available:
        per = f" ({estimate.world_size} processes)" if estimate.world_size > 1 else ""
        messages.append(f"estimated {needed} GB needed for training{per}, {available} GB available on {device}")
    return CheckResult(
        model=entry.name,
        compute=info.size,
        ok=allow_ok and fits,
        allow_list=allow,
        allow_list_ok=allow_ok,
        estimated_memory_gb=needed,
        available_memory_gb=available,
        fits=fits,
        device=device,
        messages=messages,
        estimate=estimate,
    )


def unfit_error(result: CheckResult) -> ComputeError:
    """The error for a failed check (``compute check`` and ``jobs create`` raise the same)."""
    return ComputeError("; ".join(result.messages), remedy="Pick a smaller model, enable LoRA, or use a GPU machine.")


def cuda_has_bf16() -> bool:
    """Whether the GPU computes bf16 (Ampere and later); without it precision "16" trains as fp16."""
    try:
        import torch

        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    except ImportError:  # pragma: no cover - torch is a dependency
        return False
