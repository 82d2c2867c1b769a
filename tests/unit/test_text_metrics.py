"""Generation metrics come from rouge-score and sacrebleu; exact match is the demo task's metric."""

from __future__ import annotations

import pytest

from chattune.pipeline.steps.evaluate import split_reference, text_metrics


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


def test_split_reference_takes_the_trailing_assistant_turn() -> None:
    conv = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert split_reference(conv) == ([{"role": "user", "content": "q"}], "a")
    assert split_reference(conv[:1]) is None
