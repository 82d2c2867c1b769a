"""The OpenAI fields real clients send, on a real engine over the tiny random model through the instance app:
structured output (a JSON schema the answer must follow, enforced by llguidance), log-probabilities, logit bias,
presence and frequency penalties, content given as text parts, and the 400s (OpenAI's shape, naming the parameter)
for what the model cannot honour, never a silent cut or drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import torch
from fastapi.testclient import TestClient

from chattune.inference import GenerationParams
from chattune.serving.app import create_app
from chattune.serving.engine import Engine
from tests.conftest import WEATHER_TOOL

CHAT = "/v1/chat/completions"
HI = [{"role": "user", "content": "hi"}]
# Finite by construction, so the random model cannot run out of tokens inside it.
SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "string", "enum": ["yes", "no"]},
        "n": {"type": "integer", "minimum": 0, "maximum": 99},
        "sure": {"type": "boolean"},
    },
    "required": ["answer", "n", "sure"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Engine:
    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model

    path = tmp_path_factory.mktemp("tiny") / "model"
    build_random_model(get_entry("tiny-test").source, path)
    return Engine(str(path), None, "tiny:1", "tiny-test")


@pytest.fixture(scope="module")
def client(engine: Engine) -> Any:
    with TestClient(create_app(engine, token=None)) as c:
        assert engine.ready.wait(60), engine.failed
        yield c


def _chat(client: TestClient, **fields: Any) -> dict[str, Any]:
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 8, **fields})
    assert response.status_code == 200, response.text
    return dict(response.json())


def _refused(client: TestClient, param: str, **fields: Any) -> str:
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 8, **fields})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param, error
    return str(error["message"])


@pytest.mark.parametrize("n", [1, 3])
def test_a_json_schema_answer_parses_and_validates(client: TestClient, n: int) -> None:
    """Noise from a random model, held to the schema token by token: every choice is valid JSON of that schema."""
    fmt = {"type": "json_schema", "json_schema": {"name": "Verdict", "schema": SCHEMA, "strict": True}}
    doc = _chat(client, response_format=fmt, max_tokens=40, n=n, temperature=1.0, seed=3)
    assert len(doc["choices"]) == n
    for choice in doc["choices"]:
        assert choice["finish_reason"] == "stop", choice
        jsonschema.validate(json.loads(choice["message"]["content"]), SCHEMA)


def test_a_streamed_json_schema_answer_validates_too(client: TestClient) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "Verdict", "schema": SCHEMA}}
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 40, "stream": True, "response_format": fmt})
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    jsonschema.validate(json.loads(text), SCHEMA)


def test_json_object_mode_starts_a_json_object(client: TestClient) -> None:
    """Any object: the random model may not close it within the budget, but what it wrote is an object's start."""
    choice = _chat(client, response_format={"type": "json_object"}, max_tokens=12)["choices"][0]
    assert choice["message"]["content"].startswith("{")
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)


def test_logprobs_are_the_models_own_and_the_greedy_token_is_the_most_likely(client: TestClient) -> None:
    doc = _chat(client, logprobs=True, top_logprobs=3, max_tokens=5, logit_bias={"70": 3})
    choice, usage = doc["choices"][0], doc["usage"]
    entries = choice["logprobs"]["content"]
    assert len(entries) == usage["completion_tokens"] == 5
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 3 and [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert entry["logprob"] <= 0 and sum(2.718281828 ** t["logprob"] for t in top) <= 1.0001
        assert entry["bytes"] == list(entry["token"].encode("utf-8"))
    # Without the bias, greedy takes the most likely token: its log-probability is the top one.
    plain = _chat(client, logprobs=True, top_logprobs=1, max_tokens=5)["choices"][0]["logprobs"]["content"]
    assert all(e["logprob"] == e["top_logprobs"][0]["logprob"] and e["token"] == e["top_logprobs"][0]["token"]
               for e in plain)  # fmt: skip
    assert _chat(client)["choices"][0]["logprobs"] is None  # not asked, not sent


def test_streamed_logprobs_cover_every_token(client: TestClient) -> None:
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 6, "stream": True, "logprobs": True,
                                       "stream_options": {"include_usage": True}})  # fmt: skip
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    tokens = [e for ev in events for c in ev["choices"] for e in (c.get("logprobs") or {}).get("content") or []]
    assert len(tokens) == events[-1]["usage"]["completion_tokens"]


