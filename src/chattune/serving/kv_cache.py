"""The running batch's KV cache: transformers' DynamicCache whose layers grow in place.

transformers' ``DynamicLayer`` appends a decoding step's keys and values with ``torch.cat``, which copies the whole
cache of every layer at every step. On a CPU, with 16 rows of a few hundred tokens, that copy is as large as a
good part of the model's weights (docs/benchmarks.md: about a tenth of a decoding step at 400 tokens of context).
``GrowingLayer`` keeps its keys and values as views of a buffer with room for more tokens, so a step writes its
one new column; the buffer is reallocated (with headroom) only when full or when someone replaced the tensors (the
batch's joins and drops assign new ones, as transformers' own batch operations do).
"""

from __future__ import annotations

from typing import Any

from transformers.cache_utils import DynamicLayer

# room added on reallocation: a quarter of the length, at least this many tokens
MIN_HEADROOM = 32


class GrowingLayer(DynamicLayer):  # type: ignore[misc]  # transformers is untyped here
    """A DynamicLayer whose ``keys`` / ``values`` are views of buffers with room to grow along the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self._buffers: tuple[Any, Any] | None = None

    def _in_buffer(self, batch: int) -> bool:
        """Whether ``keys`` / ``values`` are still the front of the buffers (not tensors assigned since)."""
        current: tuple[Any, Any] = (self.keys, self.values)
        if self._buffers is None or current[0] is None or current[0].dim() != 4:
            return False
        return all(
            tensor.data_ptr() == buffer.data_ptr()
            and tensor.stride() == buffer.stride()
            and tensor.shape[:-2] == buffer.shape[:-2]
            and buffer.shape[0] == batch
            for tensor, buffer in zip(current, self._buffers, strict=True)
        )

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        """Write the new tokens' keys and values after the cached ones; the whole cache (views) for attention."""
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        cached: Any = self.keys
        length = cached.shape[-2] if cached.dim() == 4 else 0
        end = length + key_states.shape[-2]
        if not (self._in_buffer(key_states.shape[0]) and self._buffers[0].shape[-2] >= end):  # type: ignore[index]
            capacity = end + max(MIN_HEADROOM, end // 4)
            shape = (*key_states.shape[:-2], capacity, key_states.shape[-1])
            buffers = key_states.new_empty(shape), value_states.new_empty(shape)
            if length:  # the columns past the end are never read: views stop at the end
                buffers[0][..., :length, :].copy_(self.keys)
                buffers[1][..., :length, :].copy_(self.values)
            self._buffers = buffers
        keys, values = self._buffers  # type: ignore[misc]
        keys[..., length:end, :].copy_(key_states)
        values[..., length:end, :].copy_(value_states)
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values

    def reset(self) -> None:
        """Drop the buffers with the tensors (transformers' reset)."""
        self._buffers = None
        super().reset()


def new_cache(config: Any) -> Any:
    """A DynamicCache for ``config``, its full-attention layers growing in place (sliding-window layers as they are)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache
