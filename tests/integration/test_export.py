"""`models export`: the session's registered LoRA version as a merged Hugging Face folder and as GGUF files, each
loaded back by transformers (its own loaders) and answering as the registered model does; bad options exit 2 before
anything is read or written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from chattune.schemas import ModelExportPublic
from tests.conftest import exact, parse_json

pytestmark = pytest.mark.integration

PROMPTS = [
    [{"role": "user", "content": "Normalize the date: 3 March 2021"}],
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is LoRA?"}],
]


def _greedy(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def _logits(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> torch.Tensor:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        return model(**ids).logits[0]


def test_a_lora_version_exports_merged_to_hf_and_gguf_and_answers_as_registered(
    cli: Any, trained_workspace: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from chattune.inference import load_model, load_tokenizer

    monkeypatch.setenv("CHATTUNE_INFERENCE_DTYPE", "float32")
    ref = trained_workspace["model"]
    shown = parse_json(cli("models", "show", ref, "--json"))
    assert shown["kind"] == "lora"
    registered = load_model(shown["base_model_path"], shown["path"], device="cpu")
    tokenizer = load_tokenizer(shown["path"])

    # Refused before anything is read or written: exit 2, what and how, no partial folder left.
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine")
    refusals = {
        ("--format", "hf", "--quant", "q8_0", "--out", str(tmp_path / "a")): "--quant applies to --format gguf only",
        ("--format", "onnx", "--out", str(tmp_path / "b")): "--format 'onnx'",
        ("--format", "gguf", "--dtype", "f8", "--out", str(tmp_path / "c")): "--dtype 'f8'",
        ("--format", "hf", "--out", str(taken)): "exists and is not an empty folder",
    }
    for args, message in refusals.items():
        refused = cli("models", "export", ref, *args)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    unknown = cli("models", "export", "no-such-model:1", "--format", "hf", "--out", str(tmp_path / "d"))
    assert unknown.returncode == 2 and "no-such-model" in unknown.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"] and (taken / "keep.txt").read_text() == "mine"

    # hf: a standalone folder transformers loads without PEFT or the base; the same logits as base + adapter.
    hf = exact(
        ModelExportPublic,
        parse_json(cli("models", "export", ref, "--format", "hf", "--out", str(tmp_path / "hf"), "--json")),
    )
    assert hf["merged"] is True and hf["format"] == "hf" and hf["dtype"] == "f32"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {f["path"] for f in hf["files"]}
    assert not (tmp_path / "hf" / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    merged_tokenizer = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert merged_tokenizer.chat_template == tokenizer.chat_template
    for messages in PROMPTS:
        torch.testing.assert_close(_logits(merged, tokenizer, messages), _logits(registered, tokenizer, messages))
        assert _greedy(merged, tokenizer, messages) == _greedy(registered, tokenizer, messages)

    # gguf f32: transformers' GGUF loader gives back the registered model's logits; f16 and q8_0 are measured.
    agreement = {}
    for dtype, quant in (("f32", None), ("f16", None), ("f16", "q8_0")):
        out = tmp_path / f"gguf-{quant or dtype}"
        args = ("--format", "gguf", "--dtype", dtype, *(("--quant", quant) if quant else ()), "--out", str(out))
        doc = exact(ModelExportPublic, parse_json(cli("models", "export", ref, *args, "--json")))
        assert doc["architecture"] == "llama" and doc["template_family"] == "chatml"
        (gguf_file,) = [f["path"] for f in doc["files"] if f["path"].endswith(".gguf")]
        loaded = AutoModelForCausalLM.from_pretrained(out, gguf_file=gguf_file, dtype=torch.float32).eval()
        loaded_tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=gguf_file)
        assert loaded_tokenizer.chat_template == tokenizer.chat_template
        same = total = 0
        for messages in PROMPTS:
            want, got = _greedy(registered, tokenizer, messages), _greedy(loaded, tokenizer, messages)
            same, total = same + sum(a == b for a, b in zip(want, got, strict=False)), total + len(want)
            if dtype == "f32":
                torch.testing.assert_close(
                    _logits(loaded, tokenizer, messages), _logits(registered, tokenizer, messages)
                )
                assert got == want
        agreement[quant or dtype] = f"{same}/{total}"
        modelfile = (out / "Modelfile").read_text()
        assert modelfile.startswith(f"FROM ./{gguf_file}\n")
        assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in modelfile
        assert 'PARAMETER stop "<|im_end|>"' in modelfile
        # the tiny model's template (SmolLM2's) adds a system prompt of its own when none is given
        assert 'SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"' in modelfile
    sizes = {p.name: p.stat().st_size for p in tmp_path.glob("gguf-*/*.gguf")}
    print(f"greedy tokens agreeing with the registered model: {agreement}; GGUF bytes: {sizes}")
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".merged-*"))
