"""Output helpers: one schema printed as JSON (``--json``) or rendered for people; progress and errors on stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from chattune.errors import ChattuneError

# soft_wrap: long lines (paths, file:line messages) are never broken by the terminal width.
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

M = TypeVar("M", bound=BaseModel)


def emit(doc: M, json_: bool, render: Callable[[M], None] | None = None) -> None:
    """Print a command's answer: the schema as one JSON document on stdout with ``--json``, else for people.

    Args:
        doc: The answer, a response schema (``chattune.schemas``).
        json_: Whether ``--json`` was given.
        render: The human rendering; without one, the same JSON, pretty-printed.
    """
    if json_:
        emit_json(doc.model_dump(mode="json"))
    elif render is None:
        out.print_json(data=doc.model_dump(mode="json"))
    else:
        render(doc)


def emit_json(obj: Any) -> None:
    """Write one JSON document on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """Print a table on stdout (None shows as an empty cell)."""
    t = Table(title=title)
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[("" if v is None else str(v)) for v in r])
    out.print(t)


def progress(line: str) -> None:
    """One progress line on stderr, printed as is."""
    err.print(line, markup=False, highlight=False, soft_wrap=True)


def show_error(exc: ChattuneError) -> None:
    """The error's message and remedy on stderr."""
    err.print("error: " + exc.message, markup=False, highlight=False, style="bold red", soft_wrap=True)
    if exc.remedy:
        err.print("hint: " + exc.remedy, markup=False, highlight=False, soft_wrap=True)
