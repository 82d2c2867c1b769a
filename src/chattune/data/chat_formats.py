"""The chat data formats people have, detected by the keys of their rows and converted into messages.

- ``openai``: ``messages`` (OpenAI / Azure chat fine-tuning), read as given;
- ``ultrachat``: ``prompt``, ``prompt_id``, ``messages`` (ultrachat_200k), read as given;
- ``sharegpt``: ``conversations`` of ``{from, value}`` turns and an optional ``system`` (LLaMA-Factory, Axolotl);
- ``alpaca``: ``instruction``, ``input``, ``output``, optional ``system`` and ``history`` (LLaMA-Factory): system,
  the history's [user, assistant] pairs, user = instruction + newline + input, assistant = output;
- ``dolly``: ``instruction``, ``context``, ``response`` (databricks-dolly-15k): alpaca with context as the input and
  response as the output;
- ``prompt_completion``: ``prompt``, ``completion``, two strings (user, assistant) or two lists of messages (TRL).

A file holds one format: the first row that has a format's keys decides it (or ``--format`` / the job's
``data.format`` forces one), and a row in another format is an error, as is a row missing a required key. Columns
a format does not read are carried through (``data import`` keeps them beside ``messages``), never trained on.
Every problem names the row's field (``conversations[2].from``, ``history[0][1]``, ``output``) so the validator can
report it at ``file:line``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, NamedTuple

import msgspec

from chattune.data.formats import iter_records


class ChatFormat(StrEnum):
    """The row formats chattune reads (``--format``, the job's ``data.format``)."""

    OPENAI = "openai"
    ULTRACHAT = "ultrachat"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    DOLLY = "dolly"
    PROMPT_COMPLETION = "prompt_completion"


# The keys that identify a format, most specific first: a row has all of them. ultrachat is openai with two more
# columns, so an openai file accepts ultrachat rows (not the other way round).
SIGNATURES: tuple[tuple[ChatFormat, tuple[str, ...]], ...] = (
    (ChatFormat.ULTRACHAT, ("messages", "prompt", "prompt_id")),
    (ChatFormat.OPENAI, ("messages",)),
    (ChatFormat.SHAREGPT, ("conversations",)),
    (ChatFormat.ALPACA, ("instruction", "output")),
    (ChatFormat.DOLLY, ("instruction", "response")),
    (ChatFormat.PROMPT_COMPLETION, ("prompt", "completion")),
)
KEYS = dict(SIGNATURES)
MESSAGE_FORMATS = frozenset({ChatFormat.OPENAI, ChatFormat.ULTRACHAT})

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
# ShareGPT's role names as LLaMA-Factory reads them (human, gpt, system), and the user/assistant names Axolotl also
# maps; the values are OpenAI's roles.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
# `weight` appears in ShareGPT exports too (OpenHermes-2.5 carries `"weight": null`); it means what OpenAI's does.
SHAREGPT_KEYS = frozenset({"from", "value", "weight"})
TOOL_ROLES = frozenset({"function_call", "observation", "tool", "function", "tool_call", "tool_response"})
# Columns each format turns into messages; every other column is carried through.
CONSUMED: dict[ChatFormat, frozenset[str]] = {
    ChatFormat.OPENAI: frozenset(),
    ChatFormat.ULTRACHAT: frozenset(),
    ChatFormat.SHAREGPT: frozenset({"conversations", "system"}),
    ChatFormat.ALPACA: frozenset({"instruction", "input", "output", "system", "history"}),
    ChatFormat.DOLLY: frozenset({"instruction", "context", "response"}),
    ChatFormat.PROMPT_COMPLETION: frozenset({"prompt", "completion"}),
}


class Turn(msgspec.Struct, forbid_unknown_fields=True):
    """One message of a converted row; ``weight`` is OpenAI's per-message weight (None: not given).

    A struct, not a tuple: the validator's typed decoder reads an openai row's messages straight into turns (``name``
    is OpenAI's participant name, kept there and not used).
    """

    role: str
    content: str
    weight: int | None = None
    name: str | None = None


class Finding(NamedTuple):
    """A problem with a row: an error code, the field it is in, and what is wrong and what to do."""

    code: str
    field: str
    message: str


def messages_field(i: int, part: str) -> str:
    """The field of message ``i``'s ``part`` (role or content) in a ``messages`` row."""
    return f"messages[{i}].{part}"


@dataclass
class Converted:
    """A row as messages: its turns, and where in the row each turn's role and content came from."""

    turns: list[Turn]
    field: Callable[[int, str], str] = messages_field
    # The row's field that holds the conversation as a whole, for issues about all of it ("" for column formats).
    whole: str = "messages"

    def messages(self) -> list[dict[str, Any]]:
        """The turns as chat messages (``weight`` only where the row gave one)."""
        return [
            {"role": t.role, "content": t.content, **({} if t.weight is None else {"weight": t.weight})}
            for t in self.turns
        ]


@dataclass(frozen=True)
class FileFormat:
    """The format of one file and how it was decided: ``given``, ``detected`` from a row's keys, or ``default``."""

    format: ChatFormat
    how: Literal["given", "detected", "default"] = "given"
    line: int | None = None  # the row it was detected from

    @property
    def source(self) -> str:
        """How the format was decided, for reports: ``given``, ``detected from line N`` or ``default``."""
        return f"detected from line {self.line}" if self.how == "detected" else self.how

    def describe(self) -> str:
        """``alpaca (detected from line 1)``, for error messages."""
        if self.how == "default":
            return f"{self.format} (no row has a known format's keys)"
        return f"{self.format} ({self.source})"


def detect(row: Any) -> ChatFormat | None:
    """The format whose keys the row has, or None for a row that is not an object or has none of them."""
    if not isinstance(row, dict):
        return None
    for fmt, keys in SIGNATURES:
        if all(k in row for k in keys):
            return fmt
    return None


def detect_file(path: Path) -> FileFormat | None:
    """The format of the first row of ``path`` that has a format's keys (rows before it are read, not kept)."""
    for rec in iter_records(path):
        fmt = detect(rec.value) if rec.error_code is None else None
        if fmt is not None:
            return FileFormat(fmt, "detected", rec.line)
    return None


def file_format(path: Path, given: ChatFormat | str | None = None) -> FileFormat:
    """The format to read ``path`` in: ``given``, else detected; a file with no recognisable row reads as openai."""
    if given is not None:
        return FileFormat(ChatFormat(given))
    return detect_file(path) or FileFormat(ChatFormat.OPENAI, "default")


def convert(row: Any, ff: FileFormat) -> tuple[Converted | None, list[Finding]]:
    """The row's messages in file format ``ff``, or None with every problem found (field by field).

    Only the row's shape is checked here; what a conversation needs to be trained on (an assistant turn, enough
    messages) is the validator's.
    """
    if not isinstance(row, dict):
        return None, [Finding("data_type", "", f"each row must be a JSON object; {_what(ff)}")]
    found = detect(row)
    if found is not None and not _compatible(ff.format, found):
        remedy = (
            "drop --format (or the job's data.format) to read the file as it is, or convert the rows"
            if ff.how == "given"
            else "one format per file: convert the row, or split the file and import each part"
        )
        message = f"this row is {found} ({', '.join(KEYS[found])}) but the file is {ff.describe()}; {remedy}"
        return None, [Finding("mixed_formats", KEYS[found][0], message)]
    return _CONVERTERS[ff.format](row, ff)


def _compatible(file_format: ChatFormat, row_format: ChatFormat) -> bool:
    """Whether a row of ``row_format`` belongs in a file of ``file_format``.

    ultrachat rows are openai rows with two more columns; an ultrachat file's row without them is reported by the
    messages converter, key by key.
    """
    return row_format == file_format or {file_format, row_format} == set(MESSAGE_FORMATS)


def to_row(row: dict[str, Any], fmt: ChatFormat, converted: Converted) -> dict[str, Any]:
    """The canonical row: ``messages`` and every column the format did not turn into messages, in their order."""
    if fmt in MESSAGE_FORMATS:
        return row
    carried = {k: v for k, v in row.items() if k not in CONSUMED[fmt]}
    return {"messages": converted.messages(), **carried}


def _what(ff: FileFormat) -> str:
    return f"rows of {ff.describe()} need {', '.join(f'`{k}`' for k in KEYS[ff.format])}"


def _missing(ff: FileFormat, key: str, row: dict[str, Any]) -> Finding:
    have = ", ".join(sorted(map(str, row))) or "none"
    if ff.how == "default":
        formats = "; ".join(f"{f}: {', '.join(k)}" for f, k in SIGNATURES)
        message = (
            f"no `{key}`: the row's keys ({have}) match no known format ({formats}); convert the file, or give "
            "its format with --format"
        )
    else:
        message = f"no `{key}`: {_what(ff)} (this row has: {have}); add it"
    return Finding("missing_messages_list" if key == "messages" else "missing_field", key, message)


def _text(row: dict[str, Any], key: str, findings: list[Finding], *, required: bool) -> str | None:
    """A string column; a required one must hold text, an optional one may be absent, null or empty."""
    value = row.get(key)
    if value is None:
        if required:
            findings.append(Finding("missing_content", key, f"`{key}` is null; give the text"))
        return None
    if not isinstance(value, str):
        findings.append(Finding("data_type", key, f"`{key}` is a {type(value).__name__}; give a string"))
        return None
    if required and not value.strip():
        findings.append(Finding("missing_content", key, f"`{key}` is empty; give the text"))
    return value


def _check_weight(weight: Any, role: Any, field: str, findings: list[Finding]) -> int | None:
    """OpenAI's per-message weight: 0 (context, not trained) or 1, on assistant messages only."""
    if weight is None:
        return None
    if type(weight) is not int or weight not in (0, 1):
        findings.append(Finding("invalid_weight", field, f"weight {weight!r} must be 0 (not trained) or 1 (trained)"))
        return None
    if role != "assistant":
        message = "weight is allowed on assistant messages only (OpenAI's format); remove it"
        findings.append(Finding("invalid_weight", field, message))
        return None
    return weight


def _turn_list(
    items: Any,
    list_field: str,
    findings: list[Finding],
    *,
    role_key: str = "role",
    content_key: str = "content",
    roles: dict[str, str] | None = None,
    allowed: frozenset[str] = MESSAGE_KEYS,
) -> list[Turn]:
    """Check a list of messages (OpenAI's ``role``/``content`` or ShareGPT's ``from``/``value``), every problem."""
    turns: list[Turn] = []
    for i, msg in enumerate(items):
        path = f"{list_field}[{i}]"
        if not isinstance(msg, dict):
            keys = f"`{role_key}`, `{content_key}`"
            findings.append(Finding("data_type", path, f"each message must be an object with {keys}"))
            continue
        before = len(findings)
        for key in (role_key, content_key):
            if key not in msg:
                findings.append(Finding("message_missing_key", f"{path}.{key}", f"message has no `{key}`; add it"))
        for key in sorted(set(msg) - allowed, key=str):
            names = ", ".join(sorted(allowed))
            findings.append(
                Finding("message_unrecognized_key", f"{path}.{key}", f"unknown key `{key}`; allowed: {names}")
            )
        raw_role = msg.get(role_key)
        role = raw_role if roles is None else roles.get(raw_role) if isinstance(raw_role, str) else None
        if role_key in msg and role not in ROLES:
            valid = ", ".join(ROLES if roles is None else roles)
            hint = "; tool turns are not supported" if raw_role in TOOL_ROLES else ""
            message = f"role {raw_role!r} is not one of {valid}{hint}; use one of them"
            findings.append(Finding("unrecognized_role", f"{path}.{role_key}", message))
        content = msg.get(content_key)
        if content_key in msg:
            if not isinstance(content, str):
                message = f"{content_key} must be a string; give the text"
                findings.append(Finding("missing_content", f"{path}.{content_key}", message))
            elif not content:
                message = f"{content_key} is empty; give the text or remove the message"
                findings.append(Finding("missing_content", f"{path}.{content_key}", message))
        weight = _check_weight(msg.get("weight"), role, f"{path}.weight", findings)
        if len(findings) == before:
            turns.append(Turn(str(role), str(content), weight))
    return turns


def _messages(row: dict[str, Any], ff: FileFormat) -> tuple[Converted | None, list[Finding]]:
    findings: list[Finding] = []
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        if "messages" not in row or messages is None:
            return None, [_missing(ff, "messages", row)]
        what = "empty" if isinstance(messages, list) else f"a {type(messages).__name__}, not a list"
        return None, [Finding("missing_messages_list", "messages", f"`messages` is {what}; give a list of messages")]
    if ff.format == ChatFormat.ULTRACHAT:
        for key in ("prompt", "prompt_id"):
            if key not in row:
                missing = _missing(ff, key, row)
                message = f"{missing.message}, or read the file as plain messages with --format openai"
                findings.append(missing._replace(message=message))
            else:
                _text(row, key, findings, required=False)
    turns = _turn_list(messages, "messages", findings)
    return (None if findings else Converted(turns)), findings


def _sharegpt(row: dict[str, Any], ff: FileFormat) -> tuple[Converted | None, list[Finding]]:
    findings: list[Finding] = []
    conversations = row.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        what = "empty" if isinstance(conversations, list) else f"a {type(conversations).__name__}, not a list"
        message = f"`conversations` is {what}; give a list of {{from, value}} turns"
        return None, [Finding("missing_messages_list", "conversations", message)]
    system = _text(row, "system", findings, required=False)
    turns = _turn_list(
        conversations,
        "conversations",
        findings,
        role_key="from",
        content_key="value",
        roles=SHAREGPT_ROLES,
        allowed=SHAREGPT_KEYS,
    )
    if findings:
        return None, findings
    if system:
        if turns[0].role == "system":
            message = "a `system` column and a system turn first in `conversations`: keep one of them"
            return None, [Finding("duplicate_system", "system", message)]
        return Converted([Turn("system", system), *turns], _sharegpt_field(1), "conversations"), []
    return Converted(turns, _sharegpt_field(0), "conversations"), []


def _sharegpt_field(offset: int) -> Callable[[int, str], str]:
    def field(i: int, part: str) -> str:
        if i < offset:
            return "system"
        return f"conversations[{i - offset}].{'value' if part == 'content' else 'from'}"

    return field


def _alpaca(row: dict[str, Any], ff: FileFormat) -> tuple[Converted | None, list[Finding]]:
    dolly = ff.format == ChatFormat.DOLLY
    query_key, answer_key = ("context", "response") if dolly else ("input", "output")
    findings = [_missing(ff, key, row) for key in ("instruction", answer_key) if key not in row]
    if findings:
        return None, findings
    instruction = _text(row, "instruction", findings, required=False)
    query = _text(row, query_key, findings, required=False)
    answer = _text(row, answer_key, findings, required=True)
    system = None if dolly else _text(row, "system", findings, required=False)
    turns: list[Turn] = [Turn("system", system)] if system else []
    fields = ["system"] if system else []
    history = None if dolly else row.get("history")
    if history is not None:
        if not isinstance(history, list):
            message = "`history` must be a list of [instruction, answer] pairs (the turns before this one)"
            findings.append(Finding("data_type", "history", message))
        for k, pair in enumerate(history if isinstance(history, list) else []):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                message = "each `history` item is an [instruction, answer] pair"
                findings.append(Finding("data_type", f"history[{k}]", message))
                continue
            for part, (role, text) in enumerate(zip(("user", "assistant"), pair, strict=True)):
                where = f"history[{k}][{part}]"
                if not isinstance(text, str) or not text.strip():
                    findings.append(Finding("missing_content", where, f"{where} must be a non-empty string"))
                else:
                    turns.append(Turn(role, text))
                    fields.append(where)
    # LLaMA-Factory's rule: the user turn is the instruction and the input, joined by a newline, either may be empty.
    user = "\n".join(part for part in (instruction, query) if part)
    if not user.strip() and not any(f.field in ("instruction", query_key) for f in findings):
        message = f"`instruction` and `{query_key}` are both empty; give the instruction"
        findings.append(Finding("missing_content", "instruction", message))
    if findings:
        return None, findings
    turns += [Turn("user", user), Turn("assistant", str(answer))]
    fields += ["instruction", answer_key]
    return Converted(turns, lambda i, part: fields[i], ""), []


def _prompt_completion(row: dict[str, Any], ff: FileFormat) -> tuple[Converted | None, list[Finding]]:
    findings = [_missing(ff, key, row) for key in ("prompt", "completion") if key not in row]
    if findings:
        return None, findings
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, list) and isinstance(completion, list):  # TRL's conversational prompt-completion
        turns = _turn_list(prompt, "prompt", findings) + _turn_list(completion, "completion", findings)
        if not prompt or not completion:
            key = "prompt" if not prompt else "completion"
            findings.append(Finding("missing_content", key, f"`{key}` is an empty list; give its messages"))
        if findings:
            return None, findings
        n = len(prompt)
        return Converted(
            turns, lambda i, part: f"prompt[{i}].{part}" if i < n else f"completion[{i - n}].{part}", ""
        ), []
    if isinstance(prompt, list) or isinstance(completion, list):
        message = "`prompt` and `completion` are both strings or both lists of messages"
        return None, [Finding("data_type", "completion" if isinstance(prompt, list) else "prompt", message)]
    user, answer = _text(row, "prompt", findings, required=True), _text(row, "completion", findings, required=True)
    if findings or user is None or answer is None:
        return None, findings
    turns = [Turn("user", user), Turn("assistant", answer)]
    return Converted(turns, lambda i, part: ("prompt", "completion")[i], ""), []


_CONVERTERS: dict[ChatFormat, Callable[[dict[str, Any], FileFormat], tuple[Converted | None, list[Finding]]]] = {
    ChatFormat.OPENAI: _messages,
    ChatFormat.ULTRACHAT: _messages,
    ChatFormat.SHAREGPT: _sharegpt,
    ChatFormat.ALPACA: _alpaca,
    ChatFormat.DOLLY: _alpaca,
    ChatFormat.PROMPT_COMPLETION: _prompt_completion,
}
