"""Generation metrics come from rouge-score and sacrebleu; exact match is the demo task's metric."""

from __future__ import annotations

import pytest

from chattune.data.conversations import Conversation, GenerationCase, generation_case
from chattune.pipeline.steps.evaluate import generation_note, text_metrics


def test_perfect_predictions_score_one_everywhere() -> None:
    refs = ["the cat sat on the mat", "1970-03-24"]
    metrics = text_metrics(refs, refs)
    assert set(metrics) == {
        "exact_match",
        "rouge1",
        "rouge2",
        "rougeL",
        "rougeLsum",
        "bleu1",
        "bleu2",
        "bleu3",
        "bleu4",
    }
    assert all(v == pytest.approx(1.0) for v in metrics.values())


def test_partial_and_wrong_predictions() -> None:
    metrics = text_metrics(["the cat sat", "nothing alike"], ["the cat sat on the mat", "1970-03-24"])
    assert metrics["exact_match"] == 0.0
    # ROUGE-1 F1 of the first pair: P 3/3, R 3/6 -> 2/3; the second pair shares nothing -> 0; mean 1/3
    assert metrics["rouge1"] == pytest.approx(1 / 3)
    assert 0 < metrics["bleu1"] < 1 and 0 < metrics["bleu4"] < 1


def _case(*roles: str) -> GenerationCase | None:
    messages = [
        {"role": r, "content": f"{r} {i}", **({"weight": 1} if r == "assistant" else {})} for i, r in enumerate(roles)
    ]
    return generation_case(Conversation("t.jsonl", 7, messages))


def test_generation_case_takes_the_trailing_assistant_turn_as_reference() -> None:
    assert _case("user", "assistant") == GenerationCase(7, [{"role": "user", "content": "user 0"}], "assistant 1")
    # ultrachat_200k's test_gen: the row ends on the question; it is answered whole, with no reference.
    assert _case("user", "assistant", "user") == GenerationCase(
        7,
        [
            {"role": "user", "content": "user 0"},
            {"role": "assistant", "content": "assistant 1"},
            {"role": "user", "content": "user 2"},
        ],
        None,
    )
    assert _case("user") == GenerationCase(7, [{"role": "user", "content": "user 0"}], None)
    assert _case("assistant") is None and _case("user", "system") is None


def test_generation_note_says_what_was_computed_on_how_many_rows() -> None:
    with_ref = GenerationCase(1, [], "a")
    without = GenerationCase(2, [], None)
    assert generation_note([with_ref] * 3, 3) == "generation_test: generated 3/3 rows, reference metrics on 3"
    assert generation_note([without] * 10, 10) == (
        "generation_test: generated 10/10 rows, reference metrics on 0 "
        "(10 without a reference answer: the row ends on a user turn)"
    )
    assert generation_note([with_ref, without], 3) == (
        "generation_test: generated 2/3 rows, reference metrics on 1 "
        "(1 without a reference answer: the row ends on a user turn); 1 row(s) with nothing to answer"
    )
