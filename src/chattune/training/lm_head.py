"""The LM head scored only where the loss is: assistant positions, not the prompt or the padding.

TRL's SFTTrainer already replaces the model's LM head by its chunked log-probability function
(``trl.kernels.ChunkedLogProbFunction``: vocabulary tiles with an online log-sum-exp, no ``[tokens, vocab]``
logits in memory). On devices with Triton it projects only the positions whose label is not -100; elsewhere (a
CPU) it projects every position, prompt and padding included, and then zeroes them. With assistant-only loss on
chat data most positions are prompt: in the benchmark's dialogs only a third of the tokens carry a loss, and the
head (576 x 49,152 for SmolLM2, a fifth of the model's FLOPs per token) dominated the step.

``compact_lm_head(model)`` wraps TRL's fused forward so that, on devices without Triton, the same library function
gets only the loss positions. The loss, its gradient and the logged metrics (entropy, mean token accuracy) are the
same numbers; the work is proportional to the trained tokens. Models with logit scaling or soft-capping keep TRL's
own path.
"""

from __future__ import annotations

import functools
import types
from typing import Any

# TRL's vocabulary tile width for the fused head (trl.trainer.utils._CHUNKED_LOGPROB_CHUNK_SIZE).
VOCAB_CHUNK = 32768
OUTPUTS = ("log_probs", "entropy", "is_top1")
# Config fields by which some models scale or cap their logits (TRL's fused head reads them; this one does not).
LOGIT_SCALING = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling")


def _plain_head(model: Any) -> bool:
    config = model.config.get_text_config()
    return all(getattr(config, name, None) is None for name in LOGIT_SCALING)


def compact_lm_head(model: Any) -> bool:
    """Wrap ``model``'s forward (the base model, after SFTTrainer added its fused head). True when applied."""
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput

    if not _plain_head(model):
        return False
    fused_forward = model.forward

    @functools.wraps(type(model).forward)
    def forward(
        self: Any,
        *args: Any,
        fused_lm_head: bool = False,
        labels: Any = None,
        shift_labels: Any = None,
        num_items_in_batch: Any = None,
        **kwargs: Any,
    ) -> Any:
        if not fused_lm_head or shift_labels is not None:
            return fused_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        # The backbone and the head are looked up on each call: PEFT and DDP wrap them after this is installed.
        hidden = getattr(self, self.base_model_prefix)(*args, **kwargs).last_hidden_state[:, :-1]
        head = self.get_output_embeddings()
        targets = labels[:, 1:].to(head.weight.device)
        mask = targets != -100
        per_token = ChunkedLogProbFunction.apply(
            hidden.to(head.weight.device)[mask],
            head.weight,
            head.bias,
            targets[mask],
            1.0,
            VOCAB_CHUNK,
            None,
            1.0,
            OUTPUTS,
        )
        # Scattered back to [batch, length - 1]: zero where there is no loss, as TRL's output has it. masked_scatter
        # keeps a batch without a single loss position connected to the graph (a zero gradient, not an error).
        log_probs, entropy, is_top1 = (
            per_token[i].new_zeros(mask.shape).masked_scatter(mask, per_token[i]) for i in (0, 1, 4)
        )
        count = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(
            loss=-log_probs.sum() / count,
            log_probs=log_probs,
            entropy=entropy,
            is_top1=is_top1,
            label_mask=mask,
        )

    model.forward = types.MethodType(forward, model)
    return True


def unwrap_peft(model: Any) -> Any:
    """The transformers model under a PEFT wrapper (where TRL installs its fused head), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def needs_compact_head(device_type: str) -> bool:
    """TRL scores only the loss positions itself where it runs its Triton kernel (CUDA, XPU)."""
    from transformers.utils import is_triton_available

    return not (is_triton_available() and device_type in ("cuda", "xpu"))
