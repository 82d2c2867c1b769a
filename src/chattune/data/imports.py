"""Import local chat data (jsonl, json array, parquet, csv; any chat format) into the canonical form.

The canonical form is JSON Lines, one row per line: a ``messages`` list and every column the row's format did not
turn into messages, as it was. openai and ultrachat rows are written as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chattune.data.chat_formats import ChatFormat, convert, file_format, to_row
from chattune.data.formats import iter_records
from chattune.data.validate import FileReport, validate_file
from chattune.errors import DataError


def import_file(path: Path, out_dir: Path, fmt: ChatFormat | str | None = None) -> tuple[Path, FileReport]:
    """Validate ``path`` and write ``out_dir/<stem>.jsonl``; refuse (listing every error) if it has errors.

    Args:
        path: A data file.
        out_dir: Where the canonical file goes.
        fmt: The chat format of its rows; None detects it.

    Returns:
        The file written and the validation report (with the format the rows were read in).

    Raises:
        DataError: The file has errors; nothing is written.
    """
    report = validate_file(path, fmt=fmt)
    if not report.valid:
        raise DataError(
            f"{path}: {len(report.errors)} error(s); nothing was imported:\n{report.summary()}",
            remedy="Fix the listed rows and import again.",
            details={"errors": [e.__dict__ for e in report.errors]},
        )
    ff = file_format(path, fmt)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{Path(path).stem}.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in iter_records(path):
            converted, _ = convert(rec.value, ff)
            assert converted is not None  # the report has no error
            fh.write(json.dumps(_plain(to_row(rec.value, ff.format, converted)), ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return target, report


def _plain(value: Any) -> Any:
    """Parquet may give numpy / date values; keep them as JSON can hold them."""
    return json.loads(json.dumps(value, default=str))
