"""Preference data (DPO): rows of a prompt, a preferred and a non-preferred answer, read and validated.

Two formats, detected per row from its keys (or given):

- ``openai_preference``: OpenAI's DPO fine-tuning rows, ``{"input": {"messages": [...]}, "preferred_output":
  [{"role": "assistant", "content": ...}], "non_preferred_output": [...]}``;
- ``prompt_chosen_rejected``: TRL's and most datasets' ``{"prompt", "chosen", "rejected"}``, each a string or a list
  of messages. A ``chosen``/``rejected`` list may hold the whole conversation (prompt turns, then the answer, as
  Anthropic HH and UltraFeedback do): the turns it shares with the prompt are the prompt; without a ``prompt`` key,
  the turns the two sides share are.

Every row becomes a :class:`PreferencePair` in TRL's conversational preference shape (``prompt`` messages ending on
a user turn; ``chosen`` and ``rejected`` one assistant message each), which its DPO trainer tokenizes with the model's
chat template. Every bad row is reported by line and code, as the chat data's are (chattune.data.validate):
``invalid_json``, ``invalid_encoding``, ``data_type`` (a row that is not an object), ``unknown_format``,
``missing_prompt``, ``missing_side`` (a side absent or empty), ``invalid_message`` (a turn without a role or text
content), ``prompt_not_user_last``, ``answer_not_assistant``, ``identical_sides``, ``too_few_rows``, and with a
model's tokenizer ``too_long`` (the prompt and an answer exceed the model's context).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chattune.data.formats import Record, iter_records
from chattune.data.tokens import template_length
from chattune.data.validate import FileReport, Issue

PREFERENCE_FORMATS = ("openai_preference", "prompt_chosen_rejected")
Messages = list[dict[str, str]]


@dataclass
class PreferencePair:
    """One preference row as TRL's DPO trainer takes it (conversational)."""

    line: int
    format: str  # one of PREFERENCE_FORMATS
    prompt: Messages
    chosen: Messages
    rejected: Messages

    def to_row(self) -> dict[str, Messages]:
        """The row for a ``datasets.Dataset``: prompt, chosen, rejected."""
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


class RowError(ValueError):
    """A row that cannot be read as a preference pair: its code and the field concerned."""

    def __init__(self, code: str, field: str, message: str):
        super().__init__(message)
        self.code, self.field = code, field


def row_format(value: Any) -> str:
    """The preference format of one decoded row, from its keys.

    Raises:
        RowError: The row is not an object, or has neither format's keys.
    """
    if not isinstance(value, dict):
        raise RowError("data_type", "", f"a row must be a JSON object, not {type(value).__name__}")
    if {"preferred_output", "non_preferred_output"} & value.keys() or "input" in value:
        return "openai_preference"
    if {"chosen", "rejected"} & value.keys():
        return "prompt_chosen_rejected"
    raise RowError(
        "unknown_format",
        "",
        f"keys {sorted(value)} are neither OpenAI's preference format (input, preferred_output, "
        "non_preferred_output) nor prompt/chosen/rejected",
    )


def to_pair(line: int, value: Any) -> PreferencePair:
    """One decoded row as a preference pair.

    Raises:
        RowError: What is wrong with the row, with its code and field.
    """
    fmt = row_format(value)
    if fmt == "openai_preference":
        given = value.get("input")
        if not isinstance(given, dict) or not given.get("messages"):
            raise RowError("missing_prompt", "input.messages", "input.messages must be a non-empty list of messages")
        prompt = _messages(given["messages"], "input.messages")
        sides = [_side(value, key, prompt_turns=[]) for key in ("preferred_output", "non_preferred_output")]
        chosen, rejected = sides
    else:
        given_prompt = _prompt(value)
        chosen_turns = _turns(value, "chosen")
        rejected_turns = _turns(value, "rejected")
        if given_prompt is not None:
            prompt = given_prompt
        else:  # the implicit prompt: the turns both sides share
            shared = 0
            while (
                shared < min(len(chosen_turns), len(rejected_turns)) - 1
                and chosen_turns[shared] == rejected_turns[shared]
            ):
                shared += 1
            if shared == 0:
                raise RowError("missing_prompt", "prompt", "no prompt key, and chosen and rejected share no turn")
            prompt = chosen_turns[:shared]
        chosen = _answer(chosen_turns, prompt, "chosen")
        rejected = _answer(rejected_turns, prompt, "rejected")
    if prompt[-1]["role"] != "user":
        raise RowError(
            "prompt_not_user_last", "prompt", f"the prompt must end on a user turn, not {prompt[-1]['role']!r}"
        )
    if chosen[0]["content"].strip() == rejected[0]["content"].strip():
        raise RowError("identical_sides", "chosen", "the preferred and non-preferred answers are the same text")
    return PreferencePair(line, fmt, prompt, chosen, rejected)


