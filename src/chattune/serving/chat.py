"""From a chat request to its result, over the instance's engine: the service behind the instance's routes.

The routes parse and shape; this maps wire requests to generation settings, runs them on the engine and builds the
wire answers, including OpenAI's stream of ``chat.completion.chunk`` events.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

from chattune.inference import Generation, GenerationParams
from chattune.serving import sse
from chattune.serving.batching import Pending
from chattune.serving.engine import Engine
from chattune.serving.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceMessage,
    ChunkChoice,
    ChunkDelta,
    ModelCard,
    ModelList,
    ScoreOutput,
    ScoreRequest,
    Usage,
    error_body,
)

# OpenAI's answer length when a request sets neither max_tokens nor max_completion_tokens.
DEFAULT_MAX_TOKENS = 256


def chat_params(req: ChatCompletionRequest) -> GenerationParams:
    """OpenAI's request fields as generation settings: sampling only with a positive temperature."""
    return GenerationParams(
        max_new_tokens=req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS,
        temperature=req.temperature if req.temperature is not None else 1.0,
        top_p=req.top_p if req.top_p is not None else 1.0,
        do_sample=req.temperature is not None and req.temperature > 0,
        stop=req.stop_list(),
        seed=req.seed,
    )


class ChatService:
    """Chat requests answered by one engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def models(self) -> ModelList:
        """The models served: the base, then each adapter with the base as its parent."""
        engine = self.engine
        cards = [
            ModelCard(id=name, created=engine.created, root=engine.base_name, parent=parent)
            for name, parent in engine.models()
        ]
        return ModelList(data=cards)

    async def score(self, req: ScoreRequest) -> list[ScoreOutput]:
        """Azure's /score: one answer per conversation, with the deployment's own model."""
        p = req.input_data.parameters
        params = GenerationParams(
            max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, do_sample=p.do_sample
        )
        conversations = [[m.model_dump() for m in conv] for conv in req.input_data.conversations()]
        results = await self.engine.generate(conversations, params, self.engine.resolve(None))
        return [
            ScoreOutput(
                output=r.text, finish_reason=r.finish_reason, usage=Usage.of(r.prompt_tokens, r.completion_tokens)
            )
            for r in results
        ]

    async def complete(self, req: ChatCompletionRequest) -> ChatCompletion:
        """A non-streamed chat completion with ``req.n`` choices."""
        adapter = self.engine.resolve(req.model)
        conversation = [m.model_dump() for m in req.messages]
        results = await self.engine.generate([conversation] * req.n, chat_params(req), adapter)
        return ChatCompletion(
            id=_completion_id(),
            created=int(time.time()),
            model=req.model or self.engine.served_name,
            choices=[
                Choice(index=i, message=ChoiceMessage(content=r.text), finish_reason=r.finish_reason)
                for i, r in enumerate(results)
            ],
            usage=Usage.of(results[0].prompt_tokens, sum(r.completion_tokens for r in results)),
        )

    def stream(self, req: ChatCompletionRequest) -> AsyncIterator[bytes]:
        """A streamed chat completion as SSE bytes.

        Its generations are submitted here, before the 200 is sent, so that a prompt too long or an unknown model is
        still a 4xx.
        """
        adapter = self.engine.resolve(req.model)
        conversation = [m.model_dump() for m in req.messages]
        params = chat_params(req)
        pendings = [self.engine.submit(conversation, params, adapter) for _ in range(req.n)]
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return self._events(pendings, req.model or self.engine.served_name, include_usage)

    async def _events(self, pendings: list[Pending], model: str, include_usage: bool) -> AsyncIterator[bytes]:
        """OpenAI's stream: a role delta, content deltas, a finish_reason chunk per choice, usage if asked, [DONE]."""
        completion_id, created = _completion_id(), int(time.time())

        def chunk(choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
            fields: dict[str, Any] = {"usage": usage} if include_usage else {}
            return sse.event(
                ChatCompletionChunk(id=completion_id, created=created, model=model, choices=choices, **fields)
            )

        merged: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

        async def pump(index: int, pending: Pending) -> None:
            try:
                async for kind, value in self.engine.stream(pending):
                    await merged.put((index, kind, value))
            except Exception as exc:
                await merged.put((index, "error", exc))

        tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(pendings)]
        finished: list[Generation] = []
        try:
            for i in range(len(pendings)):
                yield chunk([ChunkChoice(index=i, delta=ChunkDelta(role="assistant", content=""))])
            while len(finished) < len(pendings):
                index, kind, value = await merged.get()
                if kind == "delta":
                    yield chunk([ChunkChoice(index=index, delta=ChunkDelta(content=value))])
                elif kind == "done":
                    finished.append(value)
                    yield chunk([ChunkChoice(index=index, delta=ChunkDelta(), finish_reason=value.finish_reason)])
                else:  # after the 200 an error travels as an event, as OpenAI sends it
                    message = getattr(value, "message", None) or f"{type(value).__name__}: {value}"
                    yield sse.event(error_body(message, "server_error", "generation_failed"))
                    return
            if include_usage:
                prompt = finished[0].prompt_tokens if finished else 0
                yield chunk([], Usage.of(prompt, sum(g.completion_tokens for g in finished)))
            yield sse.DONE
        finally:
            for task in tasks:
                task.cancel()
            for pending in pendings:
                pending.cancelled = True


def _completion_id() -> str:
    return f"chatcmpl-{secrets.token_hex(12)}"
