"""Load a base model (plus an optional LoRA adapter) and generate chat answers, for evaluation and serving alike.

Evaluation and the serving engine share this code, so the numbers a job reports are produced the way the
endpoint answers (greedy decoding gives the same text in both).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chattune.errors import UserError


@dataclass
class GenerationParams:
    """How to generate: token budget, sampling settings, stop strings and seed.

    For the serving engine also OpenAI's penalties, logit bias, log-probabilities and a grammar the answer must follow.
    """

    max_new_tokens: int = 200
    temperature: float = 1.0
    top_p: float = 1.0
    do_sample: bool = False
    stop: list[str] | None = None
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    logprobs: int | None = None  # None: none; N: the chosen token's and the N most likely ones' log-probabilities
    grammar: str | None = None  # an llguidance grammar (chattune.serving.structured) every answer must match
    # Which request field set the budget, for the error when it does not fit ("max_tokens", "max_new_tokens", ...);
    # None: the request set none, and the default budget shrinks to what the context leaves (as vLLM's does).
    budget_param: str | None = "max_new_tokens"

    def torch_seed(self) -> int | None:
        """The seed as a torch generator takes it.

        Any integer a client sends, reduced to 64 bits (a larger one made ``manual_seed`` raise).
        """
        return None if self.seed is None else self.seed % 2**64


@dataclass
class Generation:
    """One generated answer: its text, why it ended (``stop`` or ``length``) and the token counts."""

    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int
    # With GenerationParams.logprobs: per generated token (id, log-probability, [(id, log-probability)] most likely).
    token_logprobs: list[TokenLogprob] | None = None


# A generated token's log-probability: (token id, log-probability, the most likely tokens' (id, log-probability)).
TokenLogprob = tuple[int, float, list[tuple[int, float]]]


def checked_new_tokens(
    prompt_tokens: int, max_new_tokens: int, *, cap: int, context: int, param: str = "max_new_tokens"
) -> int:
    """Check a generation request against the server's cap and the model's context; return the tokens to generate.

    The request check shared by the serving engine and the evaluation generator. A budget is never cut silently:
    over the server-side ``cap``, or with the prompt beyond the model's ``context``, it is an error (OpenAI answers a
    budget the context cannot hold with a 400 too).

    Args:
        prompt_tokens: The prompt's length.
        max_new_tokens: The tokens the request asks for at most.
        cap: The server-side cap on tokens per answer.
        context: The model's context length.
        param: The request field that set ``max_new_tokens``, named in the error.

    Raises:
        UserError: over the cap, or the prompt plus the tokens to generate exceed the context (a 400 from a server).
    """
    if max_new_tokens > cap:
        raise UserError(
            f"{param}={max_new_tokens} is more than this server generates per answer (max_new_tokens_cap={cap})",
            remedy=f"Ask for at most {cap} tokens, or deploy with a higher --max-new-tokens-cap.",
            param=param,
        )
    if prompt_tokens + max_new_tokens > context:
        raise UserError(
            f"prompt ({prompt_tokens} tokens) plus {param} ({max_new_tokens}) exceeds the model's context "
            f"({context} tokens)",
            remedy=f"Shorten the conversation or lower {param} to at most {max(context - prompt_tokens, 0)}.",
            param=param,
        )
    return max_new_tokens


def pick_device() -> str:
    """``cuda`` when a CUDA GPU is available, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer; one without a pad token pads with its end-of-sequence token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def inference_dtype(device: str) -> Any:
    """The dtype to load a model in for inference.

    bf16 wherever the hardware computes it natively (CUDA GPUs with bf16; CPUs with AVX512-BF16 or AMX, where oneDNN's
    bf16 matmuls run about twice as fast as fp32: docs/benchmarks.md), else fp32. Training precision is separate.
    Evaluation, the MLflow pyfunc and the serving engine all load through here, so they answer alike.
    ``CHATTUNE_INFERENCE_DTYPE`` (auto, float32, bfloat16) overrides it.
    """
    import torch

    from chattune.settings import Settings

    wanted = Settings().inference_dtype
    if wanted != "auto":
        return getattr(torch, wanted)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else torch.float32