def _messages(value: Any, field: str) -> Messages:
    """A list of {role, content} turns with text content."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RowError("missing_side" if field in ("chosen", "rejected") else "invalid_message", field, "empty")
    out = []
    for i, turn in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("role"), str):
            raise RowError("invalid_message", where, "each turn must be an object with a role")
        content = turn.get("content")
        if not isinstance(content, str) or not content.strip():
            raise RowError("invalid_message", f"{where}.content", "each turn must have non-empty text content")
        out.append({"role": turn["role"], "content": content})
    return out


def _prompt(value: dict[str, Any]) -> Messages | None:
    if "prompt" not in value or value["prompt"] is None:
        return None
    if isinstance(value["prompt"], str) and not value["prompt"].strip():
        raise RowError("missing_prompt", "prompt", "the prompt is empty")
    return _messages(value["prompt"], "prompt")


def _turns(value: dict[str, Any], key: str) -> Messages:
    side = value.get(key)
    if side is None or side == "" or side == []:
        raise RowError("missing_side", key, f"{key} is missing or empty: a pair needs both answers")
    if isinstance(side, str):
        return [{"role": "assistant", "content": side}]
    return _messages(side, key)


def _side(value: dict[str, Any], key: str, prompt_turns: Messages) -> Messages:
    return _answer(_turns(value, key), prompt_turns, key)


def _answer(turns: Messages, prompt: Messages, field: str) -> Messages:
    """The one assistant answer of a side: the turns after the prompt (a side may repeat the prompt's turns)."""
    if len(turns) > len(prompt) and turns[: len(prompt)] == prompt:
        turns = turns[len(prompt) :]
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        roles = [t["role"] for t in turns]
        raise RowError(
            "answer_not_assistant", field, f"{field} must be one assistant answer after the prompt, got roles {roles}"
        )
    return turns


def iter_pairs(path: Path) -> Iterator[PreferencePair | tuple[Record, RowError]]:
    """Each row of ``path`` as a pair, or the row with what is wrong with it."""
    for rec in iter_records(path):
        if rec.error_code:
            yield rec, RowError(rec.error_code, "", rec.error or "unreadable row")
            continue
        try:
            yield to_pair(rec.line, rec.value)
        except RowError as exc:
            yield rec, exc


def read_pairs(path: str | Path) -> list[PreferencePair]:
    """The pairs of a validated file (rows that are not pairs are skipped: validation reported them)."""
    return [p for p in iter_pairs(Path(path)) if isinstance(p, PreferencePair)]


def validate_preferences(
    path: Path, *, min_rows: int = 1, tokenizer: Any = None, max_length: int | None = None
) -> FileReport:
    """Check a preference file, every row.

    Args:
        path: A jsonl, json, parquet or csv file of preference rows.
        min_rows: The least number of valid pairs (10 for a training file).
        tokenizer: With ``max_length``, each prompt and answer is rendered with the tokenizer's chat template and
            a pair longer than ``max_length`` tokens is an error (``too_long``).
        max_length: The model's context (or the job's max_seq_length).
    """
    report = FileReport(path=str(path), format="preference", format_source="detected from the rows' keys")
    formats: set[str] = set()
    pairs = 0
    for item in iter_pairs(path):
        report.rows += 1
        if not isinstance(item, PreferencePair):
            rec, exc = item
            report.errors.append(Issue(rec.line, exc.code, exc.field, str(exc)))
            continue
        if tokenizer is not None and max_length:
            longest = max(template_length(tokenizer, item.prompt + side) for side in (item.chosen, item.rejected))
            if longest > max_length:
                report.errors.append(
                    Issue(
                        item.line,
                        "too_long",
                        "chosen",
                        f"prompt and answer are {longest} tokens, over the model's {max_length}: shorten the row",
                    )
                )
                continue
        pairs += 1
        formats.add(item.format)
    if pairs < min_rows:
        report.errors.append(
            Issue(0, "too_few_rows", "", f"{pairs} valid pair(s); at least {min_rows} are needed for training")
        )
    report.stats = {"pairs": pairs, "formats": sorted(formats)}
    return report
