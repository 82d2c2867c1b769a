"""chattune.data.demo: deterministic, ultrachat-shaped, disjoint splits, answers that are the prompt's date."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from chattune.data import demo
from chattune.data.validate import validate_file

MONTHS = {dt.date(2000, m, 1).strftime("%B").lower(): m for m in range(1, 13)}
WEEKDAYS = [dt.date(2024, 1, d).strftime("%A") for d in range(1, 8)]  # 2024-01-01 is a Monday


def parse_date(text: str) -> tuple[dt.date, str | None]:
    """Read the one date written in ``text`` (any of the demo's styles), independently of the generator's code."""
    month_match = re.search(r"\b(" + "|".join(m[:3] for m in MONTHS) + r")[a-z]*\b", text, re.IGNORECASE)
    assert month_match, text
    month = MONTHS[next(m for m in MONTHS if m.startswith(month_match.group(1).lower()))]
    years = re.findall(r"\b(19\d\d|20\d\d)\b", text)
    assert len(years) == 1, text
    days = re.findall(r"\b(\d{1,2})(?:st|nd|rd|th)?\b", text)
    assert len(days) == 1, text
    weekday = next((w for w in WEEKDAYS if w in text), None)
    return dt.date(int(years[0]), month, int(days[0])), weekday


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict[str, Any]]]:
    return demo.generate(rows=60, seed=3)


def test_same_seed_same_output_and_files(tmp_path: Path) -> None:
    assert demo.generate(rows=30, seed=7) == demo.generate(rows=30, seed=7)
    assert demo.generate(rows=30, seed=7) != demo.generate(rows=30, seed=8)
    first = demo.write(tmp_path / "a", rows=30, seed=7)
    second = demo.write(tmp_path / "b", rows=30, seed=7)
    assert sorted(first) == sorted(demo.SPLITS)
    for split in demo.SPLITS:
        assert first[split].name == f"{split}.jsonl"
        assert first[split].read_bytes() == second[split].read_bytes()
    assert not list((tmp_path / "a").glob("*.tmp"))


def test_four_splits_with_their_sizes(splits: dict[str, list[dict[str, Any]]]) -> None:
    assert tuple(splits) == ("train_sft", "test_sft", "train_gen", "test_gen")
    assert {k: len(v) for k, v in splits.items()} == {"train_sft": 60, "test_sft": 12, "train_gen": 12, "test_gen": 12}
    # Small datasets still get at least 10 rows per evaluation split.
    assert {k: len(v) for k, v in demo.generate(rows=5).items()} == {
        "train_sft": 5,
        "test_sft": 10,
        "train_gen": 10,
        "test_gen": 10,
    }


def test_ultrachat_schema(splits: dict[str, list[dict[str, Any]]]) -> None:
    for rows in splits.values():
        for row in rows:
            assert set(row) == {"prompt", "prompt_id", "messages"}
            assert row["prompt_id"] == hashlib.sha256(row["prompt"].encode("utf-8")).hexdigest()
            assert re.fullmatch(r"[0-9a-f]{64}", row["prompt_id"])
            assert row["messages"][0] == {"role": "user", "content": row["prompt"]}
            roles = [m["role"] for m in row["messages"]]
            assert roles in (["user", "assistant"], ["user", "assistant", "user", "assistant"])
            assert all(set(m) == {"role", "content"} for m in row["messages"])


def test_generation_splits_are_single_turn_and_sft_has_some_multi_turn(
    splits: dict[str, list[dict[str, Any]]],
) -> None:
    assert all(len(r["messages"]) == 2 for split in ("train_gen", "test_gen") for r in splits[split])
    assert any(len(r["messages"]) == 4 for r in splits["train_sft"])


def test_no_prompt_id_shared_across_splits(splits: dict[str, list[dict[str, Any]]]) -> None:
    ids = [r["prompt_id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids))


def test_answers_are_the_iso_date_of_the_question(splits: dict[str, list[dict[str, Any]]]) -> None:
    checked = 0
    for rows in splits.values():
        for row in rows:
            msgs = row["messages"]
            for question, answer in zip(msgs[0::2], msgs[1::2], strict=True):
                expected, weekday = parse_date(question["content"])
                assert answer["content"] == expected.isoformat()
                assert dt.date.fromisoformat(answer["content"]) == expected
                if weekday:
                    assert weekday == expected.strftime("%A"), question["content"]
                checked += 1
    assert checked > 96


def test_written_files_are_valid_chat_data(tmp_path: Path) -> None:
    paths = demo.write(tmp_path, rows=20, seed=0)
    for split, path in paths.items():
        report = validate_file(path, min_rows=10)
        assert report.valid, report.summary()
        assert report.warnings == []
        first = json.loads(path.read_text(encoding="utf-8").splitlines()[0])
        assert first == demo.generate(rows=20, seed=0)[split][0]


def test_tokenizer_corpus_has_chatml_turns() -> None:
    lines = list(demo.corpus_for_tokenizer())
    assert lines[0].startswith("<|im_start|>user\n")
    assert lines[0].endswith("<|im_end|>\n")
    assert any(line.startswith("<|im_start|>assistant\n") for line in lines)
