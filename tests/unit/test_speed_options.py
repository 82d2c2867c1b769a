"""The finetune step's speed settings reach the trainer as configured, and selective checkpointing takes effect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from chattune.pipeline.config import OptimizationParams, TrainingParams


def _args(tmp_path: Path, padding_free: bool = False, **training: Any) -> Any:
    from chattune.training.builders import sft_config

    return sft_config(
        TrainingParams(**training),
        OptimizationParams(),
        output_dir=tmp_path,
        max_length=512,
        has_cuda=False,
        has_eval=False,
        padding_free=padding_free,
    )


def test_defaults_map_to_the_trainer(tmp_path: Path) -> None:
    args = _args(tmp_path)
    assert args.padding_free is False and args.max_length == 512
    assert args.train_sampling_strategy == "random"
    assert args.gradient_checkpointing is True
    assert args.gradient_checkpointing_kwargs == {"every_n_layers": 2}  # chattune's default: every other layer
    assert args.torch_compile is False


def test_switches_map_to_the_trainer(tmp_path: Path) -> None:
    args = _args(tmp_path, padding_free=True, group_by_length=True, gradient_checkpointing=False, torch_compile=True)
    # Padding-free: preprocess already truncated each conversation, so the flattened batch is not cut again.
    assert args.padding_free is True and args.max_length is None
    assert args.train_sampling_strategy == "group_by_length"
    assert args.gradient_checkpointing is False
    assert args.torch_compile is True


def test_checkpointing_every_n_layers_is_validated() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="gradient_checkpointing_every_n_layers"):
        TrainingParams(gradient_checkpointing_every_n_layers=0)


@pytest.mark.parametrize(
    ("every_n", "checkpointed"), [(1, [True] * 6), (2, [True, False] * 3), (3, [True, False, False] * 2)]
)
def test_the_trainer_checkpoints_every_nth_layer(tmp_path: Path, every_n: int, checkpointed: list[bool]) -> None:
    """The job's setting reaches transformers' every_n_layers through TRL's config: a real (one-step) training run."""
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=6, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    args = _args(tmp_path, gradient_checkpointing_every_n_layers=every_n, max_steps=1, save_strategy="no")
    ids = torch.randint(0, 128, (16,)).tolist()
    trainer = Trainer(model=model, args=args, train_dataset=[{"input_ids": ids, "labels": ids}] * 2)
    trainer.train()
    assert [layer.gradient_checkpointing for layer in model.model.layers] == checkpointed


def test_training_hyperparameters_reach_the_trainer(tmp_path: Path) -> None:
    args = _args(
        tmp_path,
        optim="adafactor",
        lr_scheduler_type="cosine",
        warmup_steps=7,
        weight_decay=0.01,
        gradient_accumulation_steps=3,
        max_grad_norm=0.5,
        learning_rate=3e-4,
        seed=11,
    )
    assert args.optim == "adafactor" and args.lr_scheduler_type == "cosine"
    assert (args.warmup_steps, args.weight_decay, args.gradient_accumulation_steps) == (7, 0.01, 3)
    assert (args.max_grad_norm, args.learning_rate, args.seed, args.data_seed) == (0.5, 3e-4, 11, 11)


def test_lora_settings_reach_peft() -> None:
    from chattune.training.builders import lora_config

    config = lora_config(OptimizationParams(apply_lora=True, lora_r=4, lora_alpha=32, lora_dropout=0.1), ["qkv_proj"])
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 32, 0.1)
    assert config.target_modules == {"qkv_proj"}


@pytest.mark.parametrize("stage", [2, 3])
def test_generated_deepspeed_config_is_azures(stage: int) -> None:
    """Azure's stage-2 config offloads the optimizer to CPU; stage 3 shards weights too and keeps the optimizer on
    the device. Batch sizes, accumulation and clipping are left to the trainer ("auto")."""
    from chattune.training.builders import deepspeed_config

    config = deepspeed_config(OptimizationParams(apply_deepspeed=True, deepspeed_stage=stage))
    zero = config["zero_optimization"]
    assert zero["stage"] == stage
    assert ("offload_optimizer" in zero) is (stage == 2)
    assert config["train_micro_batch_size_per_gpu"] == config["gradient_accumulation_steps"] == "auto"
