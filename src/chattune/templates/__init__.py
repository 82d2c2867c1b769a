"""Chat templates: which one trains, system-role support, the shipped ones, and the assistant-mask check.

Assistant-only loss needs {% generation %} markers; ``--chat-template NAME`` takes a template chattune (or TRL) ships;
``check_assistant_mask`` runs once when a model is imported.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
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
            "the model's chat template does not mark assistant turns, so loss cannot be restricted to them: it has no "
            "{% generation %} markers, and neither chattune nor TRL knows a training variant of it",
            remedy="Add {% generation %}...{% endgeneration %} around assistant content in the template "
            "(see TRL's *_training.jinja templates), or pick a shipped template with --chat-template: "
            f"{', '.join(shipped_template_names())}.",
        ) from exc
    return str(patched or template)


def training_template_source(template: str) -> str:
    """Which training variant ``training_chat_template`` takes for ``template``, for people (``models show``)."""
    from trl.chat_template_utils import has_generation_markers

    if has_generation_markers(template):
        return "the chat template itself: its {% generation %} markers"
    for name in OWN_TEMPLATES:
        if template.rstrip("\n") == _template(f"{name}.jinja"):
            return f"chattune's {name}_training.jinja"
    for name, text in _trl_templates().items():
        if template == text:
            return f"TRL's chat_templates/{name}_training.jinja"
    return "TRL's get_training_chat_template"


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


# The chat templates chattune ships, by the name `--chat-template` takes; each has a `<name>_training.jinja` beside it.
# smollm2: SmolLM2's ChatML with its default system prompt; chatml: plain ChatML; mistral: Mistral-Instruct's [INST]
# format (no system role: a system message is folded into the first user turn).
OWN_TEMPLATES = ("chatml", "smollm2", "mistral")


@cache
def _training_templates() -> dict[str, str]:
    """Chat templates chattune knows, mapped to their training variants ({% generation %} markers added)."""
    return {_template(f"{name}.jinja"): _template(f"{name}_training.jinja") for name in OWN_TEMPLATES}


@cache
def _trl_templates() -> dict[str, str]:
    """TRL's shipped chat templates that have a training variant, by name (``qwen2_5``, ``phi3``, ``gemma``, ...)."""
    try:
        folder = resources.files("trl").joinpath("chat_templates")
        names = {f.name for f in folder.iterdir()}
    except (ModuleNotFoundError, FileNotFoundError):  # pragma: no cover - trl is a dependency
        return {}
    plain = sorted(n for n in names if n.endswith(".jinja") and not n.endswith("_training.jinja"))
    return {
        n.removesuffix(".jinja"): folder.joinpath(n).read_text(encoding="utf-8")
        for n in plain
        if n.replace(".jinja", "_training.jinja") in names
    }


def shipped_template_names() -> list[str]:
    """The names ``--chat-template`` takes: chattune's own templates, then TRL's that have a training variant."""
    return [*OWN_TEMPLATES, *(n for n in _trl_templates() if n not in OWN_TEMPLATES)]


def shipped_template(name: str) -> tuple[str, str]:
    """A shipped chat template by name: (template, where it comes from).

    Raises:
        UserError: No shipped template has this name; the message lists them.
    """
    if name in OWN_TEMPLATES:
        return _template(f"{name}.jinja"), f"chattune's {name}.jinja"
    trl = _trl_templates()
    if name in trl:
        return trl[name], f"TRL's chat_templates/{name}.jinja"
    raise UserError(
        f"--chat-template {name}: no shipped chat template of that name, and no such file",
        remedy=f"Use one of: {', '.join(shipped_template_names())}; or the path of a Jinja template file.",
    )


def chat_template_choice(choice: str) -> tuple[str, str]:
    """What ``--chat-template`` names: a file path (when it exists) or a shipped template; (template, source)."""
    path = Path(choice).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if not text.strip():
            raise UserError(f"--chat-template {choice}: the file is empty", remedy="Give a Jinja chat template file.")
        return text, f"--chat-template {path.resolve()}"
    template, where = shipped_template(choice)
    return template, f"--chat-template {choice} ({where})"


def smollm2_chat_template() -> str:
    """The SmolLM2 chat template shipped with chattune."""
    return _template("smollm2.jinja")


def known_training_template(chat_template: str) -> str | None:
    """The training variant of a known chat template (marking assistant output), or None for an unknown one."""
    return _training_templates().get(chat_template.rstrip("\n"))


