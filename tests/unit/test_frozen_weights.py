"""LoRA over frozen linear weights kept in bf16 computes under bf16 autocast exactly what it computes over fp32
weights that autocast converts at each call: the same loss, the same adapter gradients; the adapters stay fp32 and
trainable, the LM head and norms stay fp32, and fewer conversions run."""

from __future__ import annotations

from typing import Any

import torch

from chattune.training.frozen import linear_weights_to_bf16


def _model(bf16_frozen: bool) -> Any:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, tie_word_embeddings=True,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    if bf16_frozen:
        per_layer = 64 * 64 + 2 * 64 * 32 + 64 * 64 + 3 * 64 * 128  # q, k and v (2 KV heads), o, gate/up/down
        assert linear_weights_to_bf16(model) == 2 * per_layer  # not the LM head
    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    for name, param in peft.named_parameters():  # lora_B starts at zero: give it values so gradients flow everywhere
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return peft


def _loss_and_grads(model: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    torch.manual_seed(2)
    ids = torch.randint(3, 300, (2, 24))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
    copies = sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, copies


def test_bf16_frozen_weights_compute_the_same_loss_and_gradients_with_fewer_conversions() -> None:
    fp32 = _model(bf16_frozen=False)
    bf16 = _model(bf16_frozen=True)
    loss32, grads32, copies32 = _loss_and_grads(fp32)
    loss16, grads16, copies16 = _loss_and_grads(bf16)
    assert torch.equal(loss32, loss16)
    assert grads32.keys() == grads16.keys() and len(grads16) == 2 * 7 * 2  # A and B of 7 linears in 2 layers
    for name, grad in grads16.items():
        assert grad.dtype == torch.float32, name  # the adapters train in fp32
        torch.testing.assert_close(grad, grads32[name], rtol=0, atol=0, msg=name)
    assert copies16 < copies32  # the frozen weights are not converted at each call any more

    base = bf16.get_base_model()
    assert base.lm_head.weight.dtype == torch.float32 and base.model.embed_tokens.weight.dtype == torch.float32
    assert base.model.norm.weight.dtype == torch.float32
    assert base.model.layers[0].self_attn.q_proj.base_layer.weight.dtype == torch.bfloat16
