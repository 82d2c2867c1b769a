"""Packed training rows without one conversation attending to another.

Conversations are packed into rows of at most ``max_seq_length`` tokens by TRL's best-fit-decreasing
``pack_dataset``; ``position_ids`` restart at each conversation and no attention mask is passed, so transformers
derives a block-diagonal mask per row from them (``masking_utils.create_causal_mask``; flash-attention kernels read
the boundaries from the lengths instead). Each batch keeps its rows apart: a whole batch flattened into one
sequence under a mask costs (batch x length)^2 (measured: 8 GB and half the speed of padding on a CPU,
bench/train_throughput.py); per row it costs batch x length^2. (TRL's padding-free batches, the default, avoid both:
chattune.training.attention runs SDPA per conversation.)
Models whose modeling code does not build masks from position ids would let conversations see each other, so
packing stays off for them.
"""

from __future__ import annotations

import sys
from typing import Any


def _module_builds_packed_masks(module_name: str) -> bool:
    from transformers import masking_utils

    module = sys.modules.get(module_name)
    builders = (masking_utils.create_causal_mask, masking_utils.create_sliding_window_causal_mask)
    return module is not None and any(value in builders for value in vars(module).values() if callable(value))


def packing_support(model: Any) -> tuple[bool, bool, str]:
    """Whether packing is correct and fast for this loaded model: (correct, fast, why).

    Correct: packed rows keep conversations apart; fast: that is also the faster choice. It is where a varlen (flash)
    kernel reads the boundaries; on the SDPA/eager paths the per-row block mask makes a packed row cost its length
    squared, and padded batches of short rows measured faster on this CPU (docs/benchmarks.md), so packing is on by
    default only with such a kernel.
    """
    cls = type(model)
    implementation = getattr(model.config, "_attn_implementation", None) or "eager"
    if "flash" in implementation:
        return True, True, f"{implementation} reads the conversation boundaries from the packed sequence lengths"
    if _module_builds_packed_masks(cls.__module__):
        return (
            True,
            False,
            f"{cls.__name__} with {implementation} attention masks each conversation from its position ids; "
            "without a varlen kernel a packed row costs its length squared, so it is off unless asked for",
        )
    return (
        False,
        False,
        f"{cls.__name__} does not derive attention masks from position ids; packing would mix conversations",
    )


def pack(dataset: Any, max_length: int) -> Any:
    """Pack tokenized conversations into rows by TRL's best-fit decreasing.

    Tokenized conversations (``input_ids``, ``assistant_masks``) -> packed rows (``input_ids``, ``labels``,
    ``seq_lengths``); no conversation is split (preprocess truncated them).
    """
    from trl.data_utils import pack_dataset

    def labelled(row: dict[str, Any]) -> dict[str, Any]:
        ids = row["input_ids"]
        return {
            "input_ids": ids,
            "labels": [t if m else -100 for t, m in zip(ids, row["assistant_masks"], strict=True)],
        }

    rows = dataset.map(labelled, remove_columns=dataset.column_names)
    return pack_dataset(rows, max_length, strategy="bfd")


class PackedRowsCollator:
    """Collator for packed rows that lets the model mask each conversation from its position ids.

    TRL's collator, row by row (position ids restarting per conversation, right padding), without the attention mask.
    Padding sits after every real token, so a causal model never attends to it, and its labels are -100.
    """

    def __init__(self, pad_token_id: int):
        from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

        self.inner = DataCollatorForLanguageModeling(pad_token_id=pad_token_id, return_position_ids=True)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Collate packed rows; the collator's attention mask is dropped."""
        batch: dict[str, Any] = self.inner(examples)
        batch.pop("attention_mask", None)
        return batch
