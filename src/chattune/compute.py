"""This machine's compute: devices, allow-list checks against catalog tags, and a training memory estimate."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

from chattune.catalog import CatalogEntry, compute_skus


@dataclass
class Gpu:
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
        return bool(self.gpus)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["gpu_count"] = len(self.gpus)
        return out


def detect() -> ComputeInfo:
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
    size = f"local-{len(gpus)}x{gpus[0].name.replace(' ', '_')}" if gpus else "local-cpu"
    return ComputeInfo(
        size=size,
        cpu_cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1),
        ram_gb=round(vm.total / 2**30, 1),
        ram_available_gb=round(vm.available / 2**30, 1),
        gpus=gpus,
    )


@dataclass
class CheckResult:
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate_training_memory_gb(
    parameters: int,
    *,
    lora: bool,
    precision: str = "32",
    seq_len: int = 512,
    batch_size: int = 1,
    hidden: int = 0,
    layers: int = 0,
    vocab: int = 0,
) -> float:
    """A rough upper bound: weights + (gradients + Adam moments of the trainable part) + activations + logits.

    LoRA trains ~1% of the weights; full fine-tuning keeps gradients and two Adam moments for every weight.
    Activations: about 34 bytes per token per hidden unit per layer with bf16/fp32 mixed (Korthikanti et al.).
    Logits: fp32 batch x sequence x vocabulary, held three times (logits, log-softmax, their gradient); with a large
    vocabulary and a small model this term is as big as the weights (measured in docs/benchmarks.md).
    """
    bytes_per = 2 if precision == "16" else 4
    weights = parameters * bytes_per
    trainable = parameters * (0.01 if lora else 1.0)
    optimizer = trainable * (4 + 8)  # fp32 gradients + two fp32 Adam moments
    if not hidden:
        hidden = max(256, int((parameters / 12 / max(layers, 24)) ** 0.5))
    activations = 34 * seq_len * batch_size * hidden * max(layers, 24) * (bytes_per / 2)
    logits = 3 * 4 * seq_len * batch_size * vocab
    return round((weights + optimizer + activations + logits) / 2**30 * 1.2, 2)


def check(
    entry: CatalogEntry,
    info: ComputeInfo,
    *,
    lora: bool = True,
    precision: str = "32",
    seq_len: int = 512,
    batch_size: int = 1,
    allow_list_tag: str = "finetune_compute_allow_list",
) -> CheckResult:
    """The seed's compute checks, for this machine: allow list (or K80 deny list), GPUs, memory."""
    messages: list[str] = []
    allow = entry.tags.get(allow_list_tag)
    skus = compute_skus()["skus"]
    allow_ok = True
    if allow:
        # The local machine matches an allow-listed Azure size when it has a GPU with at least that size's memory.
        needed = [skus[s]["gpu_memory_gb"] for s in allow if s in skus]
        best = max((g.memory_gb for g in info.gpus), default=0.0)
        allow_ok = bool(info.gpus) and (not needed or best >= min(needed) * 0.95)
        if not allow_ok:
            messages.append(
                f"{entry.name} allow-lists only GPU sizes ({', '.join(allow)}); "
                + (f"this machine's best GPU has {best} GB" if info.gpus else "this machine has no CUDA GPU")
            )
    elif info.size.lower() in compute_skus()["unsupported"]:
        allow_ok = False
        messages.append(f"{info.size} is an unsupported (K80) size")
    device = "cuda" if info.gpus else "cpu"
    estimate = estimate_training_memory_gb(
        entry.parameters,
        lora=lora,
        precision=precision,
        seq_len=seq_len,
        batch_size=batch_size,
        hidden=entry.hidden_size,
        layers=entry.num_hidden_layers,
        vocab=entry.vocab_size,
    )
    available = sum(g.memory_gb for g in info.gpus) if info.gpus else info.ram_available_gb
    fits = estimate <= available
    if not fits:
        messages.append(f"estimated {estimate} GB needed for training, {available} GB available on {device}")
    return CheckResult(
        model=entry.name,
        compute=info.size,
        ok=allow_ok and fits,
        allow_list=allow,
        allow_list_ok=allow_ok,
        estimated_memory_gb=estimate,
        available_memory_gb=available,
        fits=fits,
        device=device,
        messages=messages,
    )
