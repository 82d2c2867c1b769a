"""Wire models for the Azure ``/score`` and OpenAI ``/v1/chat/completions`` formats (apart from domain entities)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)


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


class ContentPart(Wire):
    """One part of a message's content given as an array (OpenAI's shape).

    A text part is read; any other kind (an image, audio, a file) is kept as sent and refused by the service with a
    400 naming it.
    """

    model_config = ConfigDict(extra="allow", strict=True)

    type: str
    text: str | None = None


class FunctionCall(Wire):
    """A function a tool call names, with its arguments as JSON text (as OpenAI sends and takes them)."""

    name: str
    arguments: str


class ToolCall(Wire):
    """One tool call of an assistant message."""

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class _Turn(Wire):
    """One message of an OpenAI chat request: content as text or as an array of parts (the fields every role has)."""

    content: str | list[ContentPart]
    name: str | None = None
    tool_calls: None = None  # only an assistant turn carries calls
    tool_call_id: None = None  # only a tool turn answers one


class SystemTurn(_Turn):
    """A system message."""

    role: Literal["system"]


class DeveloperTurn(_Turn):
    """A developer message: OpenAI's newer name for a system message, read as one."""

    role: Literal["developer"]


class UserTurn(_Turn):
    """A user message."""

    role: Literal["user"]


class AssistantTurn(Wire):
    """An assistant message of the history: its text, or the tool calls it made (content may then be null)."""

    role: Literal["assistant"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: None = None


class ToolTurn(Wire):
    """A tool's answer to one call."""

    role: Literal["tool"]
    content: str | list[ContentPart]
    tool_call_id: str
    name: None = None
    tool_calls: None = None


# One message, told apart by its role (OpenAI's shape: each role has its own fields).
ChatTurn = Annotated[SystemTurn | DeveloperTurn | UserTurn | AssistantTurn | ToolTurn, Field(discriminator="role")]


class FunctionSpec(Wire):
    """A function the model may call: its name, what it does and its parameters' JSON schema."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(Wire):
    """One of a request's ``tools``."""

    type: Literal["function"]
    function: FunctionSpec


class NamedFunction(Wire):
    """The function ``tool_choice`` names."""

    name: str


class NamedToolChoice(Wire):
    """``tool_choice`` naming the one function to call."""

    type: Literal["function"]
    function: NamedFunction


class JsonSchemaFormat(Wire):
    """``response_format.json_schema``: the schema an answer must follow (held to it with ``strict`` or without)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class TextFormat(Wire):
    """``response_format`` free text (the default)."""

    type: Literal["text"]


class JsonObjectFormat(Wire):
    """``response_format`` any JSON object."""

    type: Literal["json_object"]


class JsonSchemaResponseFormat(Wire):
    """``response_format`` JSON following a schema."""

    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat


# OpenAI's ``response_format``, told apart by its type.
ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")]


class StreamOptions(Wire):
    """OpenAI's ``stream_options``: whether the stream ends with a usage chunk."""

    include_usage: bool = False


class ChatCompletionRequest(Wire):
    """An OpenAI ``/v1/chat/completions`` request body."""

    model: str | None = None
    messages: list[ChatTurn] = Field(min_length=1)
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
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # Token ids (as JSON keys: strings) -> a bias from -100 (never) to 100 (only), added to the logits.
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), INTEGRAL] | None = None
    response_format: ResponseFormat | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None

    def tool_dicts(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them (OpenAI's JSON), or None."""
        return [t.model_dump(exclude_none=True) for t in self.tools] if self.tools else None

    def forced_tool(self) -> tuple[bool, str | None]:
        """(whether a call is forced, the function named or None): ``required`` or a named function."""
        if isinstance(self.tool_choice, NamedToolChoice):
            return True, self.tool_choice.function.name
        return self.tool_choice == "required", None

    def stop_list(self) -> list[str] | None:
        """The stop strings as a list (a single string becomes a list of one), or None."""
        if self.stop is None:
            return None
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


class ChoiceMessage(BaseModel):
    """The assistant message of a chat completion choice: its text, or the tool calls it makes (content null)."""

    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCall] | None = None

    @model_serializer(mode="wrap")
    def _calls_when_made(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.tool_calls is None:
            out.pop("tool_calls", None)  # as OpenAI: the key only when calls were made
        return out


class TopLogprob(BaseModel):
    """A token and its log-probability (with its UTF-8 bytes: a token may be part of a character)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    """A generated token's log-probability, with the most likely tokens at its position."""

    top_logprobs: list[TopLogprob] = []


class ChoiceLogprobs(BaseModel):
    """The log-probabilities of a choice's tokens (``logprobs: true``)."""

    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    """One choice of a chat completion."""

    index: int
    message: ChoiceMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


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
    tool_calls: list[dict[str, Any]] | None = None  # each with its ``index``, as OpenAI streams them

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}  # OpenAI sends {} to finish, not nulls


class ChunkChoice(BaseModel):
    """One choice's part of a stream chunk."""

    index: int
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
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


# The gateway names the model of a deployment served from another deployment's instances (`--share-base-with`):
# the default of a request that names none, and the first in /v1/models. Only the gateway reaches an instance.
SERVED_MODEL_HEADER = "x-chattune-served-model"


class AdapterLoad(Wire):
    """``PUT /adapters/{name}`` on an instance: where the LoRA adapter to load lies (the gateway's call)."""

    path: str = Field(min_length=1, description="the adapter's directory, readable by the instance")


class ThreadsSetting(Wire):
    """``PUT /threads`` on an instance: the torch threads its forward passes use (the gateway's call)."""

    threads: Annotated[int, Field(ge=1, le=4096, description="torch threads, from the next decoding step"), INTEGRAL]


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
