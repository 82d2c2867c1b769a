"""Read chat data files (jsonl, json array, parquet, csv) into numbered records, keeping every column.

Each record carries its 1-based line (jsonl, csv) or row number (json array, parquet) so that every problem can be
reported where it is. Reading never drops a row: unreadable ones come back with ``error`` set.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chattune.errors import UserError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass
class Record:
    line: int
    value: Any = None
    error_code: str | None = None
    error: str | None = None


def detect_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unsupported file type {path.suffix!r}",
            remedy=f"Use one of: {', '.join(FORMATS)} (a csv needs a `messages` column holding JSON).",
        )
    return fmt


def read_records(path: Path) -> list[Record]:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found", remedy="Check the path (relative paths start at the job file).")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a data file")
    fmt = detect_format(path)
    if fmt == "jsonl":
        return _read_jsonl(path)
    if fmt == "json":
        return _read_json(path)
    if fmt == "parquet":
        return _read_parquet(path)
    return _read_csv(path)


def _read_jsonl(path: Path) -> list[Record]:
    records = []
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for number, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line.strip():
            continue  # blank lines (and a missing or present final newline) are fine
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            records.append(Record(number, error_code="invalid_encoding", error=f"not UTF-8 ({exc.reason})"))
            continue
        try:
            records.append(Record(number, json.loads(text)))
        except json.JSONDecodeError as exc:
            records.append(
                Record(number, error_code="invalid_json", error=f"invalid JSON: {exc.msg} at column {exc.colno}")
            )
    return records


def _read_json(path: Path) -> list[Record]:
    """A JSON array; each row is numbered by the file line its element starts on."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return [Record(1, error_code="invalid_encoding", error=f"not UTF-8 ({exc.reason})")]
    try:
        json.loads(text)  # the whole file must be valid JSON (a cut-off download is not a shorter dataset)
    except json.JSONDecodeError as exc:
        error = f"invalid JSON: {exc.msg} at column {exc.colno}"
        return [Record(exc.lineno, error_code="invalid_json", error=error)]
    pos = _skip(text, 0)
    if not text.startswith("[", pos):
        return [Record(1, error_code="data_type", error="a .json file must hold an array of rows")]
    # Walk the (valid) array once more to learn the line each element starts on; newlines are counted
    # incrementally so that this stays linear in the file size.
    decoder = json.JSONDecoder()
    records: list[Record] = []
    line, counted = 1, 0
    pos = _skip(text, pos + 1)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        value, pos = decoder.raw_decode(text, pos)
        records.append(Record(line, value))
        pos = _skip(text, pos)
        if text.startswith(",", pos):
            pos = _skip(text, pos + 1)
    return records


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _read_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        return [Record(1, error_code="invalid_parquet", error=f"unreadable parquet: {exc}")]
    return [Record(i, row) for i, row in enumerate(rows, start=1)]


def _read_csv(path: Path) -> list[Record]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return [Record(1, error_code="invalid_encoding", error=f"not UTF-8 ({exc.reason})")]
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    records = []
    end = reader.line_num
    for values in reader:
        # A quoted field may span lines: a row starts on the line after the previous row ended.
        line, end = end + 1, reader.line_num
        if not any(v.strip() for v in values):
            continue
        value: dict[str, Any] = dict(zip(header, values, strict=False))
        if isinstance(value.get("messages"), str):
            try:
                value["messages"] = json.loads(value["messages"])
            except json.JSONDecodeError as exc:
                records.append(Record(line, error_code="invalid_json", error=f"`messages` is not JSON: {exc.msg}"))
                continue
        records.append(Record(line, value))
    return records
