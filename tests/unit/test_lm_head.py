"""The compact LM head (only loss positions projected) gives TRL's fused head's loss, gradients and metrics."""

from __future__ import annotations

from typing import Any

import pytest
import torch


def _lora_model(seed: int = 0) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, param in peft.named_parameters():  # lora_B starts at zero: give it values so gradients flow everywhere
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return peft


def _batch() -> dict[str, torch.Tensor]:
    """Two padded chat-like rows: prompt (-100), an assistant span (labels), right padding (-100, mask 0)."""
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (2, 24))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 10:18] = ids[0, 10:18]
    labels[1, 6:12] = ids[1, 6:12]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _run(compact: bool, batch: dict[str, torch.Tensor], num_items: Any = None) -> tuple[Any, dict[str, torch.Tensor]]:
    from trl.trainer.utils import add_fused_lm_head

    from chattune.training.lm_head import compact_lm_head, unwrap_peft

    model = _lora_model()
    # What SFTTrainer does in __init__, then what chattune's finetune step adds on a device without Triton.
    add_fused_lm_head(unwrap_peft(model), outputs=("log_probs", "entropy", "is_top1"))
    if compact:
        assert compact_lm_head(unwrap_peft(model)) is True
    out = model(**batch, fused_lm_head=True, num_items_in_batch=num_items)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out, grads


@pytest.mark.parametrize("num_items", [None, 20])
def test_compact_head_matches_trls_fused_head(num_items: int | None) -> None:
    batch = _batch()
    full, full_grads = _run(False, batch, num_items)
    compact, compact_grads = _run(True, batch, num_items)
    torch.testing.assert_close(compact.loss, full.loss)
    assert compact.label_mask.tolist() == full.label_mask.tolist()
    torch.testing.assert_close(compact.log_probs, full.log_probs)
    torch.testing.assert_close(compact.entropy, full.entropy)
    assert compact.is_top1.sum() == full.is_top1.sum()
    assert set(compact_grads) == set(full_grads) and len(full_grads) > 0
    for name, grad in full_grads.items():
        torch.testing.assert_close(compact_grads[name], grad, msg=name)
        assert grad.abs().sum() > 0, name


def test_compact_head_projects_only_the_loss_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A spy on TRL's function (the real one still runs): it receives the 14 loss positions, not all 46."""
    from trl.kernels import ChunkedLogProbFunction

    rows: list[int] = []
    real = ChunkedLogProbFunction.apply

    def spy(hidden: torch.Tensor, *args: Any) -> Any:
        rows.append(hidden.shape[0])
        return real(hidden, *args)

    monkeypatch.setattr(ChunkedLogProbFunction, "apply", spy)
    batch = _batch()
    _run(True, batch)
    assert rows == [int((batch["labels"][:, 1:] != -100).sum())] == [14]
    rows.clear()
    _run(False, batch)
    assert rows == [2 * 23]  # TRL's own path on a CPU: every position of the shifted batch


def test_a_batch_without_loss_positions_is_a_zero_with_a_gradient() -> None:
    batch = _batch()
    batch["labels"][:] = -100
    out, grads = _run(True, batch)
    assert float(out.loss.detach()) == 0.0
    assert all(float(g.abs().sum()) == 0.0 for g in grads.values())


def test_models_that_scale_their_logits_keep_trls_head() -> None:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from chattune.training.lm_head import compact_lm_head

    config = Gemma2Config(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=30.0,
    )  # fmt: skip
    assert compact_lm_head(Gemma2ForCausalLM(config)) is False
