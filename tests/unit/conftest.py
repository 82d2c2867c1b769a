"""Unit-test fixtures: the shared third-party fixture files (skipped when absent) and tokenizers built once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import shared_fixture


@pytest.fixture(scope="session")
def shared() -> Callable[..., Path]:
    """``shared("dir", "file")``: a path under shared/fixtures, or a clean skip when it is not there."""
    return shared_fixture


@pytest.fixture(scope="session")
def tiny_tokenizer() -> Any:
    """The tiny-test model's tokenizer: byte-level BPE with SmolLM2's ChatML template (built in under a second)."""
    from chattune.catalog.importer import build_tiny_tokenizer

    return build_tiny_tokenizer(512)


@pytest.fixture(scope="session")
def phi3_tokenizer() -> Any:
    """The real Phi-3-mini-4k-instruct tokenizer files (tokenizer.json + tokenizer_config.json)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(shared_fixture("phi3_mini_tokenizer"))


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_tokenizer: Any) -> tuple[Any, Any]:
    """A tiny random Llama (2 layers, grouped KV heads) with the tiny tokenizer, for the serving engine's tests."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval(), tiny_tokenizer
