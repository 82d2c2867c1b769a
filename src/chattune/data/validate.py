"""Validate chat data files, reporting every problem at once with file, line, field and what to do.

Error codes follow OpenAI's fine-tuning data checks where they fit (``data_type``, ``missing_messages_list``,
``message_missing_key``, ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``,
``example_missing_assistant_message``) and chattune's own otherwise (``invalid_json``, ``invalid_encoding``,
``invalid_parquet``, ``empty_file``, ``too_few_rows``).

Warnings never stop a job: ``too_few_messages`` (the row is dropped by preprocess, as Azure does, and counted),
``missing_user_message``, ``system_not_first``, ``system_folded`` (the model's template has no system role),
``duplicate_prompt_id``, ``row_in_other_file`` (e.g. a test row that is also in train), and with a model:
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
from typing import Any, Literal

import msgspec

from chattune.data.formats import Record, decode, iter_records
from chattune.data.tokens import TokenCounter

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
# Azure's preprocess refuses fewer than 10 training rows.
MIN_TRAIN_ROWS = 10


class _Message(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None
    weight: int | None = None


class _Row(msgspec.Struct):
    messages: list[_Message]
    prompt_id: str | None = None


_ROW = msgspec.json.Decoder(_Row)


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


def _structure_problems(rec: Record, report: FileReport) -> list[tuple[str, str]] | None:
    """Field-by-field checks of a row that the typed decoder refused; returns (role, content) pairs or None."""
    where = rec.line
    if rec.error_code:
        report.errors.append(Issue(where, rec.error_code, "", f"{rec.error}; fix or remove this line"))
        return None
    row = rec.value
    if not isinstance(row, dict):
        report.errors.append(Issue(where, "data_type", "", "each row must be a JSON object with a `messages` list"))
        return None
    messages = row.get("messages")
    if not isinstance(messages, list):
        what = "missing" if messages is None else f"a {type(messages).__name__}, not a list"
        report.errors.append(
            Issue(where, "missing_messages_list", "messages", f"`messages` is {what}; give a list of messages")
        )
        return None
    ok = True
    pairs: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            report.errors.append(Issue(where, "data_type", path, "each message must be an object with role, content"))
            ok = False
            continue
        for key in ("role", "content"):
            if key not in msg:
                report.errors.append(
                    Issue(where, "message_missing_key", f"{path}.{key}", f"message has no `{key}`; add it")
                )
                ok = False
        for key in sorted(set(msg) - MESSAGE_KEYS):
            allowed = ", ".join(sorted(MESSAGE_KEYS))
            report.errors.append(
                Issue(where, "message_unrecognized_key", f"{path}.{key}", f"unknown key `{key}`; allowed: {allowed}")
            )
            ok = False
        role = msg.get("role")
        if "role" in msg and role not in ROLES:
            report.errors.append(
                Issue(
                    where,
                    "unrecognized_role",
                    f"{path}.role",
                    f"role {role!r} is not one of {', '.join(ROLES)}; use one of them",
                )
            )
            ok = False
        content = msg.get("content")
        if "content" in msg and not isinstance(content, str):
            report.errors.append(
                Issue(where, "missing_content", f"{path}.content", "content must be a string; give the text")
            )
            ok = False
        if ok:
            pairs.append((str(role), str(content)))
    return pairs if ok else None


def _conversation_problems(line: int, pairs: Sequence[tuple[str, str]], report: FileReport, folds_system: bool) -> bool:
    """Checks on a well-formed conversation; True when the row will be trained on."""
    roles = [r for r, _ in pairs]
    if len(pairs) < 2:
        report.warnings.append(
            Issue(
                line,
                "too_few_messages",
                "messages",
                f"{len(pairs)} message(s): preprocess drops rows with fewer than 2 (as Azure does); it is counted",
            )
        )
        return False
    usable = True
    if "assistant" not in roles:
        report.errors.append(
            Issue(
                line,
                "example_missing_assistant_message",
                "messages",
                "no assistant message to learn from; add one or remove the row",
            )
        )
        usable = False
    for i, (role, content) in enumerate(pairs):
        if role == "assistant" and not content.strip():
            report.errors.append(
                Issue(line, "missing_content", f"messages[{i}].content", "assistant content is empty; give the answer")
            )
            usable = False
    if "user" not in roles:
        report.warnings.append(Issue(line, "missing_user_message", "messages", "no user message"))
    if "system" in roles[1:]:
        i = roles.index("system", 1)
        report.warnings.append(
            Issue(line, "system_not_first", f"messages[{i}].role", "a system message that is not first")
        )
    elif folds_system and roles[0] == "system":
        report.warnings.append(
            Issue(
                line,
                "system_folded",
                "messages[0].role",
                "the model's chat template has no system role: this message will be folded into the first user message",
            )
        )
    return usable


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
) -> FileReport:
    """Check one file, streaming it.

    Args:
        path: A jsonl, json (array), parquet or csv file with a ``messages`` column.
        min_rows: The least number of usable rows (10 for a training file).
        counter: Count tokens with a model's template and check truncation at its ``max_seq_length``.
        seen_in_other_files: Shared between the files of one call: conversation fingerprint -> (path, line), to
            warn about rows that are in two files (a test row that is also a training row).
    """
    scan = _FileScan(FileReport(path=str(path)), counter, seen_in_other_files)
    for rec in iter_records(path, lazy=True):
        scan.row(rec)
    return scan.finish(min_rows)


def _decode_row(rec: Record, report: FileReport) -> tuple[Record, Sequence[tuple[str, str]] | None, Any]:
    """(record, its (role, content) pairs or None when unusable, its prompt_id): the fast typed decoder first."""
    if rec.raw is not None:
        try:
            row = _ROW.decode(rec.raw)
            if row.prompt_id is not None or not isinstance(rec.value, dict):
                return rec, [(m.role, m.content) for m in row.messages], row.prompt_id
            return rec, [(m.role, m.content) for m in row.messages], rec.value.get("prompt_id")
        except (msgspec.DecodeError, UnicodeDecodeError):
            rec = decode(rec)  # not the happy shape: decode generically and say exactly what is wrong
    pairs = _structure_problems(rec, report)
    return rec, pairs, rec.value.get("prompt_id") if isinstance(rec.value, dict) else None


@dataclass
class _FileScan:
    """What one pass over a file accumulates: the report's issues, and the counts and lengths of its stats."""

    report: FileReport
    counter: TokenCounter | None
    seen_in_other_files: dict[int, tuple[str, int]] | None
    turns: array[int] = field(default_factory=lambda: array("l"))
    chars: array[int] = field(default_factory=lambda: array("l"))
    tokens: array[int] = field(default_factory=lambda: array("l"))
    roles: Counter[str] = field(default_factory=Counter)
    first_prompt_id: dict[str, int] = field(default_factory=dict)
    usable: int = 0
    dropped: int = 0
    over: int = 0
    lose_all: int = 0

    def row(self, rec: Record) -> None:
        """Check one row and count it."""
        self.report.rows += 1
        rec, pairs, prompt_id = _decode_row(rec, self.report)
        if isinstance(prompt_id, str):
            self._prompt_id(rec.line, prompt_id)
        if pairs is None:
            return
        if not _conversation_problems(
            rec.line, pairs, self.report, self.counter.folds_system if self.counter else False
        ):
            self.dropped += len(pairs) < 2
            return
        self.usable += 1
        self.turns.append(len(pairs))
        self.chars.append(sum(len(c) for _, c in pairs))
        self.roles.update(r for r, _ in pairs)
        if self.seen_in_other_files is not None:
            self._other_files(rec.line, pairs, self.seen_in_other_files)
        if self.counter is not None:
            self._tokens(rec.line, pairs, self.counter)

    def _prompt_id(self, line: int, prompt_id: str) -> None:
        if prompt_id in self.first_prompt_id:
            message = f"same prompt_id as line {self.first_prompt_id[prompt_id]}"
            self.report.warnings.append(Issue(line, "duplicate_prompt_id", "prompt_id", message))
        else:
            self.first_prompt_id[prompt_id] = line

    def _other_files(self, line: int, pairs: Sequence[tuple[str, str]], seen: dict[int, tuple[str, int]]) -> None:
        fingerprint = hash(tuple(pairs))
        other = seen.get(fingerprint)
        if other is None:
            seen[fingerprint] = (self.report.path, line)
        elif other[0] != self.report.path:
            message = (
                f"the same conversation is in {other[0]}:{other[1]}; a test row seen in training inflates test metrics"
            )
            self.report.warnings.append(Issue(line, "row_in_other_file", "messages", message))

    def _tokens(self, line: int, pairs: Sequence[tuple[str, str]], counter: TokenCounter) -> None:
        count = counter.count([{"role": r, "content": c} for r, c in pairs])
        self.tokens.append(count.tokens)
        if count.over_limit:
            self.over += 1
            message = f"{count.tokens} tokens; truncated to {counter.max_seq_length}"
            self.report.warnings.append(Issue(line, "over_max_seq_length", "messages", message))
        if count.loses_all_assistant_tokens:
            self.lose_all += 1
            message = (
                f"truncation to {counter.max_seq_length} tokens leaves no assistant token: the job will "
                "leave this row out; raise max_seq_length or shorten the conversation"
            )
            self.report.warnings.append(Issue(line, "no_assistant_tokens_after_truncation", "messages", message))

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
) -> list[FileReport]:
    """Validate several files together: each on its own, plus rows that appear in more than one of them."""
    seen: dict[int, tuple[str, int]] = {}
    return [
        validate_file(
            p, min_rows=(min_rows_by_path or {}).get(str(p), min_rows), counter=counter, seen_in_other_files=seen
        )
        for p in paths
    ]
