"""A user's model in the workspace catalog: what is derived per architecture (with its source), what is refused at
import and why, the re-import rule, the store table, and the workspace-aware lookup the jobs and compute check use.

Tiny random models of five architectures, built from transformers' config classes, each with a real tokenizer that
has a chat template (tests/tiny_models.py); nothing is downloaded.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chattune.catalog.derived import derive
from chattune.catalog.lookup import Catalog
from chattune.catalog.user_import import import_user_model, parse_source
from chattune.entities import UserModel
from chattune.errors import ConflictError, NotFoundError, UserError
from chattune.settings import Settings
from chattune.store import SqliteStore, open_store
from chattune.templates import SAMPLE_CONVERSATION, shipped_template
from tests.tiny_models import ARCHITECTURES, write_gguf, write_model

# The chat template each architecture is imported with: its tokenizer's own, except Mistral's GPT-2 vocabulary, which
# has none and gets the Mistral [INST] template chattune ships (`--chat-template mistral`).
CHOICE = {"mistral": "mistral"}
EXPECTED: dict[str, dict[str, Any]] = {
    "llama": {
        "architecture": "LlamaForCausalLM",
        "template_source": "chat_template.jinja",
        "training": "chattune's smollm2_training.jinja",
        "folded": False,
        "linear": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        "peft": ["q_proj", "v_proj"],
        "context": 2048,
    },
    "qwen2": {
        "architecture": "Qwen2ForCausalLM",
        "template_source": "chat_template.jinja",
        "training": "TRL's chat_templates/qwen2_5_training.jinja",
        "folded": False,
        "linear": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        "peft": ["q_proj", "v_proj"],
        "context": 2048,
    },
    "phi3": {
        "architecture": "Phi3ForCausalLM",
        "template_source": "tokenizer_config.json: chat_template",
        "training": "TRL's chat_templates/phi3_training.jinja",
        "folded": False,
        # Phi-3's fused projections: what the built-in phi-3-mini-4k-instruct entry writes by hand.
        "linear": ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"],
        "peft": None,
        "context": 4096,
    },
    "mistral": {
        "architecture": "MistralForCausalLM",
        "template_source": "--chat-template mistral (chattune's mistral.jinja)",
        "training": "chattune's mistral_training.jinja",
        "folded": True,
        "linear": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        "peft": ["q_proj", "v_proj"],
        "context": 2048,
    },
    "gemma": {
        "architecture": "GemmaForCausalLM",
        "template_source": "chat_template.jinja",
        "training": "TRL's chat_templates/gemma_training.jinja",
        "folded": True,
        "linear": ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        "peft": ["q_proj", "v_proj"],
        "context": 2048,
    },
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, shared: Callable[..., Path]) -> dict[str, Path]:
    """One tiny model folder per architecture, written once for the module."""
    shared("phi3_mini_tokenizer")
    shared("gpt2_tokenizer")
    root = tmp_path_factory.mktemp("archs")
    return {arch: write_model(arch, root / arch) for arch in ARCHITECTURES}


def _copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def _choice(arch: str) -> tuple[str, str] | None:
    if arch not in CHOICE:
        return None
    template, where = shipped_template(CHOICE[arch])
    return template, f"--chat-template {CHOICE[arch]} ({where})"


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_derived_values_and_their_sources(arch: str, folders: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    expected = EXPECTED[arch]
    folder = _copy(folders[arch], tmp_path)
    derived = derive(folder, chat_template=_choice(arch))

    assert derived.architecture.value == expected["architecture"]
    assert derived.architecture.source == "config.json: architectures"
    assert derived.model_type.value == arch
    assert derived.chat_template.source == expected["template_source"]
    assert derived.training_chat_template.value == expected["training"]
    # The loss mask, decoded: one run per assistant reply, holding it, and the end of the turn.
    mask = derived.assistant_mask.value
    replies = [m["content"] for m in SAMPLE_CONVERSATION if m["role"] == "assistant"]
    assert len(mask.trained_spans) == len(replies)
    assert all(reply in span for reply, span in zip(replies, mask.trained_spans, strict=True))
    assert not any("capital of France?" in span for span in mask.trained_spans)
    assert mask.end_of_turn_trained and 0 < mask.trained_tokens < mask.total_tokens
    assert mask.system_folded is expected["folded"]
    # LoRA: every linear layer but the LM head (as the built-in entries), PEFT's own default shown beside it.
    assert derived.lora_target_modules.value == expected["linear"]
    assert derived.lora_target_modules.source.startswith("default: every linear layer")
    assert derived.peft_lora_target_modules.value == expected["peft"]
    assert "TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING" in derived.peft_lora_target_modules.source
    assert derived.context_length.value == expected["context"]
    assert derived.context_length.source == "config.json: max_position_embeddings"
    # The parameter count from the safetensors headers is the loaded model's.
    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert derived.parameters.value == loaded.num_parameters()
    assert derived.parameters.source.startswith("safetensors headers (model.safetensors")
    assert derived.hidden_size.value == 64 and derived.num_hidden_layers.value == 2
    assert derived.vocab_size.value == loaded.config.vocab_size
    assert derived.finetune_compute_allow_list.value is None and derived.inference_compute_allow_list.value is None
    if arch in CHOICE:  # the chosen template is written beside the tokenizer, so training and serving use it
        assert (folder / "chat_template.jinja").read_text(encoding="utf-8") == derived.chat_template.value


def test_lora_targets_from_peft_mapping_or_named(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders["qwen2"], tmp_path)
    peft = derive(folder, lora_target_modules="peft").lora_target_modules
    assert peft.value == ["q_proj", "v_proj"]
    assert peft.source == (
        "--lora-target-modules peft: peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING['qwen2']"
    )
    named = derive(folder, lora_target_modules="q_proj, o_proj").lora_target_modules
    assert (named.value, named.source) == (["q_proj", "o_proj"], "--lora-target-modules")
    with pytest.raises(UserError) as exc:
        derive(folder, lora_target_modules="q_proj,qkv_proj")
    assert "qkv_proj is not a linear layer of Qwen2ForCausalLM" in exc.value.message
    phi3 = _copy(folders["phi3"], tmp_path)
    with pytest.raises(UserError, match="PEFT's table has no default for 'phi3'") as exc:
        derive(phi3, lora_target_modules="peft")
    assert "qkv_proj" in (exc.value.remedy or "")


def test_context_length_is_the_smaller_of_config_and_tokenizer(tmp_path: Path, shared: Callable[..., Path]) -> None:
    folder = write_model("qwen2", tmp_path / "long", max_position_embeddings=32768)
    context = derive(folder).context_length
    assert context.value == 2048  # the tiny tokenizer's model_max_length
    assert context.source == "tokenizer_config.json: model_max_length (config.json's max_position_embeddings is 32768)"


def test_a_tokenizer_without_a_chat_template_is_refused_with_the_option_to_name_one(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders["mistral"], tmp_path)
    with pytest.raises(UserError) as exc:
        derive(folder)
    assert "has no chat template" in exc.value.message
    assert "--chat-template NAME" in (exc.value.remedy or "") and "mistral" in (exc.value.remedy or "")
    assert not (folder / "chat_template.jinja").exists()


def test_a_template_whose_assistant_turns_cannot_be_located_is_refused(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders["mistral"], tmp_path)
    # Mistral's [INST] format written another way: no {% generation %} markers, and no known training variant.
    unmarked = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
        "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
    )
    with pytest.raises(UserError) as exc:
        derive(folder, chat_template=(unmarked, "--chat-template inst.jinja"))
    assert "does not mark assistant turns" in exc.value.message and "{% generation %}" in exc.value.message
    # Markers around the whole conversation: the mask would train on the user's words too.
    everything = (
        "{% generation %}{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% endgeneration %}"
    )
    with pytest.raises(UserError) as exc:
        derive(folder, chat_template=(everything, "--chat-template all.jinja"))
    assert exc.value.message.startswith("the chat template's assistant turns cannot be located: 2 assistant replies")
    # Markers around the user turns only.
    users = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
        "{% else %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endif %}{% endfor %}"
    )
    with pytest.raises(UserError, match=r"do not hold the assistant reply 'The capital of France is Paris\.'"):
        derive(folder, chat_template=(users, "--chat-template users.jinja"))


def test_a_tokenizer_larger_than_the_embedding_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    from tests.tiny_models import tokenizer_for

    folder = write_model("llama", tmp_path / "small", tokenizer=tokenizer_for("qwen2"), vocab_size=256)
    with pytest.raises(UserError, match="the tokenizer has 512 tokens but the model's embedding has 256 rows"):
        derive(folder)


def test_sources_are_a_folder_a_gguf_file_or_a_hub_id(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    assert parse_source(str(folder)).model_dump(exclude_defaults=True) == {"kind": "folder", "path": str(folder)}
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert parse_source(str(gguf)).kind == "gguf_file"
    hub = parse_source("Qwen/Qwen2.5-0.5B-Instruct@v1.0")
    assert (hub.kind, hub.repo_id, hub.revision) == ("hub", "Qwen/Qwen2.5-0.5B-Instruct", "v1.0")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match=r"not a \.gguf file"):
        parse_source(str(tmp_path / "notes.txt"))
    with pytest.raises(UserError, match="not a hub id"):
        parse_source("./no/such/folder/here")


def _settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", credentials_path=None)


def test_import_stores_by_content_hash_and_the_reimport_rule(folders: dict[str, Path], tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    store = open_store(settings)
    first = import_user_model(settings, store, "my-qwen", str(folders["qwen2"]))
    entry = first.entry
    assert (first.reused, first.replaced, entry.version, entry.origin) == (False, None, "1", "user")
    assert entry.path == str(settings.models_dir / str(entry.content_hash))
    assert (Path(entry.path) / "model.safetensors").is_file()
    assert entry.id == "azureml:my-qwen:1" and entry.family == "qwen2"
    assert entry.lora_target_modules == EXPECTED["qwen2"]["linear"]
    # The same content again: nothing changes.
    again = import_user_model(settings, store, "MY-QWEN", str(folders["qwen2"]))
    assert again.reused and again.entry.name == "my-qwen" and again.entry.content_hash == entry.content_hash
    # Other weights under the same name: refused, as a registry refuses to overwrite a version.
    other = write_model("qwen2", tmp_path / "other", seed=1)
    with pytest.raises(ConflictError) as exc:
        import_user_model(settings, store, "my-qwen", str(other))
    assert "model 'my-qwen' exists (version 1" in exc.value.message and "--force" in (exc.value.remedy or "")
    # Same weights, other derived values (LoRA targets): also a change.
    with pytest.raises(ConflictError, match="same weights, other derived values"):
        import_user_model(settings, store, "my-qwen", str(folders["qwen2"]), lora_target_modules="peft")
    forced = import_user_model(settings, store, "my-qwen", str(other), force=True)
    assert forced.replaced == entry.content_hash and forced.entry.version == "2"
    assert Path(entry.path).is_dir()  # the old weights stay for the jobs and versions made from them
    assert [m.version for m in store.list_user_models()] == ["2"]
    # Names: never a built-in entry's, never something that reads as a path or a NAME:VERSION reference.
    with pytest.raises(ConflictError, match="built-in catalog model 'tiny-test'"):
        import_user_model(settings, store, "tiny-test", str(other))
    with pytest.raises(UserError, match="model name 'a:1'"):
        import_user_model(settings, store, "a:1", str(other))


def test_a_gguf_file_is_converted_once_to_safetensors(folders: dict[str, Path], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    gguf = write_gguf(folders["llama"], tmp_path / "tiny-llama.F32.gguf")
    settings = _settings(tmp_path)
    imported = import_user_model(settings, open_store(settings), "tiny-gguf", str(gguf)).entry
    assert imported.source.kind == "gguf_file" and imported.derived is not None
    assert imported.derived.chat_template.source == "GGUF metadata of tiny-llama.F32.gguf: tokenizer.chat_template"
    assert imported.derived.training_chat_template.value == "chattune's smollm2_training.jinja"
    stored = Path(str(imported.path))
    assert (stored / "model.safetensors").is_file() and not list(stored.glob("*.gguf"))
    ids = torch.tensor([[5, 17, 42, 99]])
    original = AutoModelForCausalLM.from_pretrained(folders["llama"])(ids).logits
    converted = AutoModelForCausalLM.from_pretrained(stored)(ids).logits
    assert torch.allclose(original, converted, atol=1e-5)
    (tmp_path / "broken.gguf").write_bytes(b"GGUF not really")
    with pytest.raises(UserError, match="transformers cannot load this GGUF file"):
        import_user_model(settings, open_store(settings), "broken", str(tmp_path / "broken.gguf"))


def test_user_models_table_round_trip(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    model = UserModel("Mine", "1", "ab" * 32, "/m", {"kind": "folder", "path": "/x"}, {"k": {"value": 1}}, 1.0)
    store.save_user_model(model)
    assert store.find_user_model("Mine") == model
    assert store.find_user_model("mine") == model  # names match case-insensitively
    assert store.find_user_model("other") is None
    store.save_user_model(UserModel("Mine", "2", "cd" * 32, "/n", model.source, {}, 2.0))
    assert [(m.name, m.version) for m in SqliteStore(tmp_path / "db.sqlite").list_user_models()] == [("Mine", "2")]


def test_the_catalog_sees_built_in_and_workspace_entries(folders: dict[str, Path], tmp_path: Path) -> None:
    def no_store() -> Any:
        raise AssertionError("a built-in name needs no database")

    assert Catalog(no_store).get("tiny-test").origin == "builtin"
    assert Catalog(no_store).find("Phi-3-mini-4k-instruct") is not None
    settings = _settings(tmp_path)
    store = open_store(settings)
    catalog = Catalog(lambda: store)
    with pytest.raises(NotFoundError) as exc:
        catalog.get("my-phi")
    assert "models import NAME --from" in (exc.value.remedy or "")
    import_user_model(settings, store, "my-phi", str(folders["phi3"]))
    entry = catalog.get("my-phi")
    assert entry.origin == "user" and entry.lora_target_modules == EXPECTED["phi3"]["linear"]
    assert entry.lora_targets_source.startswith("catalog (my-phi, derived at import): default: every linear layer")
    assert [e.name for e in catalog.list()][-1] == "my-phi"
    assert catalog.names()[-1] == "my-phi"
    with pytest.raises(NotFoundError, match="Did you mean 'my-phi'"):
        catalog.get("my-ph")


def test_a_job_on_a_user_model_resolves_through_the_workspace_catalog(folders: dict[str, Path], tmp_path: Path) -> None:
    from chattune.data.demo import write
    from chattune.workspace import Workspace

    ws = Workspace.open(_settings(tmp_path))
    ws.catalog.import_from("my-gemma", str(folders["gemma"]))
    data = write(tmp_path / "data", rows=12)
    job, _ = ws.jobs.create({"model": "my-gemma", "data": {"train": str(data["train_sft"])}}, start=False)
    assert job.model == "my-gemma" and job.display_name.startswith("my-gemma-ultrachat-")
    assert job.resolved_config["lora_target_modules"]["value"] == EXPECTED["gemma"]["linear"]
    assert job.resolved_config["lora_target_modules"]["source"].startswith("catalog (my-gemma, derived at import)")
    check = ws.compute.check("my-gemma")
    assert check.ok and check.model == "my-gemma" and check.allow_list is None
    assert ws.compute.estimate(ws.catalog.get("my-gemma")).total_gb > 0
    with pytest.raises(NotFoundError, match="my-gemma"):
        ws.jobs.create({"model": "my-gema", "data": {"train": str(data["train_sft"])}}, start=False)
