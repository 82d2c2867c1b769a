"""Attention over padding-free batches, one conversation at a time, on PyTorch's own SDPA kernels.

A padding-free batch (TRL's ``padding_free``) is one row holding every conversation of the batch, with
``position_ids`` restarting at each. Flash-attention kernels read the boundaries from the lengths (varlen) and
attend within each conversation only. A CPU has no varlen kernel (``torch.nn.attention.varlen`` is CUDA only), so
transformers' SDPA path builds a block-diagonal ``[total, total]`` mask and the kernel computes every block of it:
for a batch of n conversations of similar length, about 2n times the work of causal attention per conversation,
and on the benchmark's dialogs a third of the whole training step (docs/benchmarks.md).

``sdpa_per_conversation`` is registered with transformers' ``AttentionInterface`` under ``ATTENTION``: for a
packed single row it splits queries, keys and values at the conversation boundaries (where the position ids do not
go up by one: transformers' own ``find_packed_sequence_indices``) and calls transformers'
``sdpa_attention_forward`` on each piece with the causal flag, so the kernel skips the upper triangle and never
sees another conversation. Anything else (padded batches with a mask, several rows, decoding with a cache) goes to
``sdpa_attention_forward`` unchanged. The mask function is transformers' own ``sdpa_mask``, so a caller that does not
pass position ids to the attention layer still gets the correct (block-diagonal) mask, only not the speed.
"""

from __future__ import annotations

from typing import Any

ATTENTION = "sdpa_per_conversation"


def _boundaries(position_ids: Any) -> list[int] | None:
    """Lengths of the conversations in a single packed row, or None when it is not one.

    Packed rows are recognised by transformers' own rule, the one its masks use.
    """
    import torch
    from transformers.masking_utils import find_packed_sequence_indices

    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[0] != 1:
        return None
    sequences = find_packed_sequence_indices(position_ids)
    return None if sequences is None else [int(n) for n in torch.bincount(sequences[0]).tolist()]


def sdpa_per_conversation(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    *args: Any,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention with transformers' signature: query ``[1, heads, total, dim]`` -> ``[1, total, heads, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = _boundaries(kwargs.get("position_ids"))
    if lengths is None or query.shape[2] != key.shape[2] or kwargs.get("position_bias") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    kwargs = {**kwargs, "is_causal": True}
    pieces = zip(query.split(lengths, dim=2), key.split(lengths, dim=2), value.split(lengths, dim=2), strict=True)
    outputs = [sdpa_attention_forward(module, q, k, v, None, *args, **kwargs)[0] for q, k, v in pieces]
    return torch.cat(outputs, dim=1), None


def use_per_conversation_attention(model: Any) -> bool:
    """Switch a model on the SDPA path to per-conversation attention.

    True when switched; False where the model runs another kernel (flash kernels are varlen already, eager has no fused
    kernel to call).
    """
    from chattune.inference import use_sdpa_variant

    return use_sdpa_variant(model, ATTENTION, sdpa_per_conversation)