def test_logit_bias_forces_and_forbids_tokens(client: TestClient, engine: Engine) -> None:
    forced = _chat(client, logit_bias={"65": 100}, max_tokens=6)["choices"][0]["message"]["content"]
    assert forced == engine.token_text(65) * 6
    plain = _chat(client, max_tokens=6, logprobs=True)["choices"][0]["logprobs"]["content"]
    first = engine._tokenizer.convert_tokens_to_ids(engine._tokenizer.tokenize(plain[0]["token"]))[0]
    banned = _chat(client, max_tokens=6, logprobs=True, logit_bias={str(first): -100})
    assert banned["choices"][0]["logprobs"]["content"][0]["token"] != plain[0]["token"]


def test_penalties_follow_openais_formula() -> None:
    """logit[t] -= count[t] * frequency_penalty + (count[t] > 0) * presence_penalty, over the generated tokens."""
    from chattune.serving.batching import _Sampler

    sampler = _Sampler(GenerationParams(presence_penalty=0.5, frequency_penalty=0.25))
    sampler.counts.update({5: 3, 7: 1})
    adjusted = sampler._adjusted(torch.zeros(1, 10))
    assert adjusted[0, 5].item() == pytest.approx(-1.25) and adjusted[0, 7].item() == pytest.approx(-0.75)
    assert adjusted[0, 0].item() == 0.0


def test_a_frequency_penalty_breaks_a_forced_repetition(client: TestClient, engine: Engine) -> None:
    """A token pushed by a bias of 5 repeats; a frequency penalty of 2 takes it back after a few repetitions."""
    forced = _chat(client, logit_bias={"65": 5}, max_tokens=8)["choices"][0]["message"]["content"]
    penalised = _chat(client, logit_bias={"65": 5}, frequency_penalty=2, max_tokens=8)["choices"][0]["message"]
    letter = engine.token_text(65)
    assert forced == letter * 8 and penalised["content"].count(letter) < 8


def test_content_parts_are_read_as_text_and_developer_is_system(client: TestClient) -> None:
    parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    as_parts = _chat(client, messages=[{"role": "user", "content": parts}])
    as_text = _chat(client, messages=HI)
    assert as_parts["choices"][0]["message"] == as_text["choices"][0]["message"]
    assert as_parts["usage"]["prompt_tokens"] == as_text["usage"]["prompt_tokens"]
    developer = _chat(client, messages=[{"role": "developer", "content": "Be brief."}, *HI])
    system = _chat(client, messages=[{"role": "system", "content": "Be brief."}, *HI])
    assert developer["choices"][0]["message"] == system["choices"][0]["message"]


