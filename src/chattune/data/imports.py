"""Import local chat data (jsonl, json array, parquet, csv) into the canonical form.

The canonical form is JSON Lines, one row per line, a ``messages`` list, every other column kept as it was.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from chattune.data.formats import iter_records
from chattune.data.validate import FileReport, validate_file
from chattune.errors import DataError


def import_file(path: Path, out_dir: Path) -> tuple[Path, FileReport]:
    """Validate ``path`` and write ``out_dir/<stem>.jsonl``; refuse (listing every error) if it has errors."""
    report = validate_file(path)
    if not report.valid:
        raise DataError(
            f"{path}: {len(report.errors)} error(s); nothing was imported:\n{report.summary()}",
            remedy="Fix the listed rows and import again.",
            details={"errors": [e.__dict__ for e in report.errors]},
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{Path(path).stem}.jsonl"
    tmp = target.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in iter_records(path):
            fh.write(json.dumps(_plain(rec.value), ensure_ascii=False) + "\n")
    os.replace(tmp, target)
    return target, report


def _plain(value: Any) -> Any:
    """Parquet may give numpy / date values; keep them as JSON can hold them."""
    return json.loads(json.dumps(value, default=str))
