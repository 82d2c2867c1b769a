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
