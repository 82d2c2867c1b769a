"""QLoRA (``optimization.load_in_4bit``) as far as a machine without a GPU can take it: the job is refused at
``jobs create`` time naming the option, the bitsandbytes config is the paper's recipe, and the memory estimate counts
4-bit weights. The 4-bit training itself needs CUDA (bitsandbytes' kernels), which no machine of this work had: it
is not run here (docs/qlora.md)."""

from __future__ import annotations

import sys

import pytest

from chattune.catalog import get_entry
from chattune.compute import NF4_BITS, ComputeInfo, check, estimate_training_memory
from chattune.errors import ConfigError
from chattune.pipeline.config import parse_spec
from chattune.pipeline.resolved import resolve
from chattune.training.builders import quantization_config
from chattune.training.params import OptimizationParams


def spec(**optimization: object) -> object:
    return parse_spec({"data": {"train": "t.jsonl"}, "optimization": optimization})


def test_load_in_4bit_without_a_gpu_is_refused_at_resolve_naming_the_option() -> None:
    with pytest.raises(ConfigError) as exc:
        resolve(spec(apply_lora=True, load_in_4bit=True), {}, has_cuda=False)  # type: ignore[arg-type]
    (problem,) = exc.value.problems
    assert problem.where == "optimization.load_in_4bit (from user)"
    assert "CUDA GPU" in problem.message and "load_in_4bit: false" in problem.message


def test_load_in_4bit_needs_lora_and_the_bitsandbytes_package(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_spec({"data": {"train": "t"}, "optimization": {"load_in_4bit": True, "apply_lora": False}})
    assert [p.code for p in exc.value.problems] == ["invalid_combination"]
    # Left at its default (false), apply_lora is caught once resolved.
    with pytest.raises(ConfigError) as resolved:
        resolve(spec(load_in_4bit=True), {}, has_cuda=True)  # type: ignore[arg-type]
    assert any("apply_lora: true" in p.message for p in resolved.value.problems)
    # On a GPU machine without bitsandbytes: the install command (the import is blocked, as if absent).
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    with pytest.raises(ConfigError) as missing:
        resolve(spec(apply_lora=True, load_in_4bit=True), {}, has_cuda=True)  # type: ignore[arg-type]
    assert [p.code for p in missing.value.problems] == ["missing_dependency"]
    assert "pip install bitsandbytes" in missing.value.problems[0].message


def test_the_quantization_config_is_nf4_double_quantized_with_bf16_compute() -> None:
    import torch

    assert quantization_config(OptimizationParams(apply_lora=True)) is None
    config = quantization_config(OptimizationParams(apply_lora=True, load_in_4bit=True))
    assert config.load_in_4bit and not config.load_in_8bit
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16


def test_the_memory_estimate_counts_4_bit_weights_and_a_cpu_check_says_why_not() -> None:
    entry = get_entry("phi-3-mini-4k-instruct")
    sizes = {"hidden": entry.hidden_size, "layers": entry.num_hidden_layers, "vocab": entry.vocab_size}
    lora = estimate_training_memory(entry.parameters, lora=True, precision="16", **sizes)
    qlora = estimate_training_memory(entry.parameters, lora=True, load_in_4bit=True, **sizes)
    assert qlora.weights_gb == pytest.approx(lora.weights_gb * NF4_BITS / 16, rel=0.01)
    assert (qlora.gradients_gb, qlora.optimizer_gb, qlora.activations_gb) == (
        lora.gradients_gb,
        lora.optimizer_gb,
        lora.activations_gb,
    )
    assert qlora.total_gb < lora.total_gb
    cpu = ComputeInfo(size="local-cpu", cpu_cores=2, ram_gb=64.0, ram_available_gb=64.0, gpus=[])
    result = check(entry, cpu, lora=True, load_in_4bit=True)
    assert not result.ok and any("QLoRA (load_in_4bit) needs a CUDA GPU" in m for m in result.messages)
