"""The quickstart's sample request (the seed's step 8) from test_gen rows as ultrachat_200k has them."""

from __future__ import annotations

import json
from pathlib import Path

from chattune.quickstart import _question, _sample


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_row_ending_on_the_question_is_sent_whole(tmp_path: Path) -> None:
    # ultrachat_200k's test_gen rows end on a user turn: the request keeps that question, there is no reference.
    messages = [
        {"role": "user", "content": "Plan a three-day trip to Lisbon."},
        {"role": "assistant", "content": "Day 1: Alfama and the castle..."},
        {"role": "user", "content": "Swap day 3 for a trip to Sintra."},
    ]
    path = _write(tmp_path / "test_gen.jsonl", [{"prompt": "Plan", "prompt_id": "a1", "messages": messages}])
    sample = _sample(path, seed=1)
    assert sample.prompt == messages and sample.reference is None
    assert _question(sample) == "Swap day 3 for a trip to Sintra."


def test_a_row_ending_on_an_answer_sends_the_question_and_keeps_the_reference(tmp_path: Path) -> None:
    messages = [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    path = _write(tmp_path / "test_gen.jsonl", [{"prompt": "2+2?", "prompt_id": "b2", "messages": messages}])
    sample = _sample(path, seed=1)
    assert sample.prompt == messages[:1] and sample.reference == "4"
    assert _question(sample) == "2+2?"
