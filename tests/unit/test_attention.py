"""Per-conversation attention over a padding-free batch: each conversation as if it were alone, same gradients as
transformers' block-diagonal SDPA mask, and transformers' own path for everything that is not a packed row."""

from __future__ import annotations

from typing import Any

import pytest
import torch

LENGTHS = [9, 1, 14, 5]


def _model(implementation: str = "sdpa", family: str = "llama") -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    small = {"vocab_size": 300, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    small |= {"num_attention_heads": 4, "num_key_value_heads": 2, "attn_implementation": implementation}
    if family == "llama":
        return LlamaForCausalLM(LlamaConfig(**small))
    return Phi3ForCausalLM(Phi3Config(pad_token_id=0, **small))


def _packed() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(3, 300, (1, sum(LENGTHS)))
    positions = torch.cat([torch.arange(n) for n in LENGTHS]).unsqueeze(0)
    return ids, positions


def test_boundaries_are_the_conversation_lengths() -> None:
    from chattune.training.attention import _boundaries

    _, positions = _packed()
    assert _boundaries(positions) == LENGTHS  # a 1-token conversation included
    assert _boundaries(torch.arange(7).unsqueeze(0)) is None  # one conversation: nothing to split
    assert _boundaries(positions.expand(2, -1)) is None  # several rows: transformers' path
    assert _boundaries(None) is None


@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_each_conversation_attends_only_to_itself(family: str) -> None:
    from chattune.training.attention import ATTENTION, use_per_conversation_attention

    model = _model(family=family).eval()
    ids, positions = _packed()
    assert use_per_conversation_attention(model) is True
    assert model.config._attn_implementation == ATTENTION
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
        alone = torch.cat([model(input_ids=part).logits for part in ids.split(LENGTHS, dim=1)], dim=1)
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_gradients_match_the_block_diagonal_mask() -> None:
    from chattune.training.attention import use_per_conversation_attention

    ids, positions = _packed()
    grads = []
    for switch in (False, True):
        model = _model().train()
        if switch:
            use_per_conversation_attention(model)
        out = model(input_ids=ids, position_ids=positions, labels=ids, use_cache=False)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (loss_mask, grads_mask), (loss_split, grads_split) = grads
    torch.testing.assert_close(loss_split, loss_mask)
    for name, grad in grads_mask.items():
        torch.testing.assert_close(grads_split[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_padded_batches_and_generation_take_transformers_path() -> None:
    from chattune.training.attention import use_per_conversation_attention

    reference = _model().eval()
    model = _model().eval()
    use_per_conversation_attention(model)
    torch.manual_seed(2)
    ids = torch.randint(3, 300, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, attention_mask=mask).logits, reference(input_ids=ids, attention_mask=mask).logits
        )
        generated = model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert torch.equal(generated, expected)


def test_other_kernels_are_left_alone() -> None:
    from chattune.training.attention import use_per_conversation_attention

    model = _model("eager")
    assert use_per_conversation_attention(model) is False
    assert model.config._attn_implementation == "eager"
