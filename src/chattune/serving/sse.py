"""Server-sent events as OpenAI streams them: ``data: <json>`` events, then ``data: [DONE]``.

The one encoder for every stream chattune writes (the instance's chat stream, the gateway's relay errors); it knows
nothing of FastAPI, so that any process (a job's event stream too) can frame its events with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

MEDIA_TYPE = "text/event-stream"
# The end of an OpenAI stream: clients stop reading here.
DONE = b"data: [DONE]\n\n"


def event(data: BaseModel | Mapping[str, Any]) -> bytes:
    """One ``data:`` event holding ``data`` as JSON (a pydantic model as its serializer writes it).

    JSON never holds a raw newline, so one event is always one ``data:`` line.
    """
    text = data.model_dump_json() if isinstance(data, BaseModel) else json.dumps(data)
    return f"data: {text}\n\n".encode()


def is_event_stream(media_type: str | None) -> bool:
    """Whether a Content-Type is an event stream (parameters such as ``; charset=utf-8`` allowed)."""
    return bool(media_type) and str(media_type).startswith(MEDIA_TYPE)
