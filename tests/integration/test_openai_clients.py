"""The clients users point at a chattune endpoint, through a real gateway with the endpoint's key, on the tiny model:
the official ``openai`` package (sync, async, streamed) and LangChain's ``ChatOpenAI``. Structured output (a
Pydantic model as a JSON schema, ``parse``/``with_structured_output``), log-probabilities, content parts, and a
``batch`` of requests beyond the deployment's concurrency, which now waits in the deployment's queue instead of a
429. The random model's words are noise; what is checked is what the grammar and the protocol promise."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import openai
import pytest
from pydantic import BaseModel, Field

pytestmark = pytest.mark.integration


class Verdict(BaseModel):
    """A finite answer shape, so that the random model cannot run out of tokens inside it."""

    answer: Literal["yes", "no"]
    confidence: int = Field(ge=0, le=9)
    sure: bool


def _clients(served: dict[str, Any]) -> tuple[str, str, str]:
    key = served["headers"]["Authorization"].removeprefix("Bearer ")
    return f"{served['base']}/v1", key, served["model"]


def test_the_openai_client_sync_async_and_streamed(served: dict[str, Any]) -> None:
    base_url, key, model = _clients(served)
    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    assert client.models.list().data[0].id == model  # the deployment's own model first, not the untuned base

    # a Pydantic model as a strict JSON schema: the answer parses into it
    parsed = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Is May 1 a date?"}], response_format=Verdict,
        max_completion_tokens=40,
    )  # fmt: skip
    verdict = parsed.choices[0].message.parsed
    assert isinstance(verdict, Verdict) and parsed.choices[0].finish_reason == "stop"

    # log-probabilities, content parts, developer role
    done = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": " there"}]},
        ],
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
    )
    assert done.choices[0].logprobs is not None and done.choices[0].logprobs.content is not None
    assert len(done.choices[0].logprobs.content) == done.usage.completion_tokens  # type: ignore[union-attr]
    assert all(len(t.top_logprobs) == 2 for t in done.choices[0].logprobs.content)

    # what the model cannot honour: a 400 naming the parameter, and the endpoint keeps serving
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Hi"}], max_tokens=50_000)
    assert refused.value.body["param"] == "max_tokens"  # type: ignore[index]

    async def streamed() -> tuple[str, Any]:
        async with openai.AsyncOpenAI(base_url=base_url, api_key=key, max_retries=0) as aclient:
            stream = await aclient.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "Verdict?"}], max_tokens=40, stream=True,
                stream_options={"include_usage": True},
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "Verdict", "schema": Verdict.model_json_schema()}},
            )  # fmt: skip
            text, usage = "", None
            async for chunk in stream:
                text += "".join(c.delta.content or "" for c in chunk.choices)
                usage = chunk.usage or usage
            return text, usage

    text, usage = asyncio.run(streamed())
    Verdict.model_validate(json.loads(text))
    assert usage is not None and usage.completion_tokens > 0


def test_langchain_chat_openai_invoke_stream_batch_and_structured_output(served: dict[str, Any]) -> None:
    from langchain_openai import ChatOpenAI

    base_url, key, model = _clients(served)
    llm = ChatOpenAI(base_url=base_url, api_key=key, model=model, max_tokens=6, temperature=0, max_retries=0)
    assert isinstance(llm.invoke("Hi").content, str)
    assert sum(1 for _ in llm.stream("Hi")) >= 2
    # Two prompts at once against a deployment that takes one request at a time: the second waits in line.
    answers = llm.batch(["Hi", "Hello"])
    assert len(answers) == 2 and all(isinstance(a.content, str) for a in answers)

    structured = ChatOpenAI(base_url=base_url, api_key=key, model=model, max_tokens=40, temperature=0, max_retries=0)
    verdict = structured.with_structured_output(Verdict, method="json_schema", strict=True).invoke("Is May 1 a date?")
    assert isinstance(verdict, Verdict)
