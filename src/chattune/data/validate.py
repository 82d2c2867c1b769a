"""Validate chat data files, reporting every problem at once with file, line, field and what to do.

Each file is read in its chat format (chattune.data.chat_formats: detected from its rows, or given) and every row
converted into messages; the checks below run on those messages, and name the row's own field.

Error codes follow OpenAI's fine-tuning data checks where they fit (``data_type``, ``missing_messages_list`` (an
empty list too), ``message_missing_key``, ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``
(an empty content too), ``example_missing_assistant_message``) and chattune's own otherwise (``invalid_json``,
``invalid_encoding``, ``invalid_parquet``, ``empty_file``, ``too_few_rows``, ``mixed_formats``, ``missing_field``,
``invalid_weight``, ``duplicate_system``, ``nothing_to_answer``).

Warnings never stop a job: ``too_few_messages`` (the row is dropped by preprocess, as Azure does, and counted),
``missing_user_message``, ``system_not_first``, ``system_folded`` (the model's template has no system role),
``duplicate_prompt_id``, ``row_in_other_file`` (e.g. a test row that is also in train), ``no_trained_turn``
(every assistant turn has weight 0), and with a model:
``over_max_seq_length`` and ``no_assistant_tokens_after_truncation`` (an error at job time).

JSON Lines files stream: a typed decoder (msgspec) checks well-formed rows in C, and only rows that fail it are
decoded generically and inspected field by field, so large files validate fast in constant memory.
"""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from chattune.data.chat_formats import (
    MESSAGE_FORMATS,
    ROLES,
    ChatFormat,
    Converted,
    FileFormat,
    Turn,
    convert,
    file_format,
)
from chattune.data.formats import Record, decode, iter_records
from chattune.data.tokens import TokenCounter

# Azure's preprocess refuses fewer than 10 training rows.
MIN_TRAIN_ROWS = 10


class _Row(msgspec.Struct):
    messages: list[Turn]
    # Only whether an ultrachat row has its prompt (and that it is text) matters here: left undecoded.
    prompt: msgspec.Raw = msgspec.Raw()  # empty: absent
    prompt_id: str | None = None


_ROW = msgspec.json.Decoder(_Row)
_ROLES = frozenset(ROLES)


@dataclass
class Issue:
    """One finding of the validator: the row's line, a code, the field concerned and a message."""

    line: int
    code: str
    field: str
    message: str


