"""chattune.data.validate and chattune.data.formats: every error code, where it is, every error at once."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chattune.data.formats import detect_format, read_records
from chattune.data.validate import MIN_TRAIN_ROWS, validate_file
from chattune.errors import UserError


def chat(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in pairs]


GOOD = {"messages": chat(("user", "What is 2+2?"), ("assistant", "4"))}


def jsonl(path: Path, *rows: Any) -> Path:
    """Write rows as JSON lines; a ``bytes`` row is written as is (for broken lines)."""
    out = b""
    for row in rows:
        out += (row if isinstance(row, bytes) else json.dumps(row).encode()) + b"\n"
    path.write_bytes(out)
    return path


def triples(issues: list[Any]) -> list[tuple[int, str, str]]:
    return [(i.line, i.code, i.field) for i in issues]


# -- one error code at a time -----------------------------------------------------------------------------------

ROW_ERRORS = [
    pytest.param([1, 2], "data_type", "", id="row-not-object"),
    pytest.param("just a string", "data_type", "", id="row-is-string"),
    pytest.param(
        {"messages": ["hi", chat(("assistant", "x"))[0]]}, "data_type", "messages[0]", id="message-not-object"
    ),
    pytest.param({"prompt": "no messages here"}, "missing_messages_list", "messages", id="no-messages"),
    pytest.param({"messages": "hello"}, "missing_messages_list", "messages", id="messages-is-string"),
    pytest.param(
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},
        "message_missing_key",
        "messages[0].content",
        id="missing-content-key",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "q"}, {"content": "a"}]},
        "message_missing_key",
        "messages[1].role",
        id="missing-role-key",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "foo": 1}]},
        "message_unrecognized_key",
        "messages[1].foo",
        id="unknown-key",
    ),
    pytest.param(
        {"messages": [*chat(("user", "q"), ("assistant", "a")), {"role": "robot", "content": "x"}]},
        "unrecognized_role",
        "messages[2].role",
        id="bad-role",
    ),
    pytest.param(
        {"messages": chat(("user", "q"), ("assistant", ""))}, "missing_content", "messages[1].content", id="empty"
    ),
    pytest.param(
        {"messages": chat(("user", "q"), ("assistant", "   \n"))},
        "missing_content",
        "messages[1].content",
        id="whitespace-assistant",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": None}, {"role": "assistant", "content": "a"}]},
        "missing_content",
        "messages[0].content",
        id="null-content",
    ),
    pytest.param(
        {"messages": [{"role": "user", "content": ["part"]}, {"role": "assistant", "content": "a"}]},
        "missing_content",
        "messages[0].content",
        id="list-content",
    ),
    pytest.param(
        {"messages": chat(("system", "s"), ("user", "q"))},
        "example_missing_assistant_message",
        "messages",
        id="no-assistant",
    ),
    pytest.param(
        {"messages": chat(("user", "q"), ("assistant", "  "))},
        "missing_content",
        "messages[1].content",
        id="blank-answer",
    ),
]


def test_a_row_with_one_message_is_a_counted_warning(tmp_path: Path) -> None:
    # Azure's preprocess drops these rows; chattune keeps the file valid, warns per row and counts them.
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps({"messages": chat(("user", "q"))}) + "\n", encoding="utf-8")
    report = validate_file(path)
    assert report.valid
    assert triples(report.warnings) == [(3, "too_few_messages", "messages")]
    assert report.stats["dropped_rows"] == 1 and report.stats["usable_rows"] == 1


@pytest.mark.parametrize(
    ("row", "code", "field"),
    [
        pytest.param({"messages": []}, "missing_messages_list", "messages", id="empty-messages"),
        pytest.param(
            {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "a"}]},
            "missing_content",
            "messages[0].content",
            id="empty-user-content",
        ),
        pytest.param(
            {"messages": [{"role": "system", "content": ""}, *chat(("user", "q"), ("assistant", "a"))]},
            "missing_content",
            "messages[0].content",
            id="empty-system-content",
        ),
    ],
)
def test_empty_messages_and_empty_content_are_errors(tmp_path: Path, row: Any, code: str, field: str) -> None:
    """OpenAI's format checks count an empty `messages` list and an empty `content` (any role) as errors."""
    path = jsonl(tmp_path / "t.jsonl", GOOD, row)
    report = validate_file(path)
    assert triples(report.errors) == [(2, code, field)]
    assert report.warnings == [] and not report.valid
    assert "empty" in report.errors[0].message