# The conversation every imported model's template is checked on: a system turn, two user and two assistant turns.
SAMPLE_CONVERSATION: list[dict[str, str]] = [
    {"role": "system", "content": "You answer in one short sentence."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
    {"role": "user", "content": "And the capital of Italy?"},
    {"role": "assistant", "content": "Rome is the capital of Italy."},
]


@dataclass(frozen=True)
class MaskCheck:
    """What the assistant-only loss mask trains on the sample conversation, decoded.

    Attributes:
        trained_spans: The text of each run of trained tokens, in order (one per assistant turn).
        trained_tokens: How many tokens carry the loss.
        total_tokens: How many tokens the conversation has.
        system_folded: The template has no system role, so the system turn was folded into the first user turn.
        end_of_turn_trained: Every trained run holds a special token (the end of the turn), so the model learns to
            stop.
    """

    trained_spans: list[str]
    trained_tokens: int
    total_tokens: int
    system_folded: bool
    end_of_turn_trained: bool


def check_assistant_mask(tokenizer: Any, conversation: list[dict[str, str]] | None = None) -> MaskCheck:
    """Tokenize a sample conversation as preprocess will and check that exactly the assistant turns are trained.

    The training variant of the tokenizer's chat template must render the same text as the template itself, and the
    decoded mask must hold each assistant reply, in order, one run per reply, and no user or system text.

    Args:
        tokenizer: A tokenizer with its chat template set.
        conversation: The conversation to check (default ``SAMPLE_CONVERSATION``).

    Returns:
        The decoded mask.

    Raises:
        UserError: The template's assistant turns cannot be located; the message says why.
    """
    conversation = conversation or SAMPLE_CONVERSATION
    shipped = ", ".join(shipped_template_names())
    remedy = (
        "Use a template whose assistant replies are wrapped in {% generation %}...{% endgeneration %} (TRL's "
        f"*_training.jinja are examples) with --chat-template FILE, or a shipped one: {shipped}."
    )
    training = training_chat_template(tokenizer)
    template = str(tokenizer.chat_template)
    fold = not supports_system_role(tokenizer, template)
    messages = fold_system(conversation) if fold else conversation
    try:
        rendered = tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False)
        as_trained = tokenizer.apply_chat_template(messages, chat_template=training, tokenize=False)
        ids, mask = encode(tokenizer, messages, training, fold=False)
    except Exception as exc:  # a template raises what it refuses; a slow tokenizer cannot give a mask
        raise UserError(
            f"the chat template cannot tokenize a sample conversation with an assistant mask: {type(exc).__name__}: "
            f"{str(exc)[:300]}",
            remedy=remedy,
        ) from exc
    if rendered != as_trained:
        raise UserError(
            "the training variant of the chat template renders the sample conversation differently from the template "
            "itself, so the model would be trained on another format than it is served with",
            remedy=remedy,
        )
    spans: list[list[int]] = []
    for i, (token, trained) in enumerate(zip(ids, mask, strict=True)):
        if trained:
            if i == 0 or not mask[i - 1]:
                spans.append([])
            spans[-1].append(token)
    texts = [tokenizer.decode(span, skip_special_tokens=False) for span in spans]
    replies = [m["content"] for m in messages if m["role"] == "assistant"]
    others = [m["content"] for m in messages if m["role"] != "assistant"]
    problem = None
    if not spans:
        problem = "no token of the sample conversation is marked as an assistant token"
    elif len(spans) != len(replies):
        problem = f"{len(replies)} assistant replies, but {len(spans)} runs of trained tokens: {texts!r}"
    else:
        missing = [r for r, text in zip(replies, texts, strict=True) if r not in text]
        leaked = [o for o in others if any(o in text for text in texts)]
        if missing:
            problem = f"the trained tokens {texts!r} do not hold the assistant reply {missing[0]!r}"
        elif leaked:
            problem = f"the trained tokens {texts!r} hold a user or system turn ({leaked[0]!r})"
    if problem:
        raise UserError(f"the chat template's assistant turns cannot be located: {problem}", remedy=remedy)
    special = set(tokenizer.all_special_ids)
    special |= {i for i, added in getattr(tokenizer, "added_tokens_decoder", {}).items() if added.special}
    return MaskCheck(
        trained_spans=texts,
        trained_tokens=sum(mask),
        total_tokens=len(ids),
        system_folded=fold,
        end_of_turn_trained=all(special & set(span) for span in spans),
    )