@dataclass
class FileReport:
    """The validation result of one data file: rows, errors, warnings and statistics."""

    path: str
    rows: int = 0
    # The chat format the rows were read in, and how it was decided (given, detected from line N, default).
    format: str = ChatFormat.OPENAI.value
    format_source: str = "default"
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        """Whether the file has no errors (warnings allowed)."""
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        """The report as a dict, as ``data validate --json`` shows it."""
        return {
            "path": self.path,
            "rows": self.rows,
            "format": self.format,
            "format_source": self.format_source,
            "valid": self.valid,
            "errors": [asdict(e) for e in self.errors],
            "warnings": [asdict(w) for w in self.warnings],
            "stats": self.stats,
        }

    def summary(self, limit: int = 20) -> str:
        """The first ``limit`` errors, one ``path:line: field: message [code]`` line each."""
        lines = [f"{self.path}:{e.line}: {e.field or '-'}: {e.message} [{e.code}]" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more (see `chattune data validate {self.path} --json`)")
        return "\n".join(lines)


def _conversation_problems(
    line: int, conv: Converted, report: FileReport, folds_system: bool, generation: bool
) -> bool:
    """Checks on a well-formed conversation; True when the row will be used (trained on, or answered)."""
    turns = conv.turns
    roles = [t.role for t in turns]
    usable, trained = True, False
    for i, turn in enumerate(turns):
        if turn.role == "assistant":
            trained = trained or turn.weight != 0
            if not turn.content.strip():
                message = "assistant content is blank; give the answer"
                report.errors.append(Issue(line, "missing_content", conv.field(i, "content"), message))
                usable = False
    if generation:
        if roles[-1] == "system" or roles == ["assistant"]:
            message = "nothing to answer: end the row on a user turn (or on the reference answer after one)"
            report.errors.append(Issue(line, "nothing_to_answer", conv.field(len(turns) - 1, "role"), message))
            usable = False
    elif len(turns) < 2:
        message = f"{len(turns)} message(s): preprocess drops rows with fewer than 2 (as Azure does); it is counted"
        if roles[-1] == "user":
            message += " (a generation test's question? validate it with --generation)"
        report.warnings.append(Issue(line, "too_few_messages", conv.whole, message))
        return False
    elif "assistant" not in roles:
        report.errors.append(
            Issue(
                line,
                "example_missing_assistant_message",
                conv.whole,
                "no assistant message to learn from; add one or remove the row",
            )
        )
        usable = False
    elif usable and not trained:
        message = "every assistant turn has weight 0: nothing to learn, the job leaves the row out"
        report.warnings.append(Issue(line, "no_trained_turn", conv.whole, message))
        usable = False
    if "user" not in roles:
        report.warnings.append(Issue(line, "missing_user_message", conv.whole, "no user message"))
    if "system" in roles[1:]:
        i = roles.index("system", 1)
        report.warnings.append(
            Issue(line, "system_not_first", conv.field(i, "role"), "a system message that is not first")
        )
    elif folds_system and roles[0] == "system":
        report.warnings.append(
            Issue(
                line,
                "system_folded",
                conv.field(0, "role"),
                "the model's chat template has no system role: this message will be folded into the first user message",
            )
        )
    return usable


def _well_formed(row: _Row, fmt: ChatFormat) -> bool:
    """Whether a typed row needs no field-by-field look.

    It has messages with known roles and content, weight 0 or 1 and only on assistant turns; an ultrachat row also
    has its prompt as text and its prompt_id.
    """
    if not row.messages:
        return False
    ultrachat = fmt == ChatFormat.ULTRACHAT
    if ultrachat and (row.prompt_id is None or memoryview(row.prompt)[:1] != b'"'):
        return False
    for m in row.messages:
        if m.role not in _ROLES or not m.content:
            return False
        if m.weight is not None and (m.role != "assistant" or m.weight not in (0, 1)):
            return False
    return True


def _dist(values: Sequence[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def validate_file(
    path: Path,
    *,
    min_rows: int = 1,
    counter: TokenCounter | None = None,
    seen_in_other_files: dict[int, tuple[str, int]] | None = None,
    fmt: ChatFormat | str | None = None,
    generation: bool = False,
) -> FileReport:
    """Check one file, streaming it.

    Args:
        path: A jsonl, json (array), parquet or csv file of chat data.
        min_rows: The least number of usable rows (10 for a training file).
        counter: Count tokens with a model's template and check truncation at its ``max_seq_length``.
        seen_in_other_files: Shared between the files of one call: conversation fingerprint -> (path, line), to
            warn about rows that are in two files (a test row that is also a training row).
        fmt: The chat format to read the rows in; None detects it from the rows' keys.
        generation: The file is a generation test: each row is a prompt to answer, ending on a user turn or on
            the reference answer after one (no assistant turn is needed).
    """
    ff = file_format(path, fmt)
    report = FileReport(path=str(path), format=ff.format.value, format_source=ff.source)
    scan = _FileScan(report, counter, seen_in_other_files, ff, generation)
    for rec in iter_records(path, lazy=True):
        scan.row(rec)
    return scan.finish(min_rows)


@dataclass
class _FileScan:
    """What one pass over a file accumulates: the report's issues, and the counts and lengths of its stats."""

    report: FileReport
    counter: TokenCounter | None
    seen_in_other_files: dict[int, tuple[str, int]] | None
    ff: FileFormat
    generation: bool = False
    turns: array[int] = field(default_factory=lambda: array("l"))
    chars: array[int] = field(default_factory=lambda: array("l"))
    tokens: array[int] = field(default_factory=lambda: array("l"))
    roles: Counter[str] = field(default_factory=Counter)
    first_prompt_id: dict[str, int] = field(default_factory=dict)
    usable: int = 0
    dropped: int = 0
    references: int = 0
    over: int = 0
    lose_all: int = 0

    def row(self, rec: Record) -> None:
        """Check one row and count it."""
        self.report.rows += 1
        rec, conv, prompt_id = self._decode(rec)
        if isinstance(prompt_id, str):
            self._prompt_id(rec.line, prompt_id)
        if conv is None:
            return
        folds = self.counter.folds_system if self.counter else False
        if not _conversation_problems(rec.line, conv, self.report, folds, self.generation):
            self.dropped += len(conv.turns) < 2 and not self.generation
            return
        turns = conv.turns
        self.usable += 1
        self.references += self.generation and turns[-1].role == "assistant"
        self.turns.append(len(turns))
        self.chars.append(sum(len(t.content) for t in turns))
        self.roles.update(t.role for t in turns)
        if self.seen_in_other_files is not None:
            self._other_files(rec.line, conv, self.seen_in_other_files)
        if self.counter is not None:
            self._tokens(rec.line, conv, self.counter)

    def _decode(self, rec: Record) -> tuple[Record, Converted | None, Any]:
        """(record, its conversation or None when unusable, its prompt_id): the fast typed decoder first."""
        if rec.raw is not None and self.ff.format in MESSAGE_FORMATS:
            try:
                row = _ROW.decode(rec.raw)
            except (msgspec.DecodeError, UnicodeDecodeError):
                pass  # not the happy shape: decode generically and say exactly what is wrong
            else:
                if _well_formed(row, self.ff.format):
                    return rec, Converted(row.messages), row.prompt_id
        rec = decode(rec)
        if rec.error_code:
            self.report.errors.append(Issue(rec.line, rec.error_code, "", f"{rec.error}; fix or remove this line"))
            return rec, None, None
        conv, findings = convert(rec.value, self.ff)
        self.report.errors += [Issue(rec.line, f.code, f.field, f.message) for f in findings]
        return rec, conv, rec.value.get("prompt_id") if isinstance(rec.value, dict) else None

    def _prompt_id(self, line: int, prompt_id: str) -> None:
        if prompt_id in self.first_prompt_id:
            message = f"same prompt_id as line {self.first_prompt_id[prompt_id]}"
            self.report.warnings.append(Issue(line, "duplicate_prompt_id", "prompt_id", message))
        else:
            self.first_prompt_id[prompt_id] = line

    def _other_files(self, line: int, conv: Converted, seen: dict[int, tuple[str, int]]) -> None:
        fingerprint = hash(tuple((t.role, t.content) for t in conv.turns))
        other = seen.get(fingerprint)
        if other is None:
            seen[fingerprint] = (self.report.path, line)
        elif other[0] != self.report.path:
            message = (
                f"the same conversation is in {other[0]}:{other[1]}; a test row seen in training inflates test metrics"
            )
            self.report.warnings.append(Issue(line, "row_in_other_file", conv.whole, message))

    def _tokens(self, line: int, conv: Converted, counter: TokenCounter) -> None:
        count = counter.count(conv.messages())
        self.tokens.append(count.tokens)
        if count.over_limit:
            self.over += 1
            message = f"{count.tokens} tokens; truncated to {counter.max_seq_length}"
            self.report.warnings.append(Issue(line, "over_max_seq_length", conv.whole, message))
        if count.loses_all_assistant_tokens:
            self.lose_all += 1
            message = (
                f"truncation to {counter.max_seq_length} tokens leaves no assistant token: the job will "
                "leave this row out; raise max_seq_length or shorten the conversation"
            )
            self.report.warnings.append(Issue(line, "no_assistant_tokens_after_truncation", conv.whole, message))

    def finish(self, min_rows: int) -> FileReport:
        """The file-level errors (empty, too few usable rows) and the stats; return the report."""
        report = self.report
        if report.rows == 0:
            report.errors.append(Issue(1, "empty_file", "", "the file holds no rows; add conversations"))
        elif self.usable < min_rows:
            message = f"{self.usable} usable row(s); at least {min_rows} are needed: add rows or fix the listed ones"
            report.errors.append(Issue(1, "too_few_rows", "", message))
        report.stats = {
            "rows": report.rows,
            "usable_rows": self.usable,
            "dropped_rows": self.dropped,
            "turns": _dist(self.turns),
            "characters": _dist(self.chars),
            "roles": dict(self.roles),
        }
        if self.generation:
            # Rows that end on an assistant turn: the reference answer the evaluation scores against.
            report.stats["rows_with_reference"] = self.references
        if self.counter is not None:
            report.stats["tokens"] = _dist(self.tokens)
            report.stats["truncation"] = {
                "max_seq_length": self.counter.max_seq_length,
                "rows_over": self.over,
                "rows_losing_all_assistant_tokens": self.lose_all,
            }
        return report


def validate_files(
    paths: Sequence[Path],
    *,
    min_rows: int = 1,
    counter: TokenCounter | None = None,
    min_rows_by_path: dict[str, int] | None = None,
    fmt: ChatFormat | str | None = None,
    generation_paths: Sequence[Path] = (),
) -> list[FileReport]:
    """Validate several files together: each on its own, plus rows that appear in more than one of them.

    Args:
        paths: The files.
        min_rows: The least number of usable rows in each, unless ``min_rows_by_path`` names the file.
        counter: Counts tokens with a model's chat template, when given.
        min_rows_by_path: The least number of usable rows of some files, by path.
        fmt: The chat format of every file; None detects each file's.
        generation_paths: The files that are generation tests (prompts, with or without a reference answer).
    """
    seen: dict[int, tuple[str, int]] = {}
    generation = {str(p) for p in generation_paths}
    return [
        validate_file(
            p,
            min_rows=(min_rows_by_path or {}).get(str(p), min_rows),
            counter=counter,
            seen_in_other_files=seen,
            fmt=fmt,
            generation=str(p) in generation,
        )
        for p in paths
    ]
