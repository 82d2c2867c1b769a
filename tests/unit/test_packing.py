"""Packing without cross-contamination: TRL's padding-free batch of two conversations gives each the same logits
as running it alone, on the CPU attention paths (SDPA and eager), for the catalog's architectures."""

from __future__ import annotations

from typing import Any

import pytest
import torch


def _model(family: str, attn: str) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    small = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    small |= {"num_attention_heads": 4, "num_key_value_heads": 2, "attn_implementation": attn}
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**small)).eval()
    return Phi3ForCausalLM(Phi3Config(pad_token_id=0, **small)).eval()


@pytest.mark.parametrize("family", ["llama", "phi3"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_conversations_do_not_see_each_other(family: str, attn: str) -> None:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from chattune.training.packing import packing_support

    model = _model(family, attn)
    correct, fast, _ = packing_support(model)
    assert correct is True and fast is False  # no varlen kernel on these paths: correct, off by default
    first, second = list(range(3, 20)), list(range(40, 51))
    collator = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    batch = collator([{"input_ids": first}, {"input_ids": second}])
    assert "attention_mask" not in batch
    assert batch["position_ids"][0].tolist() == list(range(len(first))) + list(range(len(second)))
    with torch.no_grad():
        # use_cache=False, as SFTTrainer.compute_loss passes: the packed mask is built for cache-less forwards.
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        alone = [model(input_ids=torch.tensor([ids])).logits[0] for ids in (first, second)]
    torch.testing.assert_close(packed, torch.cat(alone), rtol=1e-4, atol=1e-4)
    # Without the restarting position ids the second conversation would attend to the first: a real difference.
    with torch.no_grad():
        mixed = model(input_ids=batch["input_ids"], use_cache=False).logits[0, len(first) :]
    assert not torch.allclose(mixed, alone[1], atol=1e-3)


class _OldStyleModel:
    """A model class from a module whose attention mask ignores position ids (no masking_utils call here)."""

    class config:  # mirrors `model.config`
        _attn_implementation = "sdpa"


def test_packing_is_off_where_the_model_would_mix_conversations() -> None:
    from chattune.training.packing import packing_support

    supported, fast, why = packing_support(_OldStyleModel())
    assert supported is False and fast is False and "mix conversations" in why


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_packed_rows_keep_conversations_apart_row_by_row(family: str) -> None:
    """chattune's path: TRL's bfd pack_dataset rows, batched row by row without an attention mask."""
    from datasets import Dataset

    from chattune.training.packing import PackedRowsCollator, pack

    model = _model(family, "sdpa")
    convs = [list(range(3, 20)), list(range(40, 51)), list(range(60, 90)), list(range(5, 12))]
    masks = [[0] * 3 + [1] * (len(c) - 3) for c in convs]
    rows = pack(Dataset.from_dict({"input_ids": convs, "assistant_masks": masks}), 40)
    assert len(rows) < len(convs)  # some conversations share a row
    assert sorted(n for r in rows["seq_lengths"] for n in r) == sorted(len(c) for c in convs)
    batch = PackedRowsCollator(pad_token_id=0)([dict(r) for r in rows])
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == len(rows)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        for row, ids in enumerate(batch["input_ids"].tolist()):
            start = 0
            for length in rows[row]["seq_lengths"]:
                alone = model(input_ids=torch.tensor([ids[start : start + length]])).logits[0]
                torch.testing.assert_close(logits[row, start : start + length], alone, rtol=1e-4, atol=1e-4)
                start += length
    # labels: only the assistant tokens of each conversation, and never the padding
    assert int((batch["labels"] != -100).sum()) == sum(sum(m) for m in masks)
