"""Tiny random chat models of real architectures, each with a real tokenizer that has a chat template, built in code.

Configs come from transformers' own config classes at tiny sizes (2 layers, hidden 64) with random weights; the
tokenizers are the Phi-3 tokenizer in shared/fixtures, chattune's tiny byte-level BPE (ChatML), and GPT-2's vocabulary
from shared/fixtures with the special tokens a Mistral or Gemma template needs. Nothing is downloaded.

``write_model(arch, folder)`` writes a Hugging Face folder (config.json, model.safetensors, tokenizer files), as a user
would hand it to ``chattune models import NAME --from FOLDER``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import FIXTURES

# 2 layers, hidden 64: a real model of the family, built in milliseconds.
TINY: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
ARCHITECTURES = ("llama", "qwen2", "phi3", "mistral", "gemma")
# What each architecture's tokenizer carries as its own chat template (None: the user must pass --chat-template).
OWN_TEMPLATE: dict[str, str | None] = {
    "llama": "smollm2",  # chattune's SmolLM2 ChatML, as the tiny-test model has
    "qwen2": "qwen2_5",  # TRL's copy of Qwen2.5's ChatML template
    "phi3": "phi3",  # the real Phi-3-mini tokenizer_config.json in shared/fixtures
    "mistral": None,  # a GPT-2 vocabulary with no template: imported with --chat-template mistral
    "gemma": "gemma",  # TRL's copy of Gemma's template (no system role)
}


def chatml_tokenizer(template: str) -> Any:
    """chattune's tiny byte-level BPE (ChatML special tokens) with ``template`` as its chat template."""
    from chattune.catalog.importer import build_tiny_tokenizer

    tok = build_tiny_tokenizer(512)
    tok.chat_template = template
    return tok


def phi3_tokenizer() -> Any:
    """The real Phi-3-mini-4k-instruct tokenizer (shared/fixtures), with its own chat template."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(FIXTURES / "phi3_mini_tokenizer")


def gpt2_tokenizer(specials: dict[str, str], extra: list[str] | None = None, template: str | None = None) -> Any:
    """GPT-2's byte-level BPE (shared/fixtures vocab and merges) with the given special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = FIXTURES / "gpt2_tokenizer"
    tok = Tokenizer(models.BPE.from_file(str(folder / "gpt2.vocab"), str(folder / "gpt2.merges.txt")))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=4096, **specials)
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    fast.chat_template = template
    return fast


def trl_template(name: str) -> str:
    """A chat template TRL ships (``trl/chat_templates/NAME.jinja``)."""
    from importlib import resources

    return resources.files("trl").joinpath("chat_templates", f"{name}.jinja").read_text(encoding="utf-8")


def tokenizer_for(arch: str) -> Any:
    """The tokenizer paired with ``arch``."""
    from chattune.templates import smollm2_chat_template

    if arch == "llama":
        return chatml_tokenizer(smollm2_chat_template())
    if arch == "qwen2":
        return chatml_tokenizer(trl_template("qwen2_5"))
    if arch == "phi3":
        return phi3_tokenizer()
    if arch == "mistral":
        return gpt2_tokenizer({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"})
    if arch == "gemma":
        specials = {"bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>"}
        return gpt2_tokenizer(specials, ["<start_of_turn>", "<end_of_turn>"], trl_template("gemma"))
    raise ValueError(arch)


def config_for(arch: str, vocab_size: int, **overrides: Any) -> Any:
    """A transformers config of ``arch`` at tiny sizes."""
    from transformers import GemmaConfig, LlamaConfig, MistralConfig, Phi3Config, Qwen2Config

    classes = {
        "llama": LlamaConfig,
        "qwen2": Qwen2Config,
        "phi3": Phi3Config,
        "mistral": MistralConfig,
        "gemma": GemmaConfig,
    }
    sizes = {**TINY, "max_position_embeddings": 4096 if arch == "phi3" else 2048, "tie_word_embeddings": True}
    if arch == "gemma":
        sizes["head_dim"] = 16
    return classes[arch](vocab_size=vocab_size, **{**sizes, **overrides})


def write_model(arch: str, folder: Path, *, seed: int = 0, tokenizer: Any = None, **overrides: Any) -> Path:
    """Write a tiny random ``arch`` model with its tokenizer to ``folder`` (Hugging Face layout); return it."""
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = tokenizer if tokenizer is not None else tokenizer_for(arch)
    config = config_for(
        arch,
        len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
