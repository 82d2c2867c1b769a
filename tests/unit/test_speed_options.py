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
        bf16_ok=False,
        has_eval=False,
        padding_free=padding_free,
    )


def test_defaults_map_to_the_trainer(tmp_path: Path) -> None:
    args = _args(tmp_path)
    assert args.padding_free is False and args.max_length == 512
    assert args.train_sampling_strategy == "random"
    assert args.gradient_checkpointing is True
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
