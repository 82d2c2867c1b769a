"""Linear layers whose weights oneDNN lays out for its matrix multiply once, at load time, for fp32 inference on CPUs.

A transformers model's ``nn.Linear`` multiplies through MKL's ``sgemm``, which re-packs the weight matrix into its
blocked layout on every call. At a decoding step's shapes (a few rows against a large weight) that repacking is a
large part of the work: on a 2-core AVX2 CPU a 16-row decoding step of SmolLM2 took ~145 ms packed against
~225 ms, and a served instance under 16 clients gave 1.31x the tokens/s (docs/benchmarks.md). This is what
PyTorch's own compiler does for CPU inference with frozen weights (inductor's ``freezing``, which calls the same
``torch.ops.mkldnn._linear_pointwise`` on weights reordered by ``torch.ops.mkldnn._reorder_linear_weight``); here the
layers are swapped once instead, so no compilation is needed and any shape runs.

Only the weight's layout changes: the packed layer holds the weight once (the original is released) and computes
the same product, to float rounding. The layers stay ``nn.Linear`` (a subclass), so PEFT still wraps them with LoRA
adapters, loaded before or after packing; adapters' own small matrices are not packed.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def applies(model: Any) -> bool:
    """Whether to pack ``model``: fp32 on a CPU whose PyTorch has oneDNN's two operators, unless the user said not.

    ``CHATTUNE_PACKED_LINEAR=0`` keeps transformers' own layers.
    """
    from chattune.settings import Settings

    return (
        Settings().packed_linear
        and model.device.type == "cpu"
        and model.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class PackedLinear(nn.Linear):
    """``nn.Linear`` with its weight in oneDNN's blocked layout; inference only (the packed weight has no gradient)."""

    def __init__(self, linear: nn.Linear) -> None:
        nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach()
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight)
        # A placeholder with the weight's dtype and device, which PEFT reads when it adds an adapter; the values live
        # in ``packed`` only.
        self.weight = nn.Parameter(weight.new_empty(0), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ weight.T + bias`` over the last dimension, through oneDNN."""
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        """What ``print(model)`` shows: the layer's sizes and that it is packed."""
        return f"{super().extra_repr()}, packed for oneDNN"


def pack(model: nn.Module) -> int:
    """Swap every ``nn.Linear`` of ``model`` (not LoRA's own, nor one packed already) for a ``PackedLinear``.

    Returns how many were swapped. Tied output embeddings get a packed copy of their own: the input embedding keeps
    the original.

    transformers maps a checkpoint's weights from its safetensors file, each tensor a view of one mapping of the
    whole file; while any of them lives (the embedding, the norms), the file's pages stay resident beside the
    packed copies. So the parameters left unpacked are copied into memory of their own, and the mapping goes with
    the last view (SmolLM2 in fp32: ~1.5 GB resident without this, ~1.06 GB with it, against ~0.94 GB unpacked).
    """
    swapped = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if type(child) is not nn.Linear or ".lora_" in f".{name}.":
                continue
            setattr(module, child_name, PackedLinear(child))
            swapped += 1
    if swapped:
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.numel() and not tensor.is_mkldnn:
                tensor.data = tensor.data.clone()
    return swapped
