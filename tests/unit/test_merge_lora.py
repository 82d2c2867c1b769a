"""merge_lora_weights: the merged model computes what base + adapter compute, stands alone, keeps the base's dtype."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def _base(tmp_path: Path, dtype: str) -> Path:
    """The catalog's tiny-test model (random Llama weights, SmolLM2's ChatML), saved in ``dtype``."""
    import torch
    from transformers import AutoModelForCausalLM

    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model

    built, path = tmp_path / "built", tmp_path / "base"
    source = get_entry("tiny-test").source
    build_random_model(source, built)
    AutoModelForCausalLM.from_pretrained(built, dtype=getattr(torch, dtype)).save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        (path / name).write_bytes((built / name).read_bytes())
    return path


def _adapter(tmp_path: Path, base: Path, tiny_tokenizer: Any) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    # init_lora_weights=False: B is random too, so the adapter really changes the outputs.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    path = tmp_path / "adapter"
    get_peft_model(model, lora).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)  # as the finetune step saves it: tokenizer and chat template beside
    return path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merged_model_matches_base_plus_adapter(tmp_path: Path, tiny_tokenizer: Any, dtype: str) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from chattune.inference import save_merged

    base = _base(tmp_path, dtype)
    adapter = _adapter(tmp_path, base, tiny_tokenizer)
    out = tmp_path / "merged"
    save_merged(base, adapter, out)

    assert not (out / "adapter_config.json").exists()  # a plain model: no PEFT needed to load it
    assert (out / "chat_template.jinja").read_text() == (adapter / "chat_template.jinja").read_text()
    assert json.loads((out / "config.json").read_text())["dtype"] == dtype  # the base checkpoint's dtype

    ids = torch.tensor([tiny_tokenizer("hello there, how are you?")["input_ids"]])
    with torch.no_grad():
        plain = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)(ids).logits
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter)(
            ids
        ).logits
        merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)(ids).logits
    assert (expected - plain).abs().max() > 1e-2  # the adapter matters, so the comparison below means something
    tolerance = 1e-4 if dtype == "float32" else 5e-2  # bf16: the merged weights are rounded once more
    assert (merged - expected).abs().max() < tolerance
