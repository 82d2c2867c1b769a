"""chattune.data.preferences: both preference formats read into TRL's conversational pairs, every bad row reported
by line and code, and `data validate --task preference` on the real command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from chattune.catalog import get_entry
from chattune.catalog.importer import build_tiny_tokenizer
from chattune.data.preferences import read_pairs, validate_preferences

USER = {"role": "user", "content": "Normalize the date: 3 March 2021"}
GOOD = {"role": "assistant", "content": "2021-03-03"}
BAD = {"role": "assistant", "content": "March 3rd"}


def _write(tmp_path: Path, rows: list[Any], name: str = "pairs.jsonl") -> Path:
    path = tmp_path / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_every_accepted_shape_becomes_one_conversational_pair(tmp_path: Path) -> None:
    system = {"role": "system", "content": "Answer with an ISO date."}
    rows = [
        # OpenAI's DPO rows
        {"input": {"messages": [system, USER]}, "preferred_output": [GOOD], "non_preferred_output": [BAD]},
        # prompt/chosen/rejected as strings
        {"prompt": USER["content"], "chosen": GOOD["content"], "rejected": BAD["content"]},
        # as messages, each side only the answer
        {"prompt": [system, USER], "chosen": [GOOD], "rejected": [BAD]},
        # each side the whole conversation (Anthropic HH, UltraFeedback), with and without a prompt key
        {"prompt": [USER], "chosen": [USER, GOOD], "rejected": [USER, BAD]},
        {"chosen": [system, USER, GOOD], "rejected": [system, USER, BAD]},
    ]
    pairs = read_pairs(_write(tmp_path, rows))
    assert [p.line for p in pairs] == [1, 2, 3, 4, 5]
    assert [p.format for p in pairs] == ["openai_preference"] + ["prompt_chosen_rejected"] * 4
    for pair in pairs:
        assert pair.prompt[-1] == USER and pair.chosen == [GOOD] and pair.rejected == [BAD]
    assert pairs[0].prompt == [system, USER] and pairs[1].prompt == [USER] and pairs[4].prompt == [system, USER]


def test_every_bad_row_is_reported_by_line_and_code(tmp_path: Path) -> None:
    rows = [
        {"prompt": "hi", "chosen": "a", "rejected": "b"},  # 1: good
        "{not json",  # 2
        ["a", "list"],  # 3
        {"question": "q", "answer": "a"},  # 4
        {"prompt": "q", "chosen": "a"},  # 5: a missing side
        {"prompt": "q", "chosen": "same", "rejected": " same "},  # 6
        {"prompt": [USER, GOOD], "chosen": "a", "rejected": "b"},  # 7: the prompt ends on the assistant
        {"prompt": "q", "chosen": [USER, GOOD], "rejected": "b"},  # 8: chosen is not one answer after the prompt
        {"input": {"messages": []}, "preferred_output": [GOOD], "non_preferred_output": [BAD]},  # 9
        {"prompt": "q", "chosen": [{"role": "assistant", "content": ""}], "rejected": "b"},  # 10
        {"chosen": [USER, GOOD], "rejected": [{"role": "user", "content": "other"}, BAD]},  # 11: nothing shared
    ]
    report = validate_preferences(_write(tmp_path, rows), min_rows=2)
    found = {(e.line, e.code, e.field) for e in report.errors}
    assert found == {
        (2, "invalid_json", ""),
        (3, "data_type", ""),
        (4, "unknown_format", ""),
        (5, "missing_side", "rejected"),
        (6, "identical_sides", "chosen"),
        (7, "prompt_not_user_last", "prompt"),
        (8, "answer_not_assistant", "chosen"),
        (9, "missing_prompt", "input.messages"),
        (10, "invalid_message", "chosen[0].content"),
        (11, "missing_prompt", "prompt"),
        (0, "too_few_rows", ""),  # one valid pair of the 2 asked
    }
    assert report.rows == 11 and report.stats["pairs"] == 1 and not report.valid


def test_a_pair_longer_than_the_models_context_is_an_error(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer(get_entry("tiny-test").source.vocab_size or 512)
    rows = [{"prompt": "q", "chosen": "short", "rejected": "x " * 400}, {"prompt": "q", "chosen": "a", "rejected": "b"}]
    report = validate_preferences(_write(tmp_path, rows), tokenizer=tokenizer, max_length=128)
    assert [(e.line, e.code) for e in report.errors] == [(1, "too_long")]
    assert "over the model's 128" in report.errors[0].message


def test_data_validate_task_preference_exits_2_listing_the_rows(cli: Any, tmp_path: Path) -> None:
    good = {"prompt": "q", "chosen": "a", "rejected": "b"}
    path = _write(tmp_path, [good, {"prompt": "q", "chosen": "a"}])
    result = cli("data", "validate", str(path), "--task", "preference", "--json")
    assert result.returncode == 2
    (report,) = json.loads(result.stdout)["files"]
    assert report["format"] == "preference" and report["stats"]["pairs"] == 1
    assert [(e["line"], e["code"]) for e in report["errors"]] == [(2, "missing_side")]
    ok_file = str(_write(tmp_path, [good], "ok.jsonl"))
    ok = cli("data", "validate", ok_file, "--task", "preference")
    assert ok.returncode == 0 and "1 rows, valid" in ok.stdout
    for chat_only in (("--format", "openai"), ("--generation",)):  # refused, not ignored
        refused = cli("data", "validate", ok_file, "--task", "preference", *chat_only)
        assert refused.returncode == 2 and "apply to chat data" in refused.stderr


def test_a_preference_section_without_task_preference_is_refused_not_ignored() -> None:
    import pytest

    from chattune.errors import ConfigError
    from chattune.pipeline.config import parse_spec

    with pytest.raises(ConfigError) as exc:
        parse_spec({"data": {"train": "t.jsonl"}, "preference": {"beta": 0.5}})
    assert [(p.where, p.code) for p in exc.value.problems] == [("preference", "invalid_combination")]
    assert (
        parse_spec({"task": "preference", "data": {"train": "t.jsonl"}, "preference": {"beta": 0.5}}).preference.beta
        == 0.5
    )
