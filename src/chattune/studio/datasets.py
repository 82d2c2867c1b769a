"""The data files stored in the workspace by the studio: ``$CHATTUNE_HOME/datasets/FILENAME``."""

from __future__ import annotations

import re
from pathlib import Path

from chattune.errors import UserError
from chattune.workspace import Workspace

# A plain file name with a data suffix: no directory part, nothing hidden.
DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.(jsonl|json|csv|parquet)")


def dataset_path(ws: Workspace, filename: str) -> Path:
    """Where a stored data file lives, for a plain file name only.

    Raises:
        UserError: The name has a directory part, no data suffix or other characters (400 naming ``filename``).
    """
    if not DATASET_NAME.fullmatch(filename):
        raise UserError(
            f"data file name {filename!r}: use letters, digits, '.', '_' or '-' and a .jsonl, .json, .csv or "
            ".parquet suffix",
            param="filename",
        )
    return ws.settings.home / "datasets" / filename


def stored(ws: Workspace) -> list[dict[str, object]]:
    """The stored data files, by name: ``{"name", "path", "bytes"}``."""
    root = ws.settings.home / "datasets"
    found = sorted(p for p in root.glob("*") if p.is_file() and DATASET_NAME.fullmatch(p.name)) if root.exists() else []
    return [{"name": p.name, "path": str(p), "bytes": p.stat().st_size} for p in found]
