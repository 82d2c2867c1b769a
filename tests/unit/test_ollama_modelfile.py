"""chattune.export.ollama: the Modelfile's Go template, system prompt and stop tokens per chat-template family."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from chattune.catalog import get_entry
from chattune.catalog.importer import build_tiny_tokenizer
from chattune.export.ollama import modelfile
from tests.conftest import shared_fixture


def test_phi3_gets_its_go_template_and_both_stop_tokens() -> None:
    tokenizer = AutoTokenizer.from_pretrained(shared_fixture("phi3_mini_tokenizer"))
    text, family = modelfile("m.gguf", tokenizer)
    assert family == "phi3"
    assert text.splitlines()[0] == "FROM ./m.gguf"
    assert '<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n"""' in text
    assert "SYSTEM" not in text  # Phi-3's template adds no system prompt of its own
    assert text.count("PARAMETER stop") == 2 and 'PARAMETER stop "<|end|>"' in text
    assert 'PARAMETER stop "<|endoftext|>"' in text


def test_smollm2s_default_system_prompt_becomes_ollamas_system() -> None:
    tokenizer = build_tiny_tokenizer(get_entry("tiny-test").source.vocab_size or 512)
    text, family = modelfile("m.gguf", tokenizer)
    assert family == "chatml"
    assert 'SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"' in text


def test_an_unknown_template_is_left_to_ollama_to_read_from_the_gguf(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer(512)
    tokenizer.chat_template = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    text, family = modelfile("m.gguf", tokenizer)
    assert family is None and 'TEMPLATE """' not in text and "tokenizer.chat_template" in text
    assert f"PARAMETER stop {tokenizer.eos_token!r}".replace("'", '"') in text
