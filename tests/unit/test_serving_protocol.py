"""chattune.serving.protocol: Azure /score request shapes and OpenAI chat completion request validation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from chattune.serving.protocol import ChatCompletionRequest, ChatMessage, ScoreRequest, error_body

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello"},
    {"role": "user", "content": "Bye"},
]


def score(input_string: Any, **extra: Any) -> ScoreRequest:
    return ScoreRequest.model_validate({"input_data": {"input_string": input_string, **extra}, "params": {}})


def as_dicts(conversations: list[list[ChatMessage]]) -> list[list[dict[str, str]]]:
    return [[m.model_dump() for m in conv] for conv in conversations]


def test_score_list_of_conversations() -> None:
    second = [{"role": "user", "content": "Other"}]
    req = score([CONVERSATION, second])
    assert as_dicts(req.input_data.conversations()) == [CONVERSATION, second]


def test_score_one_flat_conversation_is_normalised() -> None:
    req = score(CONVERSATION)
    conversations = req.input_data.conversations()
    assert len(conversations) == 1
    assert as_dicts(conversations) == [CONVERSATION]


def test_score_seed_sample_shape_and_parameters() -> None:
    body = {
        "input_data": {
            "input_string": [[{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]],
            "parameters": {"temperature": 0.6, "top_p": 0.9, "do_sample": True, "max_new_tokens": 200},
        },
        "params": {},
    }
    req = ScoreRequest.model_validate(body)
    p = req.input_data.parameters
    assert (p.temperature, p.top_p, p.do_sample, p.max_new_tokens) == (0.6, 0.9, True, 200)
    defaults = score(CONVERSATION).input_data.parameters
    assert (defaults.temperature, defaults.top_p, defaults.do_sample, defaults.max_new_tokens) == (1.0, 1.0, False, 200)


@pytest.mark.parametrize(
    "body",
    [
        {"input_data": {"input_string": [CONVERSATION]}, "extra": 1},
        {"input_data": {"input_string": [CONVERSATION], "unknown": 1}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"max_tokens": 5}}},
        {"input_data": {"input_string": [[{"role": "user", "content": "x", "name": "bob"}]]}},
        {"input_data": {"input_string": [[{"role": "tool", "content": "x"}]]}},
        {"input_data": {"input_string": []}},
        {"input_data": {"input_string": "just text"}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"temperature": 2.5}}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"top_p": 0}}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"max_new_tokens": 0}}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"max_new_tokens": "5"}}},
        {"input_data": {"input_string": [CONVERSATION], "parameters": {"do_sample": "true"}}},
        {},
    ],
    ids=[
        "top-level-extra",
        "input-data-extra",
        "parameters-extra",
        "message-extra",
        "bad-role",
        "empty",
        "string",
        "temperature",
        "top-p",
        "max-new-tokens",
        "max-new-tokens-string",
        "do-sample-string",
        "no-input-data",
    ],
)
def test_score_rejects_bad_bodies(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ScoreRequest.model_validate(body)


def test_unknown_field_is_named_in_the_error() -> None:
    with pytest.raises(ValidationError) as exc:
        ScoreRequest.model_validate({"input_data": {"input_string": [CONVERSATION], "temprature": 0.5}})
    errors = exc.value.errors()
    assert errors[0]["type"] == "extra_forbidden"
    assert errors[0]["loc"] == ("input_data", "temprature")


def test_score_rejects_empty_conversation() -> None:
    with pytest.raises(ValidationError):
        score([[]])


def chat_request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "Hi"}], **fields})


def test_chat_completion_defaults() -> None:
    req = chat_request()
    assert req.n == 1
    assert req.stream is False
    assert req.temperature is None
    assert req.stop_list() is None


@pytest.mark.parametrize("n", [1, 8])
def test_chat_completion_n_in_bounds(n: int) -> None:
    assert chat_request(n=n).n == n


@pytest.mark.parametrize(
    "fields",
    [
        {"n": 0},
        {"n": 9},
        {"temperature": -0.1},
        {"temperature": 2.01},
        {"top_p": 0},
        {"top_p": 1.5},
        {"max_tokens": 0},
        {"max_completion_tokens": -1},
        {"stop": 3},
        {"stop": ["a", 1]},
        {"frobnicate": True},
        {"messages": []},
        {"stream_options": {"include_usage": True, "x": 1}},
        # strict types (found by tests/integration/test_api_fuzz.py: `"seed": false` was read as seed 0)
        {"seed": False},
        {"seed": "7"},
        {"n": "2"},
        {"n": True},
        {"max_tokens": True},
        {"max_tokens": "5"},
        {"temperature": "0.5"},
        {"stream": "yes"},
        {"stream": 1},
        {"messages": [{"role": "user", "content": 5}]},
        {"n": 2.5},
        {"seed": 1.5},
        # the OpenAI fields this server honours, out of their bounds
        {"presence_penalty": 2.5},
        {"frequency_penalty": -3},
        {"logit_bias": {"12": 101}},
        {"logprobs": True, "top_logprobs": 21},
        {"response_format": {"type": "json_schema"}},  # no schema
        {"response_format": {"type": "json_object", "json_schema": {"name": "x"}}},
        {"response_format": {"type": "json_schema", "json_schema": {"name": "bad name!", "schema": {}}}},
        {"response_format": {"type": "yaml"}},
        {"messages": [{"role": "robot", "content": "Hi"}]},
        {"messages": [{"role": "user", "content": [{"text": "no type"}]}]},
    ],
)
def test_chat_completion_rejects(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        chat_request(**fields)


def test_chat_completion_takes_the_fields_common_clients_send() -> None:
    """What LangChain's ChatOpenAI and the openai client send for JSON mode, a JSON schema, log-probabilities,
    penalties and content parts: accepted as sent (the engine honours them or answers 400 naming them)."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = chat_request(
        messages=[
            {"role": "developer", "content": "Answer in JSON."},
            {"role": "user", "content": [{"type": "text", "text": "Give "}, {"type": "text", "text": "a"}]},
        ],
        response_format={"type": "json_schema", "json_schema": {"name": "A", "schema": schema, "strict": True}},
        logprobs=True,
        top_logprobs=2,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logit_bias={"50256": -100},
        max_completion_tokens=8,
    )
    assert req.response_format is not None and req.response_format.type == "json_schema"
    assert req.response_format.json_schema.schema_ == schema
    assert req.messages[1].content[1].text == "a"  # type: ignore[union-attr]


