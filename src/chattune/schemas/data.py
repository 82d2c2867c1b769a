"""Data commands on the wire: validation reports, file previews, downloads and imports."""

from __future__ import annotations

from typing import Any

from pydantic import RootModel

from chattune.schemas.base import Schema


class DataIssue(Schema):
    """One error or warning in a data file, at its line."""

    line: int
    code: str
    field: str
    message: str


class DataFileReport(Schema):
    """What ``data validate`` found in one file; ``stats`` has per-row statistics (turns, characters, tokens)."""

    path: str
    rows: int
    # The chat format the rows were read in (openai, ultrachat, sharegpt, alpaca, dolly, prompt_completion) and how
    # it was decided: given, detected from line N, or default (no row has a known format's keys).
    format: str
    format_source: str
    valid: bool
    errors: list[DataIssue] = []
    warnings: list[DataIssue] = []
    stats: dict[str, Any] = {}


class DataValidation(Schema):
    """``data validate``: every file's report; ``valid`` when none has an error."""

    files: list[DataFileReport]
    valid: bool


class DataRow(Schema):
    """A row of a file as read, and its messages.

    ``row`` is None where the line could not be read (see ``error``); ``messages`` where the row cannot be converted.
    """

    line: int
    row: Any = None
    messages: list[dict[str, Any]] | None = None
    error: str | None = None


class DataPreview(Schema):
    """``data show``: a few rows and the file's statistics, with its error and warning counts."""

    path: str
    format: str
    format_source: str
    rows: list[DataRow]
    stats: dict[str, Any]
    valid: bool
    errors: int
    warnings: int


class DataSplit(Schema):
    """One downloaded split."""

    rows: int
    path: str


class DataDownload(Schema):
    """``data download``: the first ``percent`` of each split."""

    dataset: str
    percent: int
    splits: dict[str, DataSplit]


class DataImported(Schema):
    """One imported file, written as canonical JSON Lines."""

    source: str
    path: str
    format: str
    rows: int
    warnings: int


class DataImport(Schema):
    """``data import``: the files written."""

    files: list[DataImported]


class DataDemo(RootModel[dict[str, str]]):
    """``data demo``: the path of each split file written, by split name."""
