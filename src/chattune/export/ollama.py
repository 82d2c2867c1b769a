"""An Ollama Modelfile for an exported GGUF: ``FROM`` the file, the chat template in Ollama's Go syntax, stop tokens.

Ollama's templates are Go templates, not Jinja. A Jinja chat template cannot be translated in general, so the
families chattune's catalog ships are recognised by their markers (ChatML, Phi-3, Llama 3) and written as the Go
template Ollama's own library uses for them. A template of another family gets no ``TEMPLATE`` line: Ollama then reads
``tokenizer.chat_template`` from the GGUF's metadata, where the export writes it, and picks its template from there.
A default system prompt the Jinja template adds on its own (SmolLM2's) is kept as ``SYSTEM``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TemplateFamily:
    """A chat-template family: the marker that identifies its Jinja template, its Go template and end-of-turn token."""

    name: str
    marker: str
    go_template: str
    end_of_turn: str
    system_block: str  # a regex for a system turn as the Jinja template renders it; group 1 is the prompt


FAMILIES = (
    TemplateFamily(
        "chatml",
        "<|im_start|>",
        "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n",
        "<|im_end|>",
        r"^<\|im_start\|>system\n(.*?)<\|im_end\|>",
    ),
    TemplateFamily(
        "phi3",
        "<|assistant|>",
        "{{- range .Messages }}<|{{ .Role }}|>\n{{ .Content }}<|end|>\n{{ end }}<|assistant|>\n",
        "<|end|>",
        r"^<\|system\|>\n(.*?)<\|end\|>",
    ),
    TemplateFamily(
        "llama3",
        "<|start_header_id|>",
        "{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>"
        "{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
        r"<\|start_header_id\|>system<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>",
    ),
)


def template_family(chat_template: str | None) -> TemplateFamily | None:
    """The family a Jinja chat template belongs to, None when chattune does not know it."""
    return next((f for f in FAMILIES if chat_template and f.marker in chat_template), None)


def modelfile(gguf_name: str, tokenizer: Any) -> tuple[str, str | None]:
    """The Modelfile for ``gguf_name`` (a file beside it) and the template family written (None: Ollama's choice).

    Args:
        gguf_name: The GGUF file's name, relative to the Modelfile.
        tokenizer: The exported model's tokenizer (its chat template and special tokens).
    """
    family = template_family(tokenizer.chat_template)
    lines = [f"FROM ./{gguf_name}"]
    stops = []
    if family is not None:
        lines.append(f'TEMPLATE """{family.go_template}"""')
        # A system prompt the Jinja template adds when the conversation has none (SmolLM2's): Ollama's SYSTEM.
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)
        bos = tokenizer.bos_token or ""
        found = re.search(family.system_block, rendered, re.S)  # SmolLM2's BOS is <|im_start|>: part of the turn
        if found is None and bos:
            found = re.search(family.system_block, rendered.removeprefix(bos), re.S)
        if found:
            lines.append(f"SYSTEM {json.dumps(found.group(1))}")
        stops.append(family.end_of_turn)
    else:
        lines.append("# No TEMPLATE: Ollama takes the chat template from the GGUF's tokenizer.chat_template.")
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    lines += [f"PARAMETER stop {json.dumps(stop)}" for stop in stops]
    return "\n".join(lines) + "\n", family.name if family else None
