"""A Hugging Face causal-LM folder as one GGUF file, with the ``gguf`` package's writer, tensor-name map and quants.

What llama.cpp's own converter writes for these architectures, rebuilt from the ``gguf`` package (no converter is
vendored): the ``{arch}.*`` hyperparameters, the tokenizer (tokens, types, merges, special ids, whether BOS is added)
and the chat template in the metadata, and the weights under GGUF's tensor names. Supported: Llama (SmolLM2,
Mistral-style), Qwen2 and Phi-3, the families of chattune's catalog. For ``llama`` the Q and K projections are
permuted into llama.cpp's interleaved RoPE order (transformers' GGUF loader undoes it). 1-D tensors (norms, biases)
stay f32; the 2-D weights are ``dtype`` or, with ``quant="q8_0"``, 8-bit blocks of 32 (rows not a multiple of 32
stay ``dtype``). Tensors stream one at a time, so the export needs one tensor's memory, not the model's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from chattune.errors import UserError

logger = logging.getLogger(__name__)

# HF model_type -> (GGUF architecture, whether Q/K are permuted for llama.cpp's interleaved RoPE)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("LLAMA", True),
    "mistral": ("LLAMA", True),  # llama.cpp writes Mistral as llama
    "qwen2": ("QWEN2", False),
    "phi3": ("PHI3", False),
}
# The split regexes of byte-level BPE pre-tokenizers llama.cpp knows by name (tokenizer.ggml.pre).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_KNOWN_SPLITS = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}


def write_gguf(model_dir: Path, out_file: Path, dtype: str = "f16", quant: str | None = None) -> str:
    """Convert the model folder ``model_dir`` to the GGUF file ``out_file``; return its ``general.architecture``.

    Args:
        model_dir: config.json, ``*.safetensors`` and tokenizer.json (+ tokenizer_config.json, chat_template.jinja).
        out_file: The ``.gguf`` file to write.
        dtype: The 2-D weights' type without ``quant``: ``f16``, ``bf16`` or ``f32``.
        quant: None or ``q8_0``.

    Raises:
        UserError: The model's architecture, RoPE scaling or tokenizer is not one GGUF export supports.
    """
    import gguf
    import numpy as np
    import torch
    from safetensors import safe_open

    q = gguf.GGMLQuantizationType
    float_types = {
        "f32": (q.F32, gguf.LlamaFileType.ALL_F32),
        "f16": (q.F16, gguf.LlamaFileType.MOSTLY_F16),
        "bf16": (q.BF16, gguf.LlamaFileType.MOSTLY_BF16),
    }
    float_type, file_type = float_types[dtype]
    if quant == "q8_0":
        file_type = gguf.LlamaFileType.MOSTLY_Q8_0
    cfg = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model_type = cfg.get("model_type")
    if model_type not in ARCHITECTURES:
        raise UserError(
            f"GGUF export does not support model_type {model_type!r}",
            remedy=f"Supported: {', '.join(ARCHITECTURES)}; `--format hf` exports any model.",
        )
    if (scaling := _rope_scaling(cfg)) is not None:
        raise UserError(
            f"GGUF export does not support RoPE scaling {scaling!r} (config.json)", remedy="Use `--format hf`."
        )
    arch_name, permute = ARCHITECTURES[model_type]
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    n_layer, hidden = cfg["num_hidden_layers"], cfg["hidden_size"]
    n_head = cfg["num_attention_heads"]
    n_head_kv = cfg.get("num_key_value_heads") or n_head
    head_dim = cfg.get("head_dim") or hidden // n_head
    tied = cfg.get("tie_word_embeddings", False)
    name_map = gguf.get_tensor_name_map(arch, n_layer)

    # The plan: (file, HF name, GGUF name, shape, type), shapes read without loading the data.
    plan: list[tuple[Path, str, str, tuple[int, ...], Any]] = []
    n_vocab = cfg["vocab_size"]
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(file, framework="pt") as st:
            for name in st.keys():  # noqa: SIM118 - a safetensors handle is not a dict
                if name.endswith(".rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
                    continue
                gguf_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise UserError(f"GGUF export: no GGUF name for tensor {name!r} of a {model_type} model")
                shape = tuple(st.get_slice(name).get_shape())
                if len(shape) <= 1:
                    qtype = q.F32
                elif quant == "q8_0" and shape[-1] % 32 == 0:
                    qtype = q.Q8_0
                else:
                    qtype = float_type
                if gguf_name == "token_embd.weight":
                    n_vocab = shape[0]
                plan.append((file, name, gguf_name, shape, qtype))

    writer = gguf.GGUFWriter(out_file, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_type(gguf.GGUFType.MODEL)
        writer.add_name(model_dir.name)
        writer.add_context_length(cfg["max_position_embeddings"])
        writer.add_embedding_length(hidden)
        writer.add_block_count(n_layer)
        writer.add_feed_forward_length(cfg["intermediate_size"])
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_head_kv)
        if (theta := _rope_theta(cfg)) is not None:
            writer.add_rope_freq_base(theta)
        writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
        writer.add_file_type(int(file_type))
        writer.add_vocab_size(n_vocab)
        writer.add_rope_dimension_count(int(head_dim * cfg.get("partial_rotary_factor", 1.0)))
        if head_dim != hidden // n_head:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
        if model_type == "phi3" and cfg.get("sliding_window"):
            writer.add_sliding_window(cfg["sliding_window"])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_tokenizer(writer, model_dir, n_vocab)
        for _, _, gguf_name, shape, qtype in plan:
            # The logical shape with a float placeholder dtype: a uint8 one would be read as a byte shape.
            block, type_size = gguf.GGML_QUANT_SIZES[qtype]
            writer.add_tensor_info(
                gguf_name, shape, np.dtype(np.float32), int(np.prod(shape)) // block * type_size, raw_dtype=qtype
            )
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        handles: dict[Path, Any] = {}
        for file, name, gguf_name, _, qtype in plan:
            if file not in handles:
                handles[file] = safe_open(file, framework="pt")
            data = handles[file].get_tensor(name).to(torch.float32).numpy()
            if permute and gguf_name.endswith("attn_q.weight"):
                data = _permute_qk(data, n_head)
            elif permute and gguf_name.endswith("attn_k.weight"):
                data = _permute_qk(data, n_head_kv)
            if qtype == q.F32:
                data = np.ascontiguousarray(data, dtype=np.float32)
            elif qtype == q.F16:
                data = data.astype(np.float16)
            else:  # BF16 and Q8_0: byte arrays from gguf's reference quantizers
                data = gguf.quants.quantize(data, qtype)
            writer.write_tensor_data(data)
    finally:
        writer.close()
    return str(gguf.MODEL_ARCH_NAMES[arch])


def _permute_qk(w: Any, n_head: int) -> Any:
    """Q/K rows from HF's rotate-half order to llama.cpp's interleaved (GPT-J style) order, per head."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _rope_theta(cfg: dict[str, Any]) -> float | None:
    """RoPE's base; transformers 5 keeps it under ``rope_parameters``."""
    if "rope_theta" in cfg:
        return float(cfg["rope_theta"])
    params = cfg.get("rope_parameters") or {}
    return float(params["rope_theta"]) if "rope_theta" in params else None


