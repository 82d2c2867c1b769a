"""Structured output: OpenAI's ``response_format`` as a grammar the answer must follow, enforced token by token.

llguidance (the engine behind vLLM's and llama.cpp's structured output; a Rust library with no Python
dependencies, CPU only) compiles a JSON schema into a grammar and, at every decoding step, tells which tokens may come
next. chattune writes no grammar engine: it turns the request into llguidance's grammar (``grammar_for``), checks it
once against the model's tokenizer (``Constraints.check``), and gives each generated row its own matcher
(``Constraints.matcher``) whose mask the batch scheduler applies to the row's logits before it samples.

``json_object`` is any JSON object; ``json_schema`` is the given schema (with ``strict`` or without: the answer is held
to the schema either way, as vLLM does). JSON is generated compactly (no free whitespace between tokens), so a small
model cannot wander off into endless newlines.
"""

from __future__ import annotations

import threading
from typing import Any

from chattune.errors import UserError

# llguidance's JSON compiler options: compact separators, no free whitespace.
JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False}
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def grammar_for(kind: str, schema: dict[str, Any] | None) -> str:
    """The llguidance grammar for ``response_format``'s ``kind`` (``json_object`` or ``json_schema``).

    Raises:
        UserError: the schema is not a JSON object llguidance reads (param ``response_format.json_schema.schema``).
    """
    from llguidance import LLMatcher

    try:
        return str(LLMatcher.grammar_from_json_schema(schema or ANY_OBJECT, defaults=JSON_OPTIONS))  # type: ignore[arg-type]
    except Exception as exc:  # ValueError for what is not a JSON object; anything else is the schema's fault too
        raise UserError(f"response_format: the schema is not usable: {exc}", param=_param(kind)) from exc


def _param(kind: str) -> str:
    """The request field a grammar comes from: a forced tool call's grammar is built from the tools' schemas."""
    return {"json_schema": "response_format.json_schema.schema", "tool_choice": "tools"}.get(kind, "response_format")


class Constraints:
    """The grammar side of one loaded tokenizer: its llguidance tokenizer, built once on first use (about a second)."""

    def __init__(self, tokenizer: Any, eos: set[int], vocab_size: int) -> None:
        self._hf = tokenizer
        self._eos = sorted(eos)
        self.vocab_size = vocab_size
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def tokenizer(self) -> Any:
        """The model's tokenizer as llguidance reads it (cached; call it off the event loop the first time).

        Raises:
            UserError: the model's tokenizer is a slow (Python) one, which llguidance cannot read.
        """
        with self._lock:
            if self._tokenizer is None:
                import llguidance.hf

                try:
                    self._tokenizer = llguidance.hf.from_tokenizer(
                        self._hf, n_vocab=self.vocab_size, eos_token=self._eos
                    )
                except ValueError as exc:
                    raise UserError(
                        f"response_format needs a fast tokenizer; this model's is {type(self._hf).__name__}: {exc}",
                        param="response_format",
                    ) from exc
            return self._tokenizer

    def check(self, grammar: str, kind: str) -> None:
        """Refuse a grammar llguidance cannot use with this tokenizer (an unsupported schema keyword, say).

        Raises:
            UserError: naming the schema (param ``response_format.json_schema.schema``) and llguidance's reason.
        """
        from llguidance import LLMatcher

        tokenizer = self.tokenizer()
        try:
            error = LLMatcher.validate_grammar(grammar, tokenizer)
        except Exception as exc:  # llguidance reports grammar errors as text; a raise is one too
            error = f"{type(exc).__name__}: {exc}"
        if error:
            raise UserError(
                f"response_format: the schema cannot be enforced: {error}",
                remedy="Use the JSON Schema subset of OpenAI's structured outputs (types, properties, required, "
                "enum, items, anyOf, $ref/$defs).",
                param=_param(kind),
            )

    def matcher(self, grammar: str) -> Any:
        """A fresh matcher for one generated answer (each of a request's ``n`` choices has its own)."""
        from llguidance import LLMatcher

        return LLMatcher(self.tokenizer(), grammar, log_level=0)


class RowConstraint:
    """One row's grammar: masks the logits before sampling, then consumes the chosen token."""

    def __init__(self, matcher: Any, vocab_size: int) -> None:
        from llguidance.numpy import allocate_token_bitmask

        self.matcher = matcher
        self._bitmask = allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: Any) -> Any:
        """``logits`` (1, V) with every token the grammar forbids next at -inf (llguidance's own mask, on CPU)."""
        import torch
        from llguidance.numpy import apply_token_bitmask_inplace, fill_next_token_bitmask

        fill_next_token_bitmask(self.matcher, self._bitmask)
        masked = logits.detach().float().cpu().numpy().copy()
        apply_token_bitmask_inplace(masked, self._bitmask)
        return torch.from_numpy(masked).to(logits.device)

    def consume(self, token: int) -> None:
        """The token was chosen: advance the grammar (an end-of-sequence token ends it)."""
        self.matcher.consume_token(token)
