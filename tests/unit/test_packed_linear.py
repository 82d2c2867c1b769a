"""Linear layers packed for oneDNN (chattune.packed_linear) on a tiny random Llama: the same logits to float rounding,
the same greedy answers as transformers' own layers, the weights held once, LoRA adapters still loadable on top, and
packing only where it applies."""

from __future__ import annotations

import copy
import gc
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from chattune import packed_linear
from chattune.inference import ChatGenerator, GenerationParams

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this PyTorch has no oneDNN: nothing is packed"
)


def _ids(tokenizer: Any) -> torch.Tensor:
    return torch.tensor([tokenizer("convert May 1, 2020 to ISO 8601, please")["input_ids"]])


def test_packed_layers_compute_the_same_logits_and_answers(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    packed = copy.deepcopy(model)
    linears = sum(type(m) is nn.Linear for m in model.modules())
    assert packed_linear.applies(packed) and packed_linear.pack(packed) == linears > 0
    assert not any(type(m) is nn.Linear for m in packed.modules())
    assert packed_linear.pack(packed) == 0  # packing twice changes nothing
    # the original weights are released: each packed layer holds its weight once, in oneDNN's layout
    layers = [m for m in packed.modules() if isinstance(m, packed_linear.PackedLinear)]
    assert all(m.weight.numel() == 0 and m.packed.is_mkldnn for m in layers)
    with torch.inference_mode():
        expected, got = model(_ids(tokenizer)).logits, packed(_ids(tokenizer)).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    conversations = [[{"role": "user", "content": text}] for text in ("hello there", "what is the date today?")]
    params = GenerationParams(max_new_tokens=12)
    alone = ChatGenerator(model, tokenizer).generate(conversations, params)
    assert [a.text for a in ChatGenerator(packed, tokenizer).generate(conversations, params)] == [a.text for a in alone]


def test_a_lora_adapter_loads_on_packed_layers_and_answers_as_on_plain_ones(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    from peft import LoraConfig, get_peft_model

    model, tokenizer = model_and_tokenizer
    torch.manual_seed(3)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    plain = get_peft_model(copy.deepcopy(model), config)
    packed = copy.deepcopy(model)
    packed_linear.pack(packed)
    tuned = get_peft_model(packed, config)  # PEFT wraps the packed layers as it wraps nn.Linear
    adapter = {key: value for key, value in plain.state_dict().items() if "lora_" in key}
    assert not tuned.load_state_dict(adapter, strict=False).unexpected_keys
    with torch.inference_mode():
        expected, got = plain(_ids(tokenizer)).logits, tuned(_ids(tokenizer)).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    # the adapter's own matrices stay plain; the base layers under them are packed
    wrapped = tuned.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(wrapped.base_layer, packed_linear.PackedLinear)
    assert type(wrapped.lora_A["default"]) is nn.Linear


def test_packing_applies_to_fp32_on_a_cpu_unless_turned_off(
    model_and_tokenizer: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    model, _ = model_and_tokenizer
    assert packed_linear.applies(model)
    assert not packed_linear.applies(copy.deepcopy(model).to(torch.bfloat16))
    monkeypatch.setenv("CHATTUNE_PACKED_LINEAR", "0")
    assert not packed_linear.applies(model)


def _mapped(path: Any) -> bool:
    """Whether this process maps the file at ``path`` (Linux's /proc/self/maps)."""
    return str(path) in Path("/proc/self/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the process's mappings from /proc")
def test_packing_a_loaded_checkpoint_unmaps_its_file(model_and_tokenizer: tuple[Any, Any], tmp_path: Path) -> None:
    """transformers maps the checkpoint file and reads each weight out of the mapping; the parameters left unpacked
    are copied out, so the file's pages are not kept resident beside the packed weights."""
    from transformers import AutoModelForCausalLM

    model, _ = model_and_tokenizer
    model.save_pretrained(tmp_path)
    checkpoint = tmp_path / "model.safetensors"
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32)
    if not _mapped(checkpoint):
        pytest.skip("this transformers copied the weights at load: nothing is mapped")
    packed_linear.pack(loaded)
    gc.collect()
    assert not _mapped(checkpoint)