def _rope_scaling(cfg: dict[str, Any]) -> str | None:
    """The RoPE scaling type, None for plain RoPE."""
    scaling = cfg.get("rope_scaling") or cfg.get("rope_parameters") or {}
    kind = scaling.get("rope_type") or scaling.get("type")
    return None if kind in (None, "default") else str(kind)


def _bpe_pre(tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer, read off tokenizer.json's structure."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    types = [p.get("type") for p in parts]
    for part in parts:
        if part.get("type") == "Split" and (pattern := (part.get("pattern") or {}).get("Regex")) in _KNOWN_SPLITS:
            return _KNOWN_SPLITS[pattern]
    if types == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if types == ["Digits", "ByteLevel"] and parts[0].get("individual_digits"):
        return "smollm"
    logger.warning("unrecognised pre-tokenizer %s: tokenizer.ggml.pre='default'", types)
    return "default"


def _write_tokenizer(writer: Any, model_dir: Path, n_vocab: int) -> None:
    """The tokenizer in GGUF's metadata: tokens and their types, merges, special ids, add-BOS and the chat template."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer_json = json.loads((model_dir / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer_json["model"]
    if model["type"] != "BPE":
        raise UserError(f"GGUF export supports BPE tokenizers, not {model['type']!r} (tokenizer.json)")
    by_id: dict[int, str] = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in tokenizer_json.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= n_vocab:
        raise UserError(f"GGUF export: the tokenizer has id {max(by_id)}, the model's vocabulary {n_vocab} rows")
    kinds = gguf.TokenType
    byte_fallback = bool(model.get("byte_fallback", False))
    tokens: list[str] = []
    types: list[int] = []
    scores: list[float] = []
    for i in range(n_vocab):
        text = by_id.get(i)
        if text is None:  # embedding rows past the tokenizer (Qwen2 pads its vocabulary)
            tokens.append(f"[PAD{i}]")
            types.append(kinds.UNUSED)
            scores.append(-1000.0)
            continue
        tokens.append(text)
        if i in added:
            types.append(kinds.CONTROL if added[i].get("special") else kinds.USER_DEFINED)
            scores.append(0.0)
        elif byte_fallback and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types.append(kinds.BYTE)
            scores.append(0.0)
        else:
            types.append(kinds.NORMAL)
            scores.append(-float(i))
    if byte_fallback:  # sentencepiece-style BPE (Llama 2, Mistral, Phi-3)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores)
        unk = model.get("unk_token")
        if unk is not None and unk in model["vocab"]:
            types[model["vocab"][unk]] = kinds.UNKNOWN
        norm = json.dumps([tokenizer_json.get("normalizer"), tokenizer_json.get("pre_tokenizer")])
        writer.add_add_space_prefix(
            '"prepend": "\\u2581"' in norm or "Prepend" in norm or '"prepend_scheme": "always"' in norm
        )
    else:  # byte-level BPE (GPT-2, Llama 3, SmolLM2, Qwen2)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_bpe_pre(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types([int(t) for t in types])
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=n_vocab)
    # Whether BOS/EOS are added is what the tokenizer does (transformers 5 no longer writes add_bos_token).
    hf = AutoTokenizer.from_pretrained(model_dir)
    ids = hf("a")["input_ids"]
    special.add_special_token["bos"] = bool(ids) and hf.bos_token_id is not None and ids[0] == hf.bos_token_id
    special.add_special_token["eos"] = bool(ids) and hf.eos_token_id is not None and ids[-1] == hf.eos_token_id
    if special.chat_template is None and getattr(hf, "chat_template", None):
        special.chat_template = hf.chat_template
    special.add_to_gguf(writer, quiet=True)
