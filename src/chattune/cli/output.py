"""Output helpers: JSON on stdout for --json, tables and progress on stderr, errors with a remedy."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from chattune.errors import ChattuneError

# soft_wrap: long lines (paths, file:line messages) are never broken by the terminal width.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if v is None else str(v)) for v in r])
    out.print(t)


def progress(line: str) -> None:
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def show_error(exc: ChattuneError) -> None:
    err.print("error: " + exc.message, markup=False, highlight=False, style="bold red", soft_wrap=True)
    if exc.remedy:
        err.print("hint: " + exc.remedy, markup=False, highlight=False, soft_wrap=True)
