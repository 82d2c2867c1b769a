"""Read chat data files (jsonl, json array, parquet, csv) into numbered records, keeping every column.

Each record carries its 1-based line (jsonl, csv, json array) or row number (parquet) so that every problem can be
reported where it is. Reading never drops a row: unreadable ones come back with ``error`` set.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from chattune.errors import UserError

FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".csv": "csv"}
# A csv cell is text: these columns hold lists (messages, ShareGPT turns, alpaca history) written as JSON.
CSV_JSON_COLUMNS = ("messages", "conversations", "history")


@dataclass
class Record:
    """One row of a data file. JSON Lines rows may arrive undecoded (``raw``) for the validator's fast path."""

    line: int
    value: Any = None
    error_code: str | None = None
    error: str | None = None
    raw: bytes | None = None


def detect_format(path: Path) -> str:
    """The format of a data file by its suffix: ``jsonl``, ``json``, ``parquet`` or ``csv``.

    Raises:
        UserError: The suffix is not one of them.
    """
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"{path}: unsupported file type {path.suffix!r}",
            remedy=f"Use one of: {', '.join(FORMATS)} (in a csv, list columns such as `messages` hold JSON).",
        )
    return fmt


def check_path(path: Path) -> Path:
    """Return ``path`` as a Path if it is an existing file.

    Raises:
        UserError: It does not exist, or is a directory.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: file not found", remedy="Check the path (relative paths start at the job file).")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a data file")
    return path


def iter_records(path: Path, *, lazy: bool = False) -> Iterator[Record]:
    """Stream the rows of ``path``.

    JSON Lines is read a line at a time (memory does not grow with the file); with ``lazy`` its rows come undecoded in
    ``raw`` and the caller decodes them (see :func:`decode`).
    """
    path = check_path(path)
    fmt = detect_format(path)
    if fmt == "jsonl":
        for rec in _iter_jsonl(path):
            yield rec if lazy else decode(rec)
    elif fmt == "json":
        yield from _read_json(path)
    elif fmt == "parquet":
        yield from _iter_parquet(path)
    else:
        yield from _read_csv(path)


def read_records(path: Path) -> list[Record]:
    """Every row of a data file, decoded."""
    return list(iter_records(path))


def decode(rec: Record) -> Record:
    """Decode a raw JSON Lines row in place, classifying failures as invalid_encoding or invalid_json."""
    if rec.raw is None:
        return rec
    raw, rec.raw = rec.raw, None
    try:
        rec.value = msgspec.json.decode(raw)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter inside strings
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as uexc:
            rec.error_code, rec.error = "invalid_encoding", f"not UTF-8 ({uexc.reason} at byte {uexc.start})"
        else:
            rec.error_code, rec.error = "invalid_json", f"invalid JSON: {exc}"
    return rec


def _iter_jsonl(path: Path) -> Iterator[Record]:
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]  # a UTF-8 byte order mark
            if not line.strip():
                continue  # blank lines (and a missing or present final newline) are fine
            yield Record(number, raw=line)  # CRLF: the \r is JSON whitespace


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


def _iter_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ...
        yield Record(1, error_code="invalid_parquet", error=f"unreadable parquet: {exc}")
        return
    number = 0
    for batch in table.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            number += 1
            yield Record(number, row)


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
        try:
            for column in CSV_JSON_COLUMNS:
                cell = value.get(column)
                if isinstance(cell, str):
                    # An empty optional list (alpaca's history) is no list; an empty `messages` is reported as such.
                    value[column] = json.loads(cell) if cell.strip() or column == "messages" else None
        except json.JSONDecodeError as exc:
            records.append(Record(line, error_code="invalid_json", error=f"`{column}` is not JSON: {exc.msg}"))
            continue
        records.append(Record(line, value))
    return records
