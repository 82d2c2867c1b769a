"""A data file read as conversations: each row converted into messages, with the file and line it came from.

The job's steps read their files through here after the validate step has checked them; a row that still cannot be
converted (the file changed in between) stops the step with its ``file:line``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chattune.data.chat_formats import ChatFormat, Finding, convert, file_format
from chattune.data.formats import iter_records
from chattune.errors import DataError


@dataclass(frozen=True)
class Conversation:
    """One row as chat messages (``role``, ``content``, and ``weight`` where the row gave one), and where it is."""

    path: str
    line: int
    messages: list[dict[str, Any]]

    @property
    def where(self) -> str:
        """``file:line`` of the row."""
        return f"{self.path}:{self.line}"


def read_conversations(path: str | Path, fmt: ChatFormat | str | None = None) -> list[Conversation]:
    """Every row of a data file as a conversation, in the file's chat format (``fmt``, or detected).

    Raises:
        DataError: A row cannot be read or converted; the message names its file, line and field.
    """
    path = Path(path)
    ff = file_format(path, fmt)
    out: list[Conversation] = []
    for rec in iter_records(path):
        if rec.error_code:
            conv, findings = None, [Finding(rec.error_code, "", rec.error or "")]
        else:
            conv, findings = convert(rec.value, ff)
        if conv is None:
            first = findings[0]
            raise DataError(
                f"{path}:{rec.line}: {first.field or '-'}: {first.message} [{first.code}]",
                remedy=f"See every problem with `chattune data validate {path}`, fix them, and run again.",
            )
        out.append(Conversation(str(path), rec.line, conv.messages()))
    return out


@dataclass(frozen=True)
class GenerationCase:
    """A generation test row: the conversation to answer, and the reference answer when the row ends on one."""

    line: int
    prompt: list[dict[str, str]]
    reference: str | None


def generation_case(conversation: Conversation) -> GenerationCase | None:
    """The row as a prompt to answer, and its reference answer when it has one.

    A trailing assistant turn is the reference (Azure's evaluation) and is left out of the prompt; a row that ends
    on a user turn (ultrachat_200k's test_gen) is answered as it is, with no reference.

    Returns:
        The case, or None for a row with nothing to answer (it ends on a system turn, or is one assistant turn).
    """
    messages = [{"role": m["role"], "content": m["content"]} for m in conversation.messages]
    if len(messages) >= 2 and messages[-1]["role"] == "assistant":
        return GenerationCase(conversation.line, messages[:-1], messages[-1]["content"])
    if messages and messages[-1]["role"] == "user":
        return GenerationCase(conversation.line, messages, None)
    return None