@pytest.mark.parametrize(("row", "code", "field"), ROW_ERRORS)
def test_row_error_code_line_and_field(tmp_path: Path, row: Any, code: str, field: str) -> None:
    # The bad row sits on line 3, after a good row and a blank line, so the line number is really counted.
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(row) + "\n", encoding="utf-8")
    report = validate_file(path)
    assert triples(report.errors) == [(3, code, field)]
    assert not report.valid
    assert report.rows == 2
    assert report.stats["usable_rows"] == 1


def test_invalid_json_line(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "t.jsonl", GOOD, b'{"messages": [', GOOD)
    report = validate_file(path)
    assert triples(report.errors) == [(2, "invalid_json", "")]
    assert "invalid JSON" in report.errors[0].message


def test_invalid_encoding_line(tmp_path: Path) -> None:
    bad = b'{"messages": [{"role": "user", "content": "caf\xe9"}, {"role": "assistant", "content": "ok"}]}'
    path = jsonl(tmp_path / "t.jsonl", GOOD, GOOD, bad)
    report = validate_file(path)
    assert triples(report.errors) == [(3, "invalid_encoding", "")]
    assert "UTF-8" in report.errors[0].message


@pytest.mark.parametrize("content", [b"", b"\n\n  \n", b"\xef\xbb\xbf"], ids=["empty", "blank-lines", "bom-only"])
def test_empty_file(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    report = validate_file(path)
    assert triples(report.errors) == [(1, "empty_file", "")]
    assert report.rows == 0


def test_too_few_rows_counts_only_usable_rows(tmp_path: Path) -> None:
    bad = {"messages": chat(("user", "q"))}
    path = jsonl(tmp_path / "t.jsonl", *([GOOD] * (MIN_TRAIN_ROWS - 1)), bad)
    report = validate_file(path, min_rows=MIN_TRAIN_ROWS)
    assert triples(report.errors) == [(1, "too_few_rows", "")]
    assert triples(report.warnings) == [(MIN_TRAIN_ROWS, "too_few_messages", "messages")]
    assert f"{MIN_TRAIN_ROWS - 1} usable row(s); at least {MIN_TRAIN_ROWS}" in report.errors[0].message
    assert validate_file(jsonl(tmp_path / "ok.jsonl", *([GOOD] * MIN_TRAIN_ROWS)), min_rows=MIN_TRAIN_ROWS).valid


# -- every error, not just the first ----------------------------------------------------------------------------


def test_every_error_in_a_file_is_reported(tmp_path: Path) -> None:
    lines: list[Any] = [
        GOOD,  # 1
        [1, 2],  # 2 data_type
        {"prompt": "x"},  # 3 missing_messages_list
        {"messages": [{"role": "user"}, {"role": "assistant", "content": "a"}]},  # 4 message_missing_key
        {"messages": [{"role": "user", "content": "q", "foo": 1}, {"role": "assistant", "content": "a"}]},  # 5
        {"messages": [*chat(("user", "q"), ("assistant", "a")), {"role": "robot", "content": "x"}]},  # 6
        {"messages": chat(("user", "q"), ("assistant", ""))},  # 7 missing_content
        {"messages": chat(("system", "s"), ("user", "q"))},  # 8 example_missing_assistant_message
        {"messages": chat(("user", "q"))},  # 9 too_few_messages
        b"{not json",  # 10 invalid_json
        b'{"messages": "\xff"}',  # 11 invalid_encoding
        b"",  # 12 blank
        # 13: several problems in one row, all reported
        {"messages": [{"role": "bot"}, {"role": "assistant", "content": 3}]},
        GOOD,  # 14
    ]
    report = validate_file(jsonl(tmp_path / "t.jsonl", *lines))
    assert triples(report.errors) == [
        (2, "data_type", ""),
        (3, "missing_messages_list", "messages"),
        (4, "message_missing_key", "messages[0].content"),
        (5, "message_unrecognized_key", "messages[0].foo"),
        (6, "unrecognized_role", "messages[2].role"),
        (7, "missing_content", "messages[1].content"),
        (8, "example_missing_assistant_message", "messages"),
        (10, "invalid_json", ""),
        (11, "invalid_encoding", ""),
        (13, "message_missing_key", "messages[0].content"),
        (13, "unrecognized_role", "messages[0].role"),
        (13, "missing_content", "messages[1].content"),
    ]
    assert report.rows == 13
    assert report.stats["usable_rows"] == 2
    summary = report.summary(limit=2).splitlines()
    assert summary[0] == (
        f"{report.path}:2: -: each row must be a JSON object; rows of openai (detected from line 1) need `messages` "
        "[data_type]"
    )
    assert summary[-1].startswith("... and 10 more")
    assert triples(report.warnings) == [(9, "too_few_messages", "messages")]
    as_dict = report.to_dict()
    assert as_dict["valid"] is False
    assert as_dict["errors"][1] == {
        "line": 3,
        "code": "missing_messages_list",
        "field": "messages",
        "message": (
            "no `messages`: rows of openai (detected from line 1) need `messages` (this row has: prompt); add it"
        ),
    }


# -- tolerated formatting ---------------------------------------------------------------------------------------


def test_bom_crlf_blank_lines_and_no_final_newline_are_fine(tmp_path: Path) -> None:
    row = json.dumps(GOOD).encode()
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + row + b"\r\n\r\n\n" + row + b"\r\n   \r\n" + row)
    report = validate_file(path)
    assert report.errors == []
    assert report.warnings == []
    assert report.rows == 3
    assert [r.line for r in read_records(path)] == [1, 4, 6]


