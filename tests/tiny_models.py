"""Tiny random chat models of real architectures, each with a real tokenizer that has a chat template, built in code.

Configs come from transformers' own config classes at tiny sizes (2 layers, hidden 64) with random weights; the
tokenizers are the Phi-3 tokenizer in shared/fixtures, chattune's tiny byte-level BPE (ChatML), and GPT-2's vocabulary
from shared/fixtures with the special tokens a Mistral or Gemma template needs. Nothing is downloaded.

``write_model(arch, folder)`` writes a Hugging Face folder (config.json, model.safetensors, tokenizer files), as a user
would hand it to ``chattune models import NAME --from FOLDER``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from tests.conftest import shared_fixture as fixture

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

    return AutoTokenizer.from_pretrained(fixture("phi3_mini_tokenizer"))


def gpt2_tokenizer(specials: dict[str, str], extra: list[str] | None = None, template: str | None = None) -> Any:
    """GPT-2's byte-level BPE (shared/fixtures vocab and merges) with the given special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder = fixture("gpt2_tokenizer")
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
    paired = tokenizer is None
    tokenizer = tokenizer if tokenizer is not None else tokenizer_for(arch)
    config = config_for(
        arch,
        overrides.pop("vocab_size", len(tokenizer)),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    if arch == "phi3" and paired:
        # The fixture's own files, byte for byte: the template lives in tokenizer_config.json, as in the hub repo.
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(fixture("phi3_mini_tokenizer", name), folder / name)
    else:
        tokenizer.save_pretrained(folder)
    return folder


def write_gguf(folder: Path, out: Path) -> Path:
    """Write a Llama-architecture model folder as an F32 GGUF file, as llama.cpp's converter lays it out.

    Uses the ``gguf`` package's writer (no llama.cpp needed): llama.cpp's tensor names, Q/K rows permuted the way
    its converter does (transformers' GGUF loader permutes them back), the byte-level BPE vocabulary, merges, special
    token ids and the chat template. Loading it with transformers gives back the same logits.
    """
    import gguf
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = model.config
    writer = gguf.GGUFWriter(str(out), "llama")
    writer.add_name(folder.name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    writer.add_rope_dimension_count(cfg.hidden_size // cfg.num_attention_heads)
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    tokens = [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    special = set(tok.all_special_ids)
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    merges = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
    writer.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_pad_token_id(tok.pad_token_id)
    writer.add_chat_template(tok.chat_template)

    def permute(x: Any, heads: int) -> Any:  # llama.cpp's convert_hf_to_gguf.py LlamaModel.permute
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    fixed = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    per_layer = {
        "input_layernorm": "attn_norm",
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "post_attention_layernorm": "ffn_norm",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        if name in fixed:
            target = fixed[name]
        else:  # model.layers.<i>.<module path>.weight
            parts = name.split(".")
            target = f"blk.{parts[2]}.{per_layer['.'.join(parts[3:-1])]}"
        data = tensor.detach().float()
        if target.endswith("attn_q"):
            data = permute(data, cfg.num_attention_heads)
        elif target.endswith("attn_k"):
            data = permute(data, cfg.num_key_value_heads)
        writer.add_tensor(f"{target}.weight", data.numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
