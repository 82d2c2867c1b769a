"""Whether a model can train on packed rows without one conversation attending to another.

TRL's padding-free packing concatenates conversations and restarts ``position_ids`` at each one, with no attention
mask. Flash-attention kernels read the boundaries from the sequence lengths; on every other attention path
(SDPA, eager: all a CPU has) transformers derives a block-diagonal mask from the restarting position ids, but only
in models whose modeling code builds its mask with ``masking_utils.create_causal_mask``. Older modeling code would
let the conversations see each other, so packing stays off for it.
"""

from __future__ import annotations

import sys
from typing import Any


def _module_builds_packed_masks(module_name: str) -> bool:
    from transformers import masking_utils

    module = sys.modules.get(module_name)
    builders = (masking_utils.create_causal_mask, masking_utils.create_sliding_window_causal_mask)
    return module is not None and any(value in builders for value in vars(module).values() if callable(value))


def packing_support(model: Any) -> tuple[bool, str]:
    """(supported, why) for this loaded model."""
    cls = type(model)
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if "flash" in implementation:
        return True, f"{implementation} reads the conversation boundaries from the packed sequence lengths"
    if _module_builds_packed_masks(cls.__module__):
        return True, f"{cls.__name__} with {implementation} attention masks each conversation from its position ids"
    return False, f"{cls.__name__} does not derive attention masks from position ids; packing would mix conversations"