def test_crlf_lines_keep_their_numbers_for_errors(tmp_path: Path) -> None:
    row = json.dumps(GOOD).encode()
    bad = json.dumps({"messages": chat(("user", "q"), ("bot", "a"))}).encode()
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + row + b"\r\n\r\n" + bad + b"\r\n" + row)
    assert triples(validate_file(path).errors) == [(3, "unrecognized_role", "messages[1].role")]


# -- warnings ---------------------------------------------------------------------------------------------------


def test_warnings_do_not_make_a_file_invalid(tmp_path: Path) -> None:
    rows = [
        {"prompt_id": "p1", "messages": chat(("user", "q"), ("assistant", "a"))},  # 1
        {"messages": chat(("system", "s"), ("assistant", "a"))},  # 2 missing_user_message
        {"messages": chat(("user", "q"), ("assistant", "a"), ("system", "s"), ("user", "q2"), ("assistant", "b"))},
        {"prompt_id": "p1", "messages": chat(("user", "q"), ("assistant", "a"))},  # 4 duplicate of line 1
        {"prompt_id": "p2", "messages": chat(("user", "q"), ("assistant", "a"))},  # 5
    ]
    report = validate_file(jsonl(tmp_path / "t.jsonl", *rows))
    assert report.valid
    assert triples(report.warnings) == [
        (2, "missing_user_message", "messages"),
        (3, "system_not_first", "messages[2].role"),
        (4, "duplicate_prompt_id", "prompt_id"),
    ]
    assert "line 1" in report.warnings[2].message
    assert report.stats["roles"] == {"user": 5, "assistant": 6, "system": 2}
    assert report.stats["turns"] == {"min": 2, "median": 2, "p95": 5, "max": 5}


def test_name_and_weight_message_keys_are_allowed(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "user", "content": "q", "name": "alice"},
            {"role": "assistant", "content": "a", "weight": 1},
        ]
    }
    assert validate_file(jsonl(tmp_path / "t.jsonl", row)).errors == []


# -- other formats ----------------------------------------------------------------------------------------------


def test_json_array_rows_are_numbered_from_one(tmp_path: Path) -> None:
    bad = {"messages": chat(("user", "q"), ("robot", "a"))}
    # One element per line, the first on line 1: its row number and its file line are the same.
    path = tmp_path / "t.json"
    one = {"messages": chat(("user", "q"))}
    path.write_text("[" + ",\n".join(json.dumps(r) for r in [GOOD, bad, GOOD, one]) + "]\n", "utf-8-sig")
    report = validate_file(path)
    assert report.rows == 4
    assert triples(report.errors) == [(2, "unrecognized_role", "messages[1].role")]
    assert triples(report.warnings) == [(4, "too_few_messages", "messages")]


