"""Frozen base weights in bf16 for LoRA under bf16 autocast on a CPU.

Autocast runs a linear layer in bf16 by converting its input and weight at each call. It keeps the converted copy
for the rest of the forward only for weights that train (leaf tensors that require grad), so a LoRA base's frozen
fp32 weights are converted again at every call, forward, recomputation and backward. Converting them once at load
made a profiled SmolLM2 training run 7% shorter (``bench/profile_train.py``, docs/benchmarks.md): the matmuls
compute on the same bf16 numbers, and the frozen weights take half the memory. The LoRA adapters stay fp32 (PEFT
upcasts bf16 adapters, its ``autocast_adapter_dtype``), and so do the embeddings and the LM head (tied to them in
many chat models), the norms and everything autocast computes in fp32.
"""

from __future__ import annotations

from typing import Any


def linear_weights_to_bf16(model: Any) -> int:
    """Convert every ``nn.Linear`` of ``model`` but its LM head to bf16 in place; the number of weights converted."""
    import torch

    head = model.get_output_embeddings()
    converted = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module is not head and module.weight.dtype == torch.float32:
            module.to(torch.bfloat16)
            converted += module.weight.numel()
    return converted