def test_what_the_model_cannot_honour_is_a_400_naming_the_parameter(client: TestClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    with_image = [{"role": "user", "content": [{"type": "text", "text": "what is this"}, image]}]
    message = _refused(client, "messages[0].content[1].type", messages=with_image)
    assert "'image_url'" in message
    assert "max_new_tokens_cap=1024" in _refused(client, "max_tokens", max_tokens=5000)
    long = [{"role": "user", "content": "word " * 1500}]
    too_long = _refused(client, "max_completion_tokens", max_completion_tokens=1024, messages=long)
    assert "exceeds the model's context" in too_long
    assert "vocabulary" in _refused(client, "logit_bias", logit_bias={"99999": 1})
    assert "token ids" in _refused(client, "logit_bias", logit_bias={"hello": 1})
    assert "needs logprobs" in _refused(client, "top_logprobs", top_logprobs=2)
    assert "needs tools" in _refused(client, "tool_choice", tool_choice="required")
    bad_schema = {"type": "json_schema", "json_schema": {"name": "A", "schema": {"type": "strin"}}}
    assert "cannot be enforced" in _refused(client, "response_format.json_schema.schema", response_format=bad_schema)


def test_the_deployments_own_models_are_listed_before_the_shared_base(tmp_path: Path) -> None:
    """A client that takes the first model of /v1/models gets the fine-tuned one, not the untuned base."""
    engine = Engine("base", "adapter", "mine:2", "smollm2", extra_adapters={"mine:1": "older"})
    assert [m for m, _ in engine.models()] == ["mine:2", "mine:1", "smollm2"]
    assert dict(engine.models()) == {"mine:2": "smollm2", "mine:1": "smollm2", "smollm2": None}


# tools ------------------------------------------------------------------------------------------------------------
WEATHER = WEATHER_TOOL
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def tool_client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The tiny random model with Qwen2.5's chat template (as TRL ships it), which renders tools in the Hermes
    format; TRL's add_response_schema knows its response parser."""
    from importlib import resources

    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model

    path = tmp_path_factory.mktemp("tiny-tools") / "model"
    build_random_model(get_entry("tiny-test").source, path)
    template = resources.files("trl").joinpath("chat_templates", "qwen2_5.jinja").read_text(encoding="utf-8")
    (path / "chat_template.jinja").write_text(template, encoding="utf-8")
    engine = Engine(str(path), None, "tools:1", "tiny-test")
    with TestClient(create_app(engine, token=None)) as c:
        assert engine.ready.wait(60), engine.failed
        assert engine.reads_tool_calls
        yield c, engine


def test_tools_on_a_template_that_does_not_render_them_are_a_400(client: TestClient) -> None:
    assert "does not render tools" in _refused(client, "tools", tools=[WEATHER])


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_a_forced_tool_call_follows_the_tools_schema(tool_client: tuple[TestClient, Engine], choice: Any) -> None:
    client, _ = tool_client
    doc = _chat(client, tools=[WEATHER, TIME], tool_choice=choice, max_tokens=60)
    choice_out = doc["choices"][0]
    assert choice_out["finish_reason"] == "tool_calls" and choice_out["message"]["content"] is None
    calls = choice_out["message"]["tool_calls"]
    assert calls and all(c["type"] == "function" and c["id"].startswith("call_") for c in calls)
    for c in calls:
        name, arguments = c["function"]["name"], json.loads(c["function"]["arguments"])
        assert name in ("get_weather", "get_time")
        if name == "get_weather":
            jsonschema.validate(arguments, WEATHER["function"]["parameters"])  # type: ignore[index]
    if isinstance(choice, dict):
        assert [c["function"]["name"] for c in calls] == ["get_weather"]


def test_a_tool_call_round_trip_is_rendered_and_streamed(tool_client: tuple[TestClient, Engine]) -> None:
    """The assistant's call and the tool's answer go back to the model through its template; a streamed forced call
    arrives as one tool_calls delta with its index."""
    client, _ = tool_client
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                              "arguments": '{"city": "Brno", "days": 2}'}}  # fmt: skip
    history = [*HI, {"role": "assistant", "content": None, "tool_calls": [call]},
               {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]  # fmt: skip
    answered = _chat(client, messages=history, tools=[WEATHER])
    asked = _chat(client, messages=HI, tools=[WEATHER])
    assert answered["usage"]["prompt_tokens"] > asked["usage"]["prompt_tokens"]
    bad = [*HI, {"role": "assistant", "tool_calls": [{**call, "function": {"name": "get_weather", "arguments": "{"}}]}]
    _refused(client, "messages[1].tool_calls[0].function.arguments", messages=bad, tools=[WEATHER])
    response = client.post(CHAT, json={"messages": HI, "max_tokens": 60, "stream": True, "tools": [WEATHER],
                                       "tool_choice": "required"})  # fmt: skip
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    deltas = [c["delta"] for e in events for c in e["choices"] if c["delta"].get("tool_calls")]
    assert len(deltas) == 1 and deltas[0]["tool_calls"][0]["index"] == 0
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_free_answers_are_read_by_the_templates_response_parser(tool_client: tuple[TestClient, Engine]) -> None:
    """tool_choice auto: what the model writes in its template's tool format comes back as tool calls (the random
    model never writes one, so the parser is fed a Hermes-format answer directly)."""
    client, engine = tool_client
    answer = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Brno", "days": 3}}\n</tool_call>'
    content, calls = engine.read_tool_calls(answer, HI, [WEATHER])
    assert content is None and [c["function"]["name"] for c in calls] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Brno", "days": 3}
    assert engine.read_tool_calls("just text", HI, [WEATHER]) == ("just text", [])
    doc = _chat(client, tools=[WEATHER], max_tokens=6)  # auto: noise, no call
    assert doc["choices"][0]["finish_reason"] in ("stop", "length")
    assert "tool_calls" not in doc["choices"][0]["message"]
    broken = {"type": "function", "function": {"name": "broken", "parameters": {"type": "strin"}}}
    _refused(client, "tools", tools=[broken], tool_choice="required")  # its schema cannot be enforced: names tools
    unknown = {"type": "function", "function": {"name": "nope"}}
    assert "not one of the tools" in _refused(client, "tool_choice", tools=[WEATHER], tool_choice=unknown)
