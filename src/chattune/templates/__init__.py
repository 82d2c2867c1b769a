"""Chat templates: which one trains (assistant-only loss needs {% generation %} markers) and system-role support."""

from __future__ import annotations

import hashlib
from functools import cache
from importlib import resources
from typing import Any, cast

from chattune.errors import UserError


def template_hash(template: str) -> str:
    """The SHA-256 hex digest of a chat template."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def training_chat_template(tokenizer: Any) -> str:
    """The chat template to tokenize training data with.

    The model's own when it marks assistant output already, else a training variant that renders identically (chattune's
    own for ChatML/SmolLM2, TRL's for the families it knows).
    """
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = tokenizer.chat_template
    if not template:
        raise UserError(
            "the model's tokenizer has no chat template",
            remedy="Use a chat (instruct) model, or add a chat_template to its tokenizer_config.json.",
        )
    if has_generation_markers(template):
        return str(template)
    ours = known_training_template(template)
    if ours is not None:
        return ours
    try:
        patched = get_training_chat_template(tokenizer)
    except ValueError as exc:
        raise UserError(
            "the model's chat template does not mark assistant turns, so loss cannot be restricted to them",
            remedy="Add {% generation %}...{% endgeneration %} around assistant content in the template "
            "(see TRL's *_training.jinja templates).",
        ) from exc
    return str(patched or template)


def supports_system_role(tokenizer: Any, template: str | None = None) -> bool:
    """True when a system message is rendered (not refused and not silently dropped) by the template."""
    probe = "chattune-system-probe-7f3a"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "system", "content": probe}, {"role": "user", "content": "hi"}],
            chat_template=template,
            tokenize=False,
        )
    except Exception:  # templates refuse unsupported roles with raise_exception()
        return False
    return probe in text


def encode(tokenizer: Any, messages: list[dict[str, Any]], template: str, fold: bool) -> tuple[list[int], list[int]]:
    """Token ids and the assistant mask (1 = trained) of one conversation, via the template's generation markers.

    An assistant message with ``weight: 0`` (OpenAI's per-message weight) is context: rendered, not trained. Its
    tokens are found from the character spans of the template's generation blocks (transformers' renderer), and
    zeroed in the mask transformers computed.
    """
    if fold:
        messages = fold_system(messages)
    plain = [{"role": m["role"], "content": m["content"]} for m in messages]
    untrained = {i for i, m in enumerate(messages) if m["role"] == "assistant" and m.get("weight") == 0}
    enc = tokenizer.apply_chat_template(
        plain,
        chat_template=template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=True,
        tokenizer_kwargs={"return_offsets_mapping": True} if untrained else None,
    )
    ids, mask = list(enc["input_ids"]), list(enc["assistant_masks"])
    if untrained:
        spans = turn_spans(tokenizer, plain, template)
        off = [span for span, owner in spans if owner in untrained]
        on = [span for span, owner in spans if owner not in untrained]
        for k, (start, end) in enumerate(enc["offset_mapping"]):
            if mask[k] and _overlaps(start, end, off) and not _overlaps(start, end, on):
                mask[k] = 0
    return ids, mask


def _overlaps(start: int, end: int, spans: list[tuple[int, int]]) -> bool:
    """Whether the characters [start, end) touch a span (transformers' rule for a token in a generation block)."""
    return any(start < e and end > s for s, e in spans)


def turn_spans(tokenizer: Any, messages: list[dict[str, Any]], template: str) -> list[tuple[tuple[int, int], int]]:
    """The template's generation blocks as ``((start, end), message index)``: which assistant turn each one trains.

    Blocks come in the order of the turns. A block that holds a turn's content belongs to that turn; one that holds
    none (Phi-3's training template trains the final eos in a block of its own) belongs to the turn before it.

    Raises:
        UserError: An assistant turn's content is in no block, so its tokens cannot be told apart.
    """
    from transformers.utils.chat_template_utils import render_jinja_template

    # transformers annotates the return as str; it is the rendered chats and each one's generation spans.
    rendered, indices = cast(
        tuple[list[str], list[list[tuple[int, int]]]],
        render_jinja_template(
            conversations=[messages],
            chat_template=template,
            return_assistant_tokens_mask=True,
            **tokenizer.special_tokens_map,
        ),
    )
    text, blocks = rendered[0], indices[0]
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    owners: list[tuple[tuple[int, int], int]] = []
    matched = 0
    for start, end in blocks:
        if matched < len(turns) and messages[turns[matched]]["content"].strip() in text[start:end]:
            matched += 1
        owners.append(((start, end), turns[max(matched - 1, 0)]))
    if matched < len(turns):
        raise UserError(
            f"the training chat template has no generation block holding assistant turn messages[{turns[matched]}]",
            remedy="Per-message weight needs each assistant turn inside {% generation %}...{% endgeneration %}; "
            "fix the template, or drop `weight` from the data.",
        )
    return owners


def fold_system(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Azure's rule for templates without a system role: the system message joins the first user message."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system['content']}\n\n{m['content']}"
            return rest
    # No user turn to join: the system text becomes the user turn rather than being lost.
    return [{"role": "user", "content": system["content"]}, *rest]


def _template(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8").rstrip("\n")


@cache
def _training_templates() -> dict[str, str]:
    """Chat templates chattune knows, mapped to their training variants ({% generation %} markers added)."""
    return {_template("smollm2.jinja"): _template("smollm2_training.jinja")}


def smollm2_chat_template() -> str:
    """The SmolLM2 chat template shipped with chattune."""
    return _template("smollm2.jinja")


def known_training_template(chat_template: str) -> str | None:
    """The training variant of a known chat template (marking assistant output), or None for an unknown one."""
    return _training_templates().get(chat_template.rstrip("\n"))
