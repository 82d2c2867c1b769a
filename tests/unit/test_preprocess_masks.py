"""Assistant-only label masks: preprocess.tokenize with training_chat_template, fold_system, supports_system_role."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chattune.errors import UserError
from chattune.pipeline.steps.preprocess import tokenize
from chattune.templates import (
    fold_system,
    known_training_template,
    smollm2_chat_template,
    supports_system_role,
    template_hash,
    training_chat_template,
)


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


MULTI_TURN = chat(
    ("system", "You convert dates to ISO 8601."),
    ("user", "Convert March 3, 2001"),
    ("assistant", "2001-03-03"),
    ("user", "And this one: 1 May 1999"),
    ("assistant", "1999-05-01"),
    ("user", "Next: the 2nd of June, 1987"),
    ("assistant", "1987-06-02"),
)


def spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """Runs of consecutive masked (1) tokens."""
    out: list[list[int]] = []
    current: list[int] = []
    for token, flag in zip(ids, mask, strict=True):
        if flag:
            current.append(token)
        elif current:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def one_row(tokenizer: Any, conversation: list[dict[str, str]], max_len: int = 100_000, fold: bool = False) -> Any:
    columns, counts = tokenize([conversation], tokenizer, training_chat_template(tokenizer), max_len, fold)
    assert counts["rows"] == 1
    (ids,), (mask,) = columns["input_ids"], columns["assistant_masks"]
    assert len(ids) == len(mask)
    assert set(mask) == {0, 1}
    return ids, mask, counts


def assistant_contents(conversation: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in conversation if m["role"] == "assistant"]


# -- SmolLM2 ChatML (the tiny tokenizer) -------------------------------------------------------------------------


def test_tiny_tokenizer_uses_chattunes_training_template(tiny_tokenizer: Any) -> None:
    template = training_chat_template(tiny_tokenizer)
    assert template == known_training_template(smollm2_chat_template())
    assert "{% generation %}" in template


@pytest.mark.parametrize("with_system", [True, False])
def test_chatml_masks_every_assistant_turn_and_nothing_else(tiny_tokenizer: Any, with_system: bool) -> None:
    conversation = MULTI_TURN if with_system else MULTI_TURN[1:]
    ids, mask, counts = one_row(tiny_tokenizer, conversation)
    decoded = [tiny_tokenizer.decode(s) for s in spans(ids, mask)]
    assert decoded == [f"{c}<|im_end|>" for c in assistant_contents(conversation)]
    # Everything unmasked is the rest of the rendered conversation: prompts, roles, system text, newlines.
    unmasked = tiny_tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert "You convert dates" in unmasked or not with_system
    assert "Convert March 3, 2001" in unmasked
    assert "2001-03-03" not in unmasked
    assert unmasked.count("<|im_start|>assistant\n") == 3
    # The ids are exactly those of the model's own template: the training variant changes only the mask.
    own = tiny_tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    assert ids == list(own)
    assert counts == {
        "rows": 1,
        "too_few_messages": 0,
        "no_trained_turn": 0,
        "truncated": 0,
        "no_assistant_tokens": 0,
        "system_folded": 0,
        "tokens": len(ids),
    }


def test_truncation_counts_rows_without_assistant_tokens(tiny_tokenizer: Any) -> None:
    template = training_chat_template(tiny_tokenizer)
    long_prompt = chat(("user", "Convert " + "March 3, 2001 " * 40), ("assistant", "2001-03-03"))
    short = chat(("user", "Hi"), ("assistant", "2001-03-03"))
    full_short, _, _ = one_row(tiny_tokenizer, short)
    full_long, _, _ = one_row(tiny_tokenizer, long_prompt)
    max_len = len(full_short) + 2
    assert len(full_long) > max_len + 10  # the long row loses its assistant turn entirely

    columns, counts = tokenize([short, long_prompt, MULTI_TURN], tiny_tokenizer, template, max_len, False)
    assert counts["rows"] == 3
    assert counts["truncated"] == 2  # the long prompt and the multi-turn row
    assert counts["no_assistant_tokens"] == 1  # only the long prompt lost every assistant token
    assert len(columns["input_ids"]) == 2
    assert all(len(ids) <= max_len for ids in columns["input_ids"])
    assert counts["tokens"] == sum(len(ids) for ids in columns["input_ids"])
    # The kept, truncated multi-turn row still has its first assistant turn masked.
    ids, mask = columns["input_ids"][1], columns["assistant_masks"][1]
    assert tiny_tokenizer.decode(spans(ids, mask)[0]).startswith("2001-03-03")


def test_fold_during_tokenize(tiny_tokenizer: Any) -> None:
    conversation = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello"))
    columns, counts = tokenize(
        [conversation, conversation[1:]], tiny_tokenizer, training_chat_template(tiny_tokenizer), 10_000, True
    )
    assert counts["system_folded"] == 1
    text = tiny_tokenizer.decode(columns["input_ids"][0])
    assert "<|im_start|>user\nBe brief.\n\nHi<|im_end|>" in text
    assert "<|im_start|>system\nBe brief." not in text
    assert conversation[1]["content"] == "Hi"  # the caller's rows are not modified


# -- Phi-3 (real tokenizer files) ---------------------------------------------------------------------------------


def test_phi3_uses_trls_phi3_training_template(phi3_tokenizer: Any) -> None:
    import trl.chat_template_utils as ctu

    expected = (Path(ctu.__file__).parent / "chat_templates" / "phi3_training.jinja").read_text(encoding="utf-8")
    template = training_chat_template(phi3_tokenizer)
    assert template == expected
    assert "{% generation %}" in template or "{%- generation %}" in template
    # It renders exactly what the model's own template renders.
    for conversation in (MULTI_TURN, MULTI_TURN[1:3]):
        assert phi3_tokenizer.apply_chat_template(
            conversation, tokenize=False, chat_template=template
        ) == phi3_tokenizer.apply_chat_template(conversation, tokenize=False)


def test_phi3_masks_every_assistant_turn(phi3_tokenizer: Any) -> None:
    ids, mask, counts = one_row(phi3_tokenizer, MULTI_TURN)
    decoded = [phi3_tokenizer.decode(s) for s in spans(ids, mask)]
    # Observed with transformers 5 + TRL 1.16: each assistant turn is trained as content + <|end|>. The "\n" the
    # template writes after <|end|> is not a token (Phi-3's added tokens have rstrip=true, so it is absorbed), and
    # TRL's template also trains the final eos (<|endoftext|>) after the last assistant turn, so the model learns
    # to stop.
    contents = assistant_contents(MULTI_TURN)
    assert decoded == [f"{contents[0]}<|end|>", f"{contents[1]}<|end|>", f"{contents[2]}<|end|><|endoftext|>"]
    masked_tokens = phi3_tokenizer.convert_ids_to_tokens([t for t, m in zip(ids, mask, strict=True) if m])
    assert "<|assistant|>" not in masked_tokens
    assert "<|user|>" not in masked_tokens
    assert masked_tokens.count("<|end|>") == 3
    unmasked = phi3_tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    assert unmasked.startswith("<|system|>You convert dates to ISO 8601.<|end|><|user|>Convert March 3, 2001<|end|>")
    assert counts["no_assistant_tokens"] == 0


def test_phi3_conversation_ending_on_user_trains_only_earlier_turns(phi3_tokenizer: Any) -> None:
    conversation = MULTI_TURN[:4]  # ... assistant, user: the eos after a user turn is not trained
    ids, mask, _ = one_row(phi3_tokenizer, conversation)
    assert [phi3_tokenizer.decode(s) for s in spans(ids, mask)] == ["2001-03-03<|end|>"]


# -- system role and folding --------------------------------------------------------------------------------------


def test_supports_system_role(tiny_tokenizer: Any, phi3_tokenizer: Any, shared: Callable[..., Path]) -> None:
    from transformers import AutoTokenizer

    assert supports_system_role(tiny_tokenizer) is True
    assert supports_system_role(phi3_tokenizer) is True
    # Phi-3 128k's early template drops system messages silently: that counts as no support.
    phi3_128k = AutoTokenizer.from_pretrained(shared("phi3_mini_128k_tokenizer"))
    assert supports_system_role(phi3_128k) is False
    refusing = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "{{ m['content'] }}{% endfor %}"
    )
    assert supports_system_role(tiny_tokenizer, refusing) is False
    dropping = "{% for m in messages %}{% if m['role'] != 'system' %}{{ m['content'] }}{% endif %}{% endfor %}"
    assert supports_system_role(tiny_tokenizer, dropping) is False
    assert supports_system_role(tiny_tokenizer, smollm2_chat_template()) is True


def test_phi3_128k_template_cannot_mask_assistant_turns(shared: Callable[..., Path]) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(shared("phi3_mini_128k_tokenizer"))
    with pytest.raises(UserError, match="does not mark assistant turns") as exc:
        training_chat_template(tokenizer)
    assert "{% generation %}" in (exc.value.remedy or "")


class FakeTokenizer:
    def __init__(self, chat_template: str | None):
        self.chat_template = chat_template


def test_training_chat_template_edge_cases() -> None:
    with pytest.raises(UserError, match="no chat template"):
        training_chat_template(FakeTokenizer(None))
    marked = "{% for m in messages %}{% generation %}{{ m['content'] }}{% endgeneration %}{% endfor %}"
    assert training_chat_template(FakeTokenizer(marked)) == marked
    assert template_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_fold_system_joins_first_user_message() -> None:
    messages = chat(("system", "S"), ("assistant", "early"), ("user", "U1"), ("assistant", "A"), ("user", "U2"))
    before = copy.deepcopy(messages)
    folded = fold_system(messages)
    assert folded == chat(("assistant", "early"), ("user", "S\n\nU1"), ("assistant", "A"), ("user", "U2"))
    assert messages == before  # the input is not modified


def test_fold_system_without_system_is_unchanged() -> None:
    messages = chat(("user", "U"), ("assistant", "A"))
    assert fold_system(messages) is messages
    assert fold_system([]) == []


# -- OpenAI's per-message weight: a weight-0 assistant turn is context, not trained --------------------------------

WEIGHTED = [
    {"role": "system", "content": "You convert dates to ISO 8601."},
    {"role": "user", "content": "Convert March 3, 2001"},
    {"role": "assistant", "content": "It is 3/3/2001, I believe.", "weight": 0},
    {"role": "user", "content": "As YYYY-MM-DD, please."},
    {"role": "assistant", "content": "2001-03-03", "weight": 1},
    {"role": "user", "content": "And 1 May 1999?"},
    {"role": "assistant", "content": "1999-05-01"},
]


def _trained_and_context(tokenizer: Any, conversation: list[dict[str, Any]]) -> tuple[list[str], str, list[int]]:
    ids, mask, _ = one_row(tokenizer, conversation)
    trained = [tokenizer.decode(s) for s in spans(ids, mask)]
    context = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if not m])
    return trained, context, ids


@pytest.mark.parametrize("tokenizer_name", ["tiny_tokenizer", "phi3_tokenizer"])
def test_weight_zero_turn_is_not_trained(request: pytest.FixtureRequest, tokenizer_name: str) -> None:
    tokenizer = request.getfixturevalue(tokenizer_name)
    trained, context, ids = _trained_and_context(tokenizer, WEIGHTED)
    decoded = "".join(trained)
    assert "3/3/2001, I believe" not in decoded  # weight 0: in the input, not in the loss
    assert "It is 3/3/2001, I believe." in context
    assert "2001-03-03" in decoded and "1999-05-01" in decoded  # weight 1 and no weight: trained
    end = "<|im_end|>" if tokenizer_name == "tiny_tokenizer" else "<|end|>"
    assert trained[0] == f"2001-03-03{end}" and trained[1].startswith(f"1999-05-01{end}")
    # The same tokens as without weights: weight changes the mask only.
    unweighted = [{"role": m["role"], "content": m["content"]} for m in WEIGHTED]
    ids_plain, mask_plain, _ = one_row(tokenizer, unweighted)
    assert ids == ids_plain
    assert "3/3/2001, I believe" in "".join(tokenizer.decode(s) for s in spans(ids_plain, mask_plain))


def test_weight_zero_on_the_last_turn_leaves_phi3s_final_eos_untrained(phi3_tokenizer: Any) -> None:
    # TRL's Phi-3 template trains the final <|endoftext|> in a generation block of its own after the last turn: it
    # belongs to that turn, so a weight-0 last turn leaves it untrained too.
    conversation = [*WEIGHTED[:5], {"role": "user", "content": "Thanks"}, {**WEIGHTED[6], "weight": 0}]
    trained, _, _ = _trained_and_context(phi3_tokenizer, conversation)
    assert trained == ["2001-03-03<|end|>"]


def test_weight_zero_everywhere_leaves_the_row_out(tiny_tokenizer: Any) -> None:
    rows = [[WEIGHTED[1], {**WEIGHTED[2]}], WEIGHTED]
    columns, counts = tokenize(rows, tiny_tokenizer, training_chat_template(tiny_tokenizer), 10_000, False)
    assert counts["no_trained_turn"] == 1 and counts["no_assistant_tokens"] == 0
    assert len(columns["input_ids"]) == 1


def test_weight_survives_folding_the_system_message(tiny_tokenizer: Any) -> None:
    columns, counts = tokenize([WEIGHTED], tiny_tokenizer, training_chat_template(tiny_tokenizer), 10_000, True)
    assert counts["system_folded"] == 1
    ids, mask = columns["input_ids"][0], columns["assistant_masks"][0]
    assert [tiny_tokenizer.decode(s) for s in spans(ids, mask)] == ["2001-03-03<|im_end|>", "1999-05-01<|im_end|>"]


def test_a_template_that_does_not_hold_the_turn_in_a_generation_block_is_refused(tiny_tokenizer: Any) -> None:
    # A template whose generation block holds only the end-of-turn token cannot tell one turn's tokens from another.
    template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ '<|im_end|>' }}{% endgeneration %}{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(UserError, match=r"no generation block holding assistant turn messages\[1\]") as exc:
        tokenize([WEIGHTED[1:5]], tiny_tokenizer, template, 10_000, False)
    assert "drop `weight`" in (exc.value.remedy or "")
