"""chattune.data.chat_formats: each format detected by its rows' keys and converted into messages; every problem at
its file:line and field; --format to force one; data import writes messages and carries the other columns."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chattune.data.chat_formats import ChatFormat, FileFormat, convert, detect, detect_file
from chattune.data.conversations import read_conversations
from chattune.data.imports import import_file
from chattune.data.validate import MIN_TRAIN_ROWS, validate_file
from chattune.errors import DataError
from tests.conftest import TEST_DATA

SHAREGPT = TEST_DATA / "sharegpt_chat.json"


def jsonl(path: Path, *rows: Any) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def triples(issues: list[Any]) -> list[tuple[int, str, str]]:
    return [(i.line, i.code, i.field) for i in issues]


def msgs(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": r, "content": c} for r, c in pairs]


ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
SHARE = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}
OPENAI = {"messages": msgs(("user", "Hi"), ("assistant", "Hello!"))}
ULTRA = {"prompt": "Hi", "prompt_id": "ab12", "messages": msgs(("user", "Hi"), ("assistant", "Hello!"))}
PC = {"prompt": "2+2=", "completion": "4"}
DOLLY = {"instruction": "Who?", "context": "Ada wrote it.", "response": "Ada.", "category": "closed_qa"}


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        (OPENAI, ChatFormat.OPENAI),
        (ULTRA, ChatFormat.ULTRACHAT),
        (SHARE, ChatFormat.SHAREGPT),
        (ALPACA, ChatFormat.ALPACA),
        ({"instruction": "x", "output": "y"}, ChatFormat.ALPACA),  # input is optional
        (DOLLY, ChatFormat.DOLLY),
        (PC, ChatFormat.PROMPT_COMPLETION),
        ({"prompt": "only a prompt"}, None),
        ([1, 2], None),
    ],
)
def test_detect_by_the_keys_of_a_row(row: Any, fmt: ChatFormat | None) -> None:
    assert detect(row) == fmt


def test_a_file_is_detected_from_its_first_row_with_a_formats_keys(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", "{broken", {"other": 1}, ALPACA, SHARE)
    assert detect_file(path) == FileFormat(ChatFormat.ALPACA, "detected", 3)
    report = validate_file(path)
    assert (report.format, report.format_source) == ("alpaca", "detected from line 3")
    assert triples(report.errors) == [
        (1, "invalid_json", ""),
        (2, "missing_field", "instruction"),
        (2, "missing_field", "output"),
        (4, "mixed_formats", "conversations"),
    ]
    assert "this row is sharegpt (conversations) but the file is alpaca (detected from line 3)" in (
        report.errors[3].message
    )


# -- alpaca and dolly: the real files ----------------------------------------------------------------------------


def test_llamafactory_alpaca_demo_is_read_as_alpaca(shared: Callable[..., Path]) -> None:
    path = shared("alpaca_en_demo_llamafactory", "alpaca_en_demo.json")
    report = validate_file(path, min_rows=MIN_TRAIN_ROWS)
    assert (report.format, report.format_source) == ("alpaca", "detected from line 2")
    assert report.errors == [] and report.warnings == []
    assert report.rows == report.stats["usable_rows"] == 999
    assert report.stats["roles"] == {"user": 999, "assistant": 999}
    rows = json.loads(path.read_text(encoding="utf-8"))
    convs = read_conversations(path)
    # Line numbers are where each element starts in the pretty-printed array (4 lines per row + "[").
    assert [c.line for c in convs[:3]] == [2, 7, 12]
    assert convs[0].where == f"{path}:2"
    # input empty: the user turn is the instruction alone; else instruction + "\n" + input (LLaMA-Factory's rule).
    with_input = next(i for i, r in enumerate(rows) if r["input"])
    assert convs[0].messages == msgs(("user", rows[0]["instruction"]), ("assistant", rows[0]["output"]))
    assert convs[with_input].messages[0]["content"] == f"{rows[with_input]['instruction']}\n{rows[with_input]['input']}"


def test_alpaca_system_and_history_become_turns_before_this_one(tmp_path: Path) -> None:
    row = {
        "instruction": "And in Celsius?",
        "input": "",
        "output": "About 37 degrees Celsius.",
        "system": "You are a nurse.",
        "history": [["What is a normal body temperature?", "About 98.6 degrees Fahrenheit."]],
        "id": 7,
    }
    path = tmp_path / "a.json"
    path.write_text(json.dumps([row], indent=2), encoding="utf-8")
    (conv,) = read_conversations(path)
    assert conv.messages == msgs(
        ("system", "You are a nurse."),
        ("user", "What is a normal body temperature?"),
        ("assistant", "About 98.6 degrees Fahrenheit."),
        ("user", "And in Celsius?"),
        ("assistant", "About 37 degrees Celsius."),
    )
    target, report = import_file(path, tmp_path / "out")
    assert report.format == "alpaca"
    # The columns alpaca turns into messages are consumed; any other column is carried, in its place.
    assert json.loads(target.read_text(encoding="utf-8")) == {"messages": conv.messages, "id": 7}


def test_dolly_is_alpaca_with_context_as_input_and_response_as_output(
    shared: Callable[..., Path], tmp_path: Path
) -> None:
    path = shared("dolly_litgpt_fixture", "dolly.json")
    report = validate_file(path, min_rows=MIN_TRAIN_ROWS)
    assert (report.format, report.valid, report.rows, report.warnings) == ("dolly", True, 12, [])
    rows = json.loads(path.read_text(encoding="utf-8"))
    convs = read_conversations(path)
    assert convs[0].messages == msgs(
        ("user", f"{rows[0]['instruction']}\n{rows[0]['context']}"), ("assistant", rows[0]["response"])
    )
    no_context = next(i for i, r in enumerate(rows) if not r["context"])
    assert convs[no_context].messages[0]["content"] == rows[no_context]["instruction"]
    target, _ = import_file(path, tmp_path)
    imported = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [r["category"] for r in imported] == [r["category"] for r in rows]  # carried, not lost
    assert [r["messages"] for r in imported] == [c.messages for c in convs]
    assert set(imported[0]) == {"messages", "category"}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        pytest.param({"instruction": "q"}, [("missing_field", "output")], id="no-output"),
        pytest.param({**ALPACA, "output": ""}, [("missing_content", "output")], id="empty-output"),
        pytest.param({**ALPACA, "output": None}, [("missing_content", "output")], id="null-output"),
        pytest.param({**ALPACA, "instruction": "", "input": ""}, [("missing_content", "instruction")], id="no-text"),
        pytest.param({**ALPACA, "input": 3}, [("data_type", "input")], id="input-not-text"),
        pytest.param({**ALPACA, "history": "x"}, [("data_type", "history")], id="history-not-list"),
        pytest.param({**ALPACA, "history": [["q"]]}, [("data_type", "history[0]")], id="history-not-pair"),
        pytest.param({**ALPACA, "history": [["q", ""]]}, [("missing_content", "history[0][1]")], id="history-empty"),
        pytest.param(SHARE, [("mixed_formats", "conversations")], id="sharegpt-row"),
        pytest.param(OPENAI, [("mixed_formats", "messages")], id="openai-row"),
    ],
)
def test_alpaca_row_errors_name_line_and_field(tmp_path: Path, row: Any, expected: list[tuple[str, str]]) -> None:
    path = jsonl(tmp_path / "a.jsonl", ALPACA, ALPACA, row)
    report = validate_file(path)
    assert [(e.line, e.code, e.field) for e in report.errors] == [(3, code, field) for code, field in expected]
    assert report.stats["usable_rows"] == 2


# -- sharegpt (LLaMA-Factory's shape) ---------------------------------------------------------------------------


def test_sharegpt_file_in_llamafactorys_shape() -> None:
    report = validate_file(SHAREGPT, min_rows=MIN_TRAIN_ROWS)
    assert (report.format, report.format_source) == ("sharegpt", "detected from line 2")
    assert report.errors == [] and report.warnings == []
    assert report.rows == report.stats["usable_rows"] == 12
    convs = read_conversations(SHAREGPT)
    rows = json.loads(SHAREGPT.read_text(encoding="utf-8"))
    assert convs[0].messages == msgs(
        ("user", rows[0]["conversations"][0]["value"]), ("assistant", rows[0]["conversations"][1]["value"])
    )
    # The `system` column becomes the first message; a system turn in `conversations` is read as one.
    assert convs[1].messages[0] == {"role": "system", "content": "You are a concise thesaurus."}
    assert [m["role"] for m in convs[1].messages] == ["system", "user", "assistant", "user", "assistant"]
    assert convs[3].messages[0] == {"role": "system", "content": "You answer with one number."}


def test_sharegpt_accepts_user_and_assistant_role_names_and_weight(tmp_path: Path) -> None:
    row = {
        "conversations": [
            {"from": "user", "value": "Pick a number."},
            {"from": "assistant", "value": "7", "weight": 0},
            {"from": "user", "value": "Another."},
            {"from": "assistant", "value": "3", "weight": None},
        ],
        "source": "oh-2.5",
    }
    path = jsonl(tmp_path / "s.jsonl", row)
    (conv,) = read_conversations(path)
    assert conv.messages == [
        {"role": "user", "content": "Pick a number."},
        {"role": "assistant", "content": "7", "weight": 0},
        {"role": "user", "content": "Another."},
        {"role": "assistant", "content": "3"},
    ]
    target, _ = import_file(path, tmp_path / "out")
    assert json.loads(target.read_text(encoding="utf-8")) == {"messages": conv.messages, "source": "oh-2.5"}


@pytest.mark.parametrize(
    ("turns", "extra", "expected"),
    [
        pytest.param(
            [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}],
            {},
            [("unrecognized_role", "conversations[1].from", "tool turns are not supported")],
            id="tool-role",
        ),
        pytest.param(
            [{"from": "human", "value": "q"}, {"from": "gpt"}],
            {},
            [("message_missing_key", "conversations[1].value", "has no `value`")],
            id="no-value",
        ),
        pytest.param(
            [{"from": "human", "value": "q"}, {"from": "gpt", "value": ""}],
            {},
            [("missing_content", "conversations[1].value", "empty")],
            id="empty-value",
        ),
        pytest.param(
            [{"from": "human", "value": "q", "role": "user"}, {"from": "gpt", "value": "a"}],
            {},
            [("message_unrecognized_key", "conversations[0].role", "allowed: from, value, weight")],
            id="unknown-key",
        ),
        pytest.param([], {}, [("missing_messages_list", "conversations", "empty")], id="empty-list"),
        pytest.param(
            [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}],
            {"system": "t"},
            [("duplicate_system", "system", "keep one")],
            id="two-systems",
        ),
    ],
)
def test_sharegpt_row_errors(tmp_path: Path, turns: list[Any], extra: dict[str, Any], expected: list[Any]) -> None:
    path = jsonl(tmp_path / "s.jsonl", SHARE, {"conversations": turns, **extra})
    report = validate_file(path)
    assert [(e.line, e.code, e.field) for e in report.errors] == [(2, code, field) for code, field, _ in expected]
    for error, (_, _, words) in zip(report.errors, expected, strict=True):
        assert words in error.message


def test_sharegpt_conversation_checks_name_its_own_fields(tmp_path: Path) -> None:
    rows = [
        {"conversations": [{"from": "human", "value": "q"}]},  # one turn
        {"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q2"}]},  # no answer
        {"conversations": [*SHARE["conversations"], {"from": "system", "value": "s"}, *SHARE["conversations"]]},
    ]
    report = validate_file(jsonl(tmp_path / "s.jsonl", *rows))
    assert triples(report.errors) == [(2, "example_missing_assistant_message", "conversations")]
    assert triples(report.warnings) == [
        (1, "too_few_messages", "conversations"),
        (3, "system_not_first", "conversations[2].from"),
    ]


def test_sharegpt_in_csv_holds_its_turns_as_json(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["conversations", "system"])
        writer.writerow([json.dumps(SHARE["conversations"]), "Be brief."])
        writer.writerow(["[{not json", ""])
    report = validate_file(path)
    assert report.format == "sharegpt"
    assert triples(report.errors) == [(3, "invalid_json", "")]
    assert "`conversations` is not JSON" in report.errors[0].message


# -- prompt/completion, ultrachat, openai -----------------------------------------------------------------------


def test_prompt_completion_strings_and_trls_conversational_lists(tmp_path: Path) -> None:
    (conv,) = read_conversations(jsonl(tmp_path / "p.jsonl", PC))
    assert conv.messages == msgs(("user", "2+2="), ("assistant", "4"))
    listed = {"prompt": msgs(("system", "Be exact."), ("user", "2+2=")), "completion": msgs(("assistant", "4"))}
    (conv,) = read_conversations(jsonl(tmp_path / "q.jsonl", listed))
    assert conv.messages == msgs(("system", "Be exact."), ("user", "2+2="), ("assistant", "4"))
    bad = [
        {"prompt": "x", "completion": ""},
        {"prompt": msgs(("user", "x")), "completion": "y"},
        {"prompt": msgs(("user", "x")), "completion": [{"role": "bot", "content": "y"}]},
        {"prompt": "x"},
    ]
    report = validate_file(jsonl(tmp_path / "r.jsonl", PC, *bad))
    assert triples(report.errors) == [
        (2, "missing_content", "completion"),
        (3, "data_type", "completion"),
        (4, "unrecognized_role", "completion[0].role"),
        (5, "missing_field", "completion"),
    ]


def test_ultrachat_rows_need_prompt_and_prompt_id_or_format_openai(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "u.jsonl", ULTRA, OPENAI, {**ULTRA, "prompt_id": 5})
    report = validate_file(path)
    assert report.format == "ultrachat"
    assert triples(report.errors) == [
        (2, "missing_field", "prompt"),
        (2, "missing_field", "prompt_id"),
        (3, "data_type", "prompt_id"),
    ]
    assert "--format openai" in report.errors[0].message
    # Read as plain messages, the same rows are fine (prompt and prompt_id are carried columns).
    assert validate_file(path, fmt="openai").valid


def test_an_openai_file_takes_ultrachat_rows_and_carries_their_columns(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "o.jsonl", OPENAI, ULTRA)
    report = validate_file(path)
    assert (report.format, report.valid) == ("openai", True)
    target, _ = import_file(path, tmp_path / "out")
    assert [json.loads(line) for line in target.read_text().splitlines()] == [OPENAI, ULTRA]


def test_format_forces_a_reading_and_refuses_rows_in_another(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "o.jsonl", OPENAI, OPENAI)
    report = validate_file(path, fmt=ChatFormat.ALPACA)
    assert (report.format, report.format_source) == ("alpaca", "given")
    assert triples(report.errors) == [
        (1, "mixed_formats", "messages"),
        (2, "mixed_formats", "messages"),
        (1, "too_few_rows", ""),
    ]
    assert "the file is alpaca (given)" in report.errors[0].message
    with pytest.raises(DataError, match=r"o\.jsonl:1: messages: this row is openai") as exc:
        read_conversations(path, "alpaca")
    assert "chattune data validate" in (exc.value.remedy or "")


# -- OpenAI's per-message weight ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "words"),
    [
        pytest.param({"role": "assistant", "content": "a", "weight": 2}, "must be 0", id="two"),
        pytest.param({"role": "assistant", "content": "a", "weight": 0.5}, "must be 0", id="half"),
        pytest.param({"role": "assistant", "content": "a", "weight": True}, "must be 0", id="bool"),
        pytest.param({"role": "assistant", "content": "a", "weight": "1"}, "must be 0", id="string"),
    ],
)
def test_weight_must_be_zero_or_one(tmp_path: Path, message: dict[str, Any], words: str) -> None:
    path = jsonl(tmp_path / "w.jsonl", OPENAI, {"messages": [{"role": "user", "content": "q"}, message]})
    report = validate_file(path)
    assert triples(report.errors) == [(2, "invalid_weight", "messages[1].weight")]
    assert words in report.errors[0].message


@pytest.mark.parametrize("role", ["user", "system"])
def test_weight_is_for_assistant_messages_only(tmp_path: Path, role: str) -> None:
    row = {"messages": [{"role": role, "content": "q", "weight": 1}, {"role": "assistant", "content": "a"}]}
    report = validate_file(jsonl(tmp_path / "w.jsonl", OPENAI, row))
    assert triples(report.errors) == [(2, "invalid_weight", "messages[0].weight")]
    assert "assistant messages only" in report.errors[0].message


def test_weights_are_kept_and_a_row_with_nothing_to_train_is_a_warning(tmp_path: Path) -> None:
    kept = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 0}]}
    mixed = {
        "messages": [
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "wrong", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "right", "weight": 1},
        ]
    }
    path = jsonl(tmp_path / "w.jsonl", mixed, kept)
    report = validate_file(path)
    assert report.errors == []
    assert triples(report.warnings) == [(2, "no_trained_turn", "messages")]
    assert report.stats["usable_rows"] == 1
    assert [m.get("weight") for m in read_conversations(path)[0].messages] == [None, 0, None, 1]


def test_convert_reports_every_problem_of_a_row() -> None:
    row = {"messages": [{"role": "bot", "content": "", "weight": 0}, {"content": 3}]}
    conv, findings = convert(row, FileFormat(ChatFormat.OPENAI))
    assert conv is None
    assert [(f.code, f.field) for f in findings] == [
        ("unrecognized_role", "messages[0].role"),
        ("missing_content", "messages[0].content"),
        ("invalid_weight", "messages[0].weight"),
        ("message_missing_key", "messages[1].role"),
        ("missing_content", "messages[1].content"),
    ]


# -- generation tests: rows that end on the question ------------------------------------------------------------


def test_generation_test_rows_may_end_on_a_user_turn(tmp_path: Path) -> None:
    rows = [
        {"prompt": "Hi", "prompt_id": "1", "messages": msgs(("user", "Hi"))},
        {"prompt": "Hi", "prompt_id": "2", "messages": msgs(("system", "s"), ("user", "Hi"))},
        ULTRA,
        {"prompt": "x", "prompt_id": "3", "messages": msgs(("user", "x"), ("system", "s"))},
    ]
    path = jsonl(tmp_path / "test_gen.jsonl", *rows)
    report = validate_file(path, generation=True)
    assert triples(report.errors) == [(4, "nothing_to_answer", "messages[1].role")]
    assert report.stats["usable_rows"] == 3 and report.stats["rows_with_reference"] == 1
    assert triples(report.warnings) == [(4, "system_not_first", "messages[1].role")]
    # As training data the same rows would be dropped or refused.
    as_train = validate_file(path)
    assert (1, "too_few_messages", "messages") in triples(as_train.warnings)
    assert (2, "example_missing_assistant_message", "messages") in triples(as_train.errors)