@pytest.mark.parametrize("temperature", [0, 0.7, 2, 1])
def test_chat_completion_temperature_bounds_inclusive(temperature: float) -> None:
    assert chat_request(temperature=temperature).temperature == temperature


def test_chat_completion_stop_str_or_list() -> None:
    assert chat_request(stop="\n").stop_list() == ["\n"]
    assert chat_request(stop=["a", "b"]).stop_list() == ["a", "b"]
    assert chat_request(stop=[]).stop_list() == []


def test_error_body_is_openai_shape() -> None:
    assert error_body("bad key", "invalid_request_error", "invalid_api_key") == {
        "error": {"message": "bad key", "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}
    }


def test_integers_as_json_schema_has_them() -> None:
    # 2.0 is an integer in JSON Schema (schemathesis generates it as valid data); true and "2" are not
    req = chat_request(n=2.0, max_tokens=5.0, seed=-3.0)
    assert (req.n, req.max_tokens, req.seed) == (2, 5, -3)
    assert isinstance(req.n, int) and isinstance(req.max_tokens, int)
    assert chat_request(seed=10**30).seed == 10**30  # any integer (the sampler reduces it to 64 bits)
    assert chat_request(temperature=1).temperature == 1.0
    body = score(CONVERSATION, parameters={"max_new_tokens": 7.0})
    assert body.input_data.parameters.max_new_tokens == 7


def test_stream_chunks_are_framed_as_openai_sends_them() -> None:
    import json

    from chattune.serving import sse
    from chattune.serving.protocol import ChatCompletionChunk, ChunkChoice, ChunkDelta, Usage

    def decoded(frame: bytes) -> dict[str, object]:
        text = frame.decode()
        assert text.startswith("data: ") and text.endswith("\n\n") and "\n" not in text[:-2]
        return json.loads(text[len("data: ") :])  # type: ignore[no-any-return]

    first = ChatCompletionChunk(
        id="c", created=1, model="m", choices=[ChunkChoice(index=0, delta=ChunkDelta(role="assistant", content=""))]
    )
    assert decoded(sse.event(first)) == {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        # as OpenAI sends it: logprobs null unless asked, no usage unless asked
        "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
        ],
    }
    end = ChatCompletionChunk(
        id="c",
        created=1,
        model="m",
        choices=[ChunkChoice(index=0, delta=ChunkDelta(), finish_reason="stop")],
        usage=None,
    )
    assert decoded(sse.event(end))["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert decoded(sse.event(end))["usage"] is None  # asked for: null until the last chunk
    last = ChatCompletionChunk(id="c", created=1, model="m", choices=[], usage=Usage.of(3, 4))
    assert decoded(sse.event(last))["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert sse.DONE == b"data: [DONE]\n\n"
    assert sse.is_event_stream("text/event-stream; charset=utf-8") and not sse.is_event_stream(None)