def use_sdpa_variant(model: Any, name: str, attention: Any) -> bool:
    """Switch a model on the SDPA path to ``attention``, an SDPA-based function with transformers' signature.

    It is registered with transformers' ``AttentionInterface`` under ``name``, with transformers' own ``sdpa_mask`` as
    its mask function (so masks are built as for SDPA). False, and the model unchanged, where it runs another kernel.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if getattr(model.config, "_attn_implementation", None) not in ("sdpa", name):
        return False
    AttentionInterface.register(name, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(name, sdpa_mask)
    model.set_attn_implementation(name)
    return True


def load_model(base_path: str | Path, adapter_path: str | Path | None = None, *, device: str | None = None) -> Any:
    """Load a model for inference, with its LoRA adapter if given, on ``device`` (default: the GPU if there is one)."""
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    dtype = inference_dtype(device)
    model: Any = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype)
    if adapter_path is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_path))
    model.to(device)
    model.eval()
    return model


def load_merged(base_path: str | Path, adapter_path: str | Path) -> Any:
    """A LoRA adapter folded into its base (PEFT's merge_and_unload, done in fp32): a plain transformers model."""
    import warnings

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # runs inside `models register` and `models export`: they report the step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5's renames, met inside PEFT
        model: Any = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.float32)
        return PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()


def saved_dtype(model_path: str | Path) -> str:
    """The dtype a checkpoint's weights are saved in (its config's ``dtype``), ``float32`` when it names none."""
    import json

    config = json.loads((Path(model_path) / "config.json").read_text())
    return str(config.get("dtype") or config.get("torch_dtype") or "float32")


def save_merged(base_path: str | Path, adapter_path: str | Path, out: Path, dtype: str | None = None) -> None:
    """Merge a LoRA adapter into its base and save the result as a standalone model (``merge_lora_weights``).

    The adapter is folded into the base's weights in fp32 and saved in ``dtype`` (a torch dtype name; default: the
    base checkpoint's), with the adapter's tokenizer and chat template beside it. Loading it needs neither PEFT nor
    the base model.
    """
    import torch

    merged = load_merged(base_path, adapter_path)
    merged.to(getattr(torch, dtype or saved_dtype(base_path))).save_pretrained(str(out))
    load_tokenizer(adapter_path).save_pretrained(str(out))


def context_length(model_path: str | Path, tokenizer: Any) -> int:
    """The longest sequence the model takes: min(config max_position_embeddings, tokenizer model_max_length)."""
    import json

    config = json.loads((Path(model_path) / "config.json").read_text())
    limits = [config.get("max_position_embeddings"), getattr(tokenizer, "model_max_length", None)]
    return min(int(x) for x in limits if isinstance(x, (int, float)) and x > 0)


def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest sequence the model takes: the smaller of the config's and the tokenizer's limits (2048 without)."""
    limits = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return int(min(x for x in limits if isinstance(x, int) and x > 0) if any(limits) else 2048)


class ChatGenerator:
    """Batched chat generation over one loaded model. Thread-safe: one generate call at a time."""

    def __init__(self, model: Any, tokenizer: Any, *, chat_template: str | None = None, max_new_tokens_cap: int = 2048):
        self.model = model
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.max_new_tokens_cap = max_new_tokens_cap
        self.max_length = model_max_length(model, tokenizer)
        self._lock = threading.Lock()

    def generate(self, conversations: list[list[dict[str, Any]]], params: GenerationParams) -> list[Generation]:
        """Generate one answer per conversation in one batch (left padded)."""
        import torch

        if not conversations:
            return []
        tok = self.tokenizer
        tok.padding_side = "left"  # decoder-only generation continues from the right edge
        batch = tok.apply_chat_template(
            conversations,
            chat_template=self.chat_template,
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
            padding=True,
        )
        prompt_len = batch["input_ids"].shape[1]
        max_new = checked_new_tokens(
            prompt_len, params.max_new_tokens, cap=self.max_new_tokens_cap, context=self.max_length
        )
        batch = {k: v.to(self.model.device) for k, v in batch.items()}
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id,
        }
        if params.do_sample and params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=tok)
        with self._lock, torch.inference_mode():
            seed = params.torch_seed()
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(**batch, **kwargs)
        results = []
        for i, row in enumerate(out):
            new = row[prompt_len:].tolist()
            prompt_tokens = int(batch["attention_mask"][i].sum())
            ended = tok.eos_token_id in new
            if ended:
                new = new[: new.index(tok.eos_token_id)]
            new = [t for t in new if t != tok.pad_token_id]
            text = tok.decode(new, skip_special_tokens=True)
            finish = "stop" if ended else "length"
            if params.stop:
                for s in params.stop:
                    if s in text:
                        text, finish = text[: text.index(s)], "stop"
            results.append(Generation(text.strip(), finish, prompt_tokens, len(new)))
        return results