def test_json_array_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text('[\n  {"messages": []},\n  {oops}\n]\n', encoding="utf-8")
    report = validate_file(path)
    assert (3, "invalid_json", "") in triples(report.errors)
    assert not report.valid


def test_pretty_printed_json_array_rows_are_numbered_by_start_line(tmp_path: Path) -> None:
    bad = {"messages": chat(("user", "q"), ("robot", "a"))}
    path = tmp_path / "t.json"
    path.write_text(json.dumps([GOOD, bad], indent=2), encoding="utf-8")
    # indent=2: "[" on line 1, GOOD fills lines 2-13, so bad starts on line 14.
    assert [r.line for r in read_records(path)] == [2, 14]
    assert triples(validate_file(path).errors) == [(14, "unrecognized_role", "messages[1].role")]


@pytest.mark.parametrize(
    "text",
    [
        "[" + json.dumps(GOOD) + ",\n" + json.dumps(GOOD),
        "[" + json.dumps(GOOD) + "\n" + json.dumps(GOOD) + "]",
        "[" + json.dumps(GOOD) + ",]",
        "[" + json.dumps(GOOD) + "] trailing",
    ],
    ids=["truncated", "missing-comma", "trailing-comma", "trailing-garbage"],
)
def test_malformed_json_array_is_invalid_json(tmp_path: Path, text: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text, encoding="utf-8")
    assert "invalid_json" in [i.code for i in validate_file(path).errors]


class _CountingText(str):
    """A str that adds up how many characters its count() calls scan."""

    scanned = 0

    def count(self, sub: str, start: Any = None, end: Any = None) -> int:  # type: ignore[override]
        lo, hi, _ = slice(start, end).indices(len(self))
        _CountingText.scanned += max(0, hi - lo)
        return super().count(sub, start, end)


