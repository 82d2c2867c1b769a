"""Token counts of conversations with a model's chat template, as preprocess will see them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chattune.templates import encode, supports_system_role, training_chat_template


def template_length(tokenizer: Any, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> int:
    """How many tokens ``messages`` are when rendered with the tokenizer's own chat template (as DPO renders a pair)."""
    rendered = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
    )
    return len(rendered["input_ids"])


@dataclass
class TokenCount:
    """The token count of one conversation, and how truncation at the limit would affect it."""

    tokens: int
    over_limit: bool
    loses_all_assistant_tokens: bool


class TokenCounter:
    """Encodes conversations exactly as the job's preprocess step does (same template, folding, truncation)."""

    def __init__(self, tokenizer: Any, max_seq_length: int):
        self.tokenizer = tokenizer
        self.template = training_chat_template(tokenizer)
        self.folds_system = not supports_system_role(tokenizer)
        self.max_seq_length = max_seq_length

    @classmethod
    def for_model(cls, model_path: str, max_seq_length: int | None) -> TokenCounter:
        """A counter for the model at ``model_path``, truncating at ``max_seq_length`` capped by the model's context."""
        from chattune.inference import context_length, load_tokenizer

        tokenizer = load_tokenizer(model_path)
        model_max = context_length(model_path, tokenizer)
        limit = min(max_seq_length, model_max) if max_seq_length and max_seq_length > 0 else model_max
        return cls(tokenizer, limit)

    def count(self, messages: list[dict[str, Any]]) -> TokenCount:
        """Count the tokens of one conversation as preprocess encodes it."""
        ids, mask = encode(self.tokenizer, messages, self.template, self.folds_system)
        return TokenCount(len(ids), len(ids) > self.max_seq_length, 1 not in mask[: self.max_seq_length])
