"""Validate chat data files, reporting every problem at once with file, line, field and what to do.

Error codes follow OpenAI's fine-tuning data checks where they fit (``data_type``, ``missing_messages_list``,
``message_missing_key``, ``message_unrecognized_key``, ``unrecognized_role``, ``missing_content``,
``example_missing_assistant_message``) and chattune's own otherwise (``invalid_json``, ``invalid_encoding``,
``empty_file``, ``too_few_rows``, ``too_few_messages``).
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chattune.data.formats import Record, read_records

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = {"role", "content", "name", "weight"}
# Azure's preprocess refuses fewer than 10 training rows.
MIN_TRAIN_ROWS = 10


@dataclass
class Issue:
    line: int
    code: str
    field: str
    message: str


@dataclass
class FileReport:
    path: str
    rows: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def valid(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "rows": self.rows,
            "valid": self.valid,
            "errors": [asdict(e) for e in self.errors],
            "warnings": [asdict(w) for w in self.warnings],
            "stats": self.stats,
        }

    def summary(self, limit: int = 20) -> str:
        lines = [f"{self.path}:{e.line}: {e.field}: {e.message} [{e.code}]" for e in self.errors[:limit]]
        if len(self.errors) > limit:
            lines.append(f"... and {len(self.errors) - limit} more (see `chattune data validate {self.path} --json`)")
        return "\n".join(lines)


def _check_row(rec: Record, report: FileReport) -> list[dict[str, Any]] | None:
    """Append the row's errors and warnings; return its messages when the row is usable."""
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
    for i, msg in enumerate(messages):
        path = f"messages[{i}]"
        if not isinstance(msg, dict):
            report.errors.append(Issue(where, "data_type", path, "each message must be an object with role, content"))
            ok = False
            continue
        for key in ("role", "content"):
            if key not in msg:
                report.errors.append(Issue(where, "message_missing_key", f"{path}.{key}", f"message has no `{key}`"))
                ok = False
        for key in sorted(set(msg) - MESSAGE_KEYS):
            report.errors.append(
                Issue(
                    where,
                    "message_unrecognized_key",
                    f"{path}.{key}",
                    f"unknown key `{key}`; allowed: {', '.join(sorted(MESSAGE_KEYS))}",
                )
            )
            ok = False
        role = msg.get("role")
        if "role" in msg and role not in ROLES:
            report.errors.append(
                Issue(where, "unrecognized_role", f"{path}.role", f"role {role!r} is not one of {', '.join(ROLES)}")
            )
            ok = False
        content = msg.get("content")
        if "content" in msg and (not isinstance(content, str) or (role == "assistant" and not content.strip())):
            report.errors.append(
                Issue(where, "missing_content", f"{path}.content", "content must be a non-empty string")
            )
            ok = False
    if not ok:
        return None
    roles = [m["role"] for m in messages]
    if len(messages) < 2:
        report.errors.append(
            Issue(
                where,
                "too_few_messages",
                "messages",
                f"{len(messages)} message(s); a row needs a user and an assistant turn",
            )
        )
        return None
    if "assistant" not in roles:
        report.errors.append(
            Issue(where, "example_missing_assistant_message", "messages", "no assistant message to learn from")
        )
        return None
    if "user" not in roles:
        report.warnings.append(Issue(where, "missing_user_message", "messages", "no user message"))
    if "system" in roles[1:]:
        i = roles.index("system", 1)
        report.warnings.append(
            Issue(where, "system_not_first", f"messages[{i}].role", "a system message that is not first")
        )
    return messages


def _dist(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def validate_file(path: Path, *, min_rows: int = 1) -> FileReport:
    """Check one file; ``min_rows`` is the least number of usable rows (10 for a training file)."""
    report = FileReport(path=str(path))
    records = read_records(path)
    report.rows = len(records)
    usable: list[list[dict[str, Any]]] = []
    seen_ids: dict[str, int] = {}
    for rec in records:
        messages = _check_row(rec, report)
        if messages is not None:
            usable.append(messages)
        pid = rec.value.get("prompt_id") if isinstance(rec.value, dict) else None
        if isinstance(pid, str):
            if pid in seen_ids:
                report.warnings.append(
                    Issue(rec.line, "duplicate_prompt_id", "prompt_id", f"same prompt_id as line {seen_ids[pid]}")
                )
            else:
                seen_ids[pid] = rec.line
    if not records:
        report.errors.append(Issue(1, "empty_file", "", "the file holds no rows"))
    elif len(usable) < min_rows:
        report.errors.append(
            Issue(1, "too_few_rows", "", f"{len(usable)} usable row(s); at least {min_rows} are needed")
        )
    roles = Counter(m["role"] for msgs in usable for m in msgs)
    report.stats = {
        "rows": len(records),
        "usable_rows": len(usable),
        "turns": _dist([len(m) for m in usable]),
        "characters": _dist([sum(len(x["content"]) for x in m) for m in usable]),
        "roles": dict(roles),
    }
    return report
