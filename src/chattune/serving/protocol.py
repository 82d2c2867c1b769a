"""Wire models for the Azure ``/score`` and OpenAI ``/v1/chat/completions`` formats (apart from domain entities)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer


class Wire(BaseModel):
    """Base of the request models: unknown fields and wrongly typed values are refused (a 422 that names them)."""

    # Unknown fields are refused with a 422 that names them: nothing the client sent is silently ignored. Types are
    # strict, as the JSON schema says: `"seed": false`, `"n": "2"` or `"max_tokens": true` are a 422, not read as 0,
    # 2 and 1. JSON's own equivalences stay valid: an integer is a number, and 2.0 is an integer (INTEGRAL).
    model_config = ConfigDict(extra="forbid", strict=True)


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema has it: 3 or 3.0, never true or "3". Placed after the bounds (Annotated[int, Field(...),
# INTEGRAL]), so that the JSON schema still says minimum / exclusiveMinimum.
INTEGRAL = BeforeValidator(_integral)


class ChatMessage(Wire):
    """One message of a conversation."""

    role: Literal["system", "user", "assistant"]
    content: str


class ScoreParameters(Wire):
    """Azure's generation parameters of a ``/score`` request."""

    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    do_sample: bool = False
    max_new_tokens: Annotated[int, Field(gt=0), INTEGRAL] = 200


class ScoreInput(Wire):
    """The ``input_data`` of a ``/score`` request: one conversation or a list of them, and the parameters."""

    # Azure's shape is a list of conversations; its vLLM container also takes one flat conversation. The length
    # bound sits on each arm of the union, so that the JSON schema says it too (minItems, not a stray minLength).
    input_string: (
        Annotated[list[Annotated[list[ChatMessage], Field(min_length=1)]], Field(min_length=1)]
        | Annotated[list[ChatMessage], Field(min_length=1)]
    )
    parameters: ScoreParameters = Field(default_factory=lambda: ScoreParameters())

    def conversations(self) -> list[list[ChatMessage]]:
        """The conversations to answer: a single flat conversation becomes a list of one."""
        first = self.input_string[0]
        if isinstance(first, ChatMessage):
            return [self.input_string]  # type: ignore[list-item]
        return self.input_string  # type: ignore[return-value]


class ScoreRequest(Wire):
    """An Azure ``/score`` request body."""

    input_data: ScoreInput
    params: dict[str, Any] = Field(default_factory=dict)


class Usage(BaseModel):
    """Token counts of an answer."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    @classmethod
    def of(cls, prompt: int, completion: int) -> Usage:
        """Usage with its total."""
        return cls(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


class ScoreOutput(BaseModel):
    """One answer of a ``/score`` response."""

    output: str
    finish_reason: str
    usage: Usage


class StreamOptions(Wire):
    """OpenAI's ``stream_options``: whether the stream ends with a usage chunk."""

    include_usage: bool = False


class ChatCompletionRequest(Wire):
    """An OpenAI ``/v1/chat/completions`` request body."""

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    max_tokens: Annotated[int, Field(gt=0), INTEGRAL] | None = None
    max_completion_tokens: Annotated[int, Field(gt=0), INTEGRAL] | None = None
    n: Annotated[int, Field(ge=1, le=8), INTEGRAL] = 1
    stop: str | list[str] | None = None
    seed: Annotated[int, INTEGRAL] | None = None  # any integer: the generator takes it modulo 2**64
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    def stop_list(self) -> list[str] | None:
        """The stop strings as a list (a single string becomes a list of one), or None."""
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChoiceMessage(BaseModel):
    """The assistant message of a chat completion choice."""

    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: ChoiceMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    """An OpenAI chat completion (``chat.completion``), the answer of a non-streamed request."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage


class ChunkDelta(BaseModel):
    """What a stream chunk adds to a choice: the role first, then content; empty in the chunk that finishes it."""

    role: Literal["assistant"] | None = None
    content: str | None = None

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}  # OpenAI sends {} to finish, not nulls


class ChunkChoice(BaseModel):
    """One choice's part of a stream chunk."""

    index: int
    delta: ChunkDelta
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    """One event of a streamed chat completion (``chat.completion.chunk``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    # Only with stream_options.include_usage: null in every chunk but the last, which has no choices.
    usage: Usage | None = None

    @model_serializer(mode="wrap")
    def _usage_when_asked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if "usage" not in self.model_fields_set:
            out.pop("usage", None)
        return out


class ModelCard(BaseModel):
    """One model of ``/v1/models``; an adapter names its base as ``parent``."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "chattune"
    root: str | None = None
    parent: str | None = None


class ModelList(BaseModel):
    """The ``/v1/models`` answer."""

    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorDetail(BaseModel):
    """The body of OpenAI's error shape: message, type, and the offending parameter and code where known."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape: every 4xx and 5xx answer of an instance or a gateway has it (see ``error_body``)."""

    error: ErrorDetail


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}
