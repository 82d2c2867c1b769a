"""LoRA target modules: all linear layers by default, the catalog's list where it names one (Phi-3's fused layers)."""

from __future__ import annotations

from chattune.catalog import get_entry
from chattune.pipeline.config import OptimizationParams
from chattune.training.builders import lora_config


def test_phi3_catalog_targets_exist_in_the_phi3_architecture() -> None:
    from peft import get_peft_model
    from transformers import Phi3Config, Phi3ForCausalLM

    targets = get_entry("phi-3-mini-4k-instruct").tags["lora_target_modules"]
    config = Phi3Config(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        pad_token_id=0,
    )
    model = get_peft_model(Phi3ForCausalLM(config), lora_config(OptimizationParams(apply_lora=True), targets))
    adapted = {name.split(".")[-4] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted == set(targets)


def test_default_adapts_every_linear_layer_of_the_tiny_llama(tmp_path) -> None:
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from chattune.catalog.importer import build_random_model

    build_random_model(get_entry("tiny-test").source, tmp_path / "m")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path / "m"), lora_config(OptimizationParams()))
    adapted = {name.split(".")[-4] for name, _ in model.named_parameters() if "lora_A" in name}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