def test_json_array_line_numbers_scan_the_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Line numbers for a JSON array's rows come from one pass over the text, not a rescan per row
    (which made a 1 GB array quadratic). Counted in characters scanned, not seconds."""
    row = json.dumps({"messages": chat(("user", "q" * 40), ("assistant", "a" * 40))}, indent=1)
    path = tmp_path / "t.json"
    path.write_text("[\n" + ",\n".join([row] * 500) + "\n]", encoding="utf-8")
    text = path.read_text(encoding="utf-8")
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None: _CountingText(text))
    _CountingText.scanned = 0
    records = read_records(path)
    assert len(records) == 500
    step = row.count("\n") + 1
    assert [r.line for r in records] == [2 + i * step for i in range(500)]
    assert 0 < _CountingText.scanned <= len(text)


def test_csv_blank_rows_are_skipped_and_lines_kept(tmp_path: Path) -> None:
    good = json.dumps(GOOD["messages"]).replace('"', '""')
    bad = json.dumps(chat(("user", "q"), ("bot", "a"))).replace('"', '""')
    path = tmp_path / "t.csv"
    path.write_text(f'prompt,messages\r\na,"{good}"\r\n\r\nb,"{bad}"\r\n', encoding="utf-8-sig")
    assert [r.line for r in read_records(path)] == [2, 4]
    assert triples(validate_file(path).errors) == [(4, "unrecognized_role", "messages[1].role")]


def test_json_object_instead_of_array_is_data_type(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps(GOOD), encoding="utf-8")
    assert triples(validate_file(path).errors)[0] == (1, "data_type", "")


def test_json_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    path.write_bytes(b'[{"messages": "\xff"}]')
    assert triples(validate_file(path).errors)[0] == (1, "invalid_encoding", "")


def test_parquet_rows_and_errors(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {"prompt": "a", "messages": chat(("user", "q1"), ("assistant", "a1"))},
        {"prompt": "b", "messages": chat(("system", "s"), ("user", "q2"), ("assistant", "a2"))},
        {"prompt": "c", "messages": chat(("user", "q3"), ("robot", "a3"))},
        {"prompt": "d", "messages": chat(("user", "q4"), ("assistant", ""))},
    ]
    path = tmp_path / "t.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    report = validate_file(path)
    assert report.rows == 4
    assert triples(report.errors) == [
        (3, "unrecognized_role", "messages[1].role"),
        (4, "missing_content", "messages[1].content"),
    ]
    assert report.stats["usable_rows"] == 2
    records = read_records(path)
    assert records[1].value["prompt"] == "b"
    assert records[1].value["messages"][0] == {"role": "system", "content": "s"}


def test_unreadable_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    path.write_bytes(b"not parquet at all")
    assert triples(validate_file(path).errors)[0] == (1, "invalid_parquet", "")


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["prompt", "messages"])
        writer.writerows(rows)
    return path


def test_csv_messages_column_as_json(tmp_path: Path) -> None:
    good = json.dumps(GOOD["messages"])
    bad_role = json.dumps(chat(("user", "q"), ("bot", "a")))
    # Data rows start on line 2; the row with a quoted newline occupies lines 4-5, so the bad rows sit on 6 and 7.
    path = write_csv(
        tmp_path / "t.csv", [["a", good], ["b", good], ["c\nmore", good], ["d", bad_role], ["e", "{not json"]]
    )
    records = read_records(path)
    assert [r.value["prompt"] for r in records if r.value] == ["a", "b", "c\nmore", "d"]
    assert records[0].value["messages"] == GOOD["messages"]
    assert [r.line for r in records][1:] == [3, 4, 6, 7]
    report = validate_file(path)
    assert report.rows == 5
    assert triples(report.errors) == [(6, "unrecognized_role", "messages[1].role"), (7, "invalid_json", "")]
    assert "`messages` is not JSON" in report.errors[1].message


def test_csv_first_data_row_is_line_two(tmp_path: Path) -> None:
    # Regression: the first data row was once numbered 1, the header's line.
    bad_role = json.dumps(chat(("user", "q"), ("bot", "a")))
    path = write_csv(tmp_path / "t.csv", [["a", bad_role], ["b", json.dumps(GOOD["messages"])]])
    assert [r.line for r in read_records(path)] == [2, 3]
    assert triples(validate_file(path).errors) == [(2, "unrecognized_role", "messages[1].role")]


def test_unsupported_missing_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"unsupported file type '\.txt'") as exc:
        detect_format(tmp_path / "t.txt")
    assert exc.value.remedy is not None and ".jsonl" in exc.value.remedy
    with pytest.raises(UserError, match="file not found"):
        validate_file(tmp_path / "missing.jsonl")
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(UserError, match="is a directory"):
        validate_file(tmp_path / "d.jsonl")
    assert [detect_format(Path(f"x{s}")) for s in (".JSONL", ".json", ".parquet", ".csv")] == [
        "jsonl",
        "json",
        "parquet",
        "csv",
    ]


# -- real third-party files -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parts", "rows"),
    [
        (("samsum_messages_azureml", "train.jsonl"), 79),
        (("samsum_messages_azureml", "validation.jsonl"), 21),  # no final newline
        (("assistant_dialogs_azureml_oai", "chat_train.jsonl"), 128),
    ],
)
def test_real_fixture_files_are_valid(shared: Callable[..., Path], parts: tuple[str, str], rows: int) -> None:
    report = validate_file(shared(*parts), min_rows=MIN_TRAIN_ROWS)
    assert report.errors == []
    assert report.valid
    assert report.rows == rows
    assert report.stats["usable_rows"] == rows
    assert set(report.stats["roles"]) == {"user", "assistant"}


def test_oasst_message_trees_match_no_format_and_are_refused_row_by_row(shared: Callable[..., Path]) -> None:
    # oasst exports are trees, not conversations: no row has a known format's keys, so every row is reported at its
    # own line, naming the formats and --format. (alpaca and dolly are read: tests/unit/test_chat_formats.py.)
    report = validate_file(shared("oasst_en100", "en_100_tree.jsonl"))
    assert report.rows == 100 and not report.valid
    assert (report.format, report.format_source) == ("openai", "default")
    row_errors = [e for e in report.errors if e.code == "missing_messages_list"]
    assert len(row_errors) == 100 and len({e.line for e in row_errors}) == 100
    assert "match no known format" in row_errors[0].message and "--format" in row_errors[0].message
    assert "sharegpt: conversations" in row_errors[0].message
