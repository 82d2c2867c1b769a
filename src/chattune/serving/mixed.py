"""One forward pass for the running rows' next tokens and the new rows' prompts together (a mixed step).

Without it, a request that joins the running batch costs a forward pass of its own (its prompt's prefill) beside
the batch's decoding step. On a CPU a forward pass of a small model is bound by reading the weights: a 40-token
prefill of SmolLM2 costs more than a 16-row decoding step, most of it the same weight reads the step does anyway.
vLLM and TGI batch prefills with decodes for this reason (chunked prefill, mixed batches).

The model runs unchanged on one flattened row: the running rows' next tokens first, then each new row's prompt
tokens (those its prefix-cache hit does not cover), with per-token ``position_ids``, so every linear layer sees one
matrix. Only attention is split, by an attention function registered with transformers' ``AttentionInterface``
under ``ATTENTION`` (the pattern of chattune.training.attention) and a ``MixedCache`` that takes the layer's new
keys and values apart:

- the running rows' one key / value each go into the batch's cache (chattune.serving.kv_cache), and their queries
  attend over it with the batch's left-padding mask (SDPA, GQA packed as transformers does for one query token);
- each new row's keys / values (after its cached beginning, if any) are kept per row, and its queries attend over
  them causally (SDPA's causal flag, or a bottom-right causal mask after a cached beginning).

With no running rows it is a padding-free prefill of several prompts (a burst of requests arriving together):
a left-padded batch computes every row to the longest prompt's length.

Outside a mixed step (``layout`` unset) the function is transformers' ``sdpa_attention_forward`` and the mask is
its ``sdpa_mask``: a model switched to it computes what it computed before.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ATTENTION = "chattune_mixed"

_active = threading.local()


@dataclass
class Layout:
    """Where each part of the flattened row comes from, and the keys / values the step produced per layer."""

    running: int  # the running rows: one token each, first in the row
    running_cache: Any  # the batch's DynamicCache
    running_mask: Any  # (running, 1, 1, kv length) bool: True where a running row attends
    lengths: list[int]  # tokens computed for each new row
    beginnings: list[list[tuple[Any, Any]] | None]  # per new row: its cached beginning, per layer (kv heads, n, dim)
    new_rows: dict[int, list[tuple[Any, Any]]] = field(default_factory=dict)  # per layer: (1, kv heads, n, dim)


@contextlib.contextmanager
def active(layout: Layout) -> Iterator[None]:
    """Make ``layout`` the one the attention function and MixedCache see (on this thread) for one forward pass."""
    _active.layout = layout
    try:
        yield
    finally:
        _active.layout = None


def _layout() -> Layout | None:
    return getattr(_active, "layout", None)


@functools.cache
def _cache_class() -> type:
    """The ``MixedCache`` class, made once (transformers is imported when the first mixed step runs)."""
    from transformers import Cache

    class MixedCache(Cache):  # type: ignore[misc]
        """The cache a mixed step passes to the model: splits each layer's keys / values as ``Layout`` says."""

        def __init__(self, layout: Layout):
            super().__init__(layers=layout.running_cache.layers)
            self.layout = layout

        def update(self, key_states: Any, value_states: Any, layer_idx: int, *args: Any, **kwargs: Any) -> Any:
            import torch

            layout, n = self.layout, self.layout.running
            keys, values = key_states, value_states  # unused by the attention function when nothing runs
            if n:  # (1, kv heads, running + new tokens, dim): the running rows' column -> (running, kv heads, 1, dim)
                layer: Any = self.layers[layer_idx]
                keys, values = layer.update(
                    key_states[0, :, :n].transpose(0, 1).unsqueeze(2),
                    value_states[0, :, :n].transpose(0, 1).unsqueeze(2),
                )
            rows = []
            splits = zip(
                key_states[:, :, n:].split(layout.lengths, dim=2),
                value_states[:, :, n:].split(layout.lengths, dim=2),
                layout.beginnings,
                strict=True,
            )
            for k, v, beginning in splits:
                if beginning is not None:
                    cached_k, cached_v = beginning[layer_idx]
                    k, v = torch.cat([cached_k[None], k], dim=2), torch.cat([cached_v[None], v], dim=2)
                rows.append((k, v))
            layout.new_rows[layer_idx] = rows
            return keys, values

    return MixedCache


def cache(layout: Layout) -> Any:
    """The cache object to pass to the model for a mixed step over ``layout``."""
    return _cache_class()(layout)


def attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *args: Any, **kwargs: Any
) -> tuple[Any, None]:
    """Attention with transformers' signature: query ``[1, heads, tokens, dim]`` -> ``[1, tokens, heads, dim]``."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout = _layout()
    if layout is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    scale = kwargs.get("scaling")
    n, heads, dim = layout.running, query.shape[1], query.shape[-1]
    groups = getattr(module, "num_key_value_groups", 1)
    outputs = []
    if n:
        # the running rows: one query each; GQA packed: (rows, kv heads, groups, dim) against (rows, kv heads, T, dim)
        q = query[0, :, :n].transpose(0, 1).reshape(n, heads // groups, groups, dim)
        out = torch.nn.functional.scaled_dot_product_attention(
            q, key, value, attn_mask=layout.running_mask, scale=scale
        )
        outputs.append(out.reshape(1, n, heads, dim))
    for q, (k, v) in zip(query[:, :, n:].split(layout.lengths, dim=2), layout.new_rows[module.layer_idx], strict=True):
        cached = k.shape[2] - q.shape[2]
        if cached:  # queries after a cached beginning: causal aligned bottom-right
            rows = torch.arange(q.shape[2], device=q.device)[:, None] + cached
            mask = torch.arange(k.shape[2], device=q.device)[None, :] <= rows
            if groups > 1:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
        else:
            out = torch.nn.functional.scaled_dot_product_attention(
                q, k, v, is_causal=True, scale=scale, enable_gqa=groups > 1
            )
        outputs.append(out.transpose(1, 2))
    return torch.cat(outputs, dim=1), None


def use_mixed_steps(model: Any) -> bool:
    """Switch a model on the SDPA path to the mixed-step attention; False (unchanged) for any other kernel."""
    from chattune.inference import use_sdpa_variant

    return use_sdpa_variant(model, ATTENTION, attention)
