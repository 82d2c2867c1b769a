"""Tool calling: OpenAI's ``tools`` rendered by the model's own chat template, its calls read back by transformers.

- The tools go to the chat template (``apply_chat_template(..., tools=...)``), as every model documents its own
  tool format; a template that ignores them (it renders the same prompt with and without) cannot be asked to call a
  tool: a 400 naming ``tools``, never a silent drop.
- ``tool_choice: auto`` (the default with tools): the model answers freely, and transformers' response parsing
  (``tokenizer.parse_response``, with the parser TRL's ``add_response_schema`` knows for the model's template, or
  the tokenizer's own ``response_template``) reads its tool calls back; a template without a known parser is a 400
  too (its calls could not be read).
- ``tool_choice: required`` or a named function: the answer is held, by a grammar (chattune.serving.structured), to
  a JSON array of ``{"name", "parameters"}`` objects, each ``parameters`` following its tool's schema, as vLLM
  does it; that array becomes the ``tool_calls``. ``none``: the tools are shown to the model, no call is read back.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from chattune.errors import UserError


def add_parser(tokenizer: Any) -> bool:
    """Give ``tokenizer`` the response parser of its chat template when TRL knows it; whether it has one now."""
    if getattr(tokenizer, "response_template", None) or getattr(tokenizer, "response_schema", None):
        return True
    try:
        from trl.chat_template_utils import add_response_schema

        add_response_schema(tokenizer)
    except (ValueError, ImportError):  # a template TRL does not know: no parser
        return False
    return True


def check_rendered(tokenizer: Any, conversation: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """Refuse tools that this model's chat template does not show to the model.

    Raises:
        UserError: 400 naming ``tools``.
    """
    with_tools = tokenizer.apply_chat_template(conversation, tools=tools, add_generation_prompt=True, tokenize=False)
    without = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    if with_tools == without:
        raise UserError(
            "tools: this model's chat template does not render tools, so it cannot be asked to call one",
            remedy="Deploy a model whose chat template renders tools (Qwen2.5, Llama 3.1, ...), or send no tools.",
            param="tools",
        )


def forced_schema(tools: list[dict[str, Any]], name: str | None, parallel: bool = True) -> dict[str, Any]:
    """The JSON schema of a forced answer: an array of calls.

    Only of ``name``, and one, when a function is named; one too without ``parallel`` (``parallel_tool_calls: false``).

    Raises:
        UserError: ``name`` is not one of the tools (400 naming ``tool_choice``).
    """
    functions = {t["function"]["name"]: t["function"] for t in tools}
    if name is not None and name not in functions:
        raise UserError(
            f"tool_choice names {name!r}, which is not one of the tools ({', '.join(functions)})",
            param="tool_choice",
        )
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": [fn]},
                "parameters": functions[fn].get("parameters") or {"type": "object"},
            },
            "required": ["name", "parameters"],
            "additionalProperties": False,
        }
        for fn in ([name] if name else functions)
    ]
    item = calls[0] if len(calls) == 1 else {"anyOf": calls}
    return {"type": "array", "items": item, "minItems": 1, **({"maxItems": 1} if name or not parallel else {})}


def call(name: str, arguments: Any) -> dict[str, Any]:
    """One OpenAI tool call (``arguments`` as the JSON text OpenAI sends)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function", "function": {"name": name, "arguments": text}}


def forced_calls(text: str) -> list[dict[str, Any]]:
    """The tool calls of a forced answer (the grammar's JSON array); none when it was cut short (``length``)."""
    try:
        items = json.loads(text)
    except json.JSONDecodeError:
        return []
    return [call(item["name"], item["parameters"]) for item in items]


def parsed_calls(tokenizer: Any, text: str, prompt: str) -> tuple[str | None, list[dict[str, Any]]]:
    """The content and tool calls of a free answer (after ``prompt``), as the model's response parser reads them."""
    message = tokenizer.parse_response(text, prefix=prompt)
    calls = [
        call(c["function"]["name"], c["function"].get("arguments", {}))
        for c in message.get("tool_calls") or []
        if c.get("function", {}).get("name")
    ]
    content = message.get("content")
    return (content or None) if calls else (content if content is not None else text), calls
