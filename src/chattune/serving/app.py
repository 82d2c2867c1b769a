"""The serving app of one deployment instance: Azure ``/score``, OpenAI ``/v1/chat/completions`` (streamed too),
``/v1/models``, health probes and Prometheus ``/metrics``.

Instances listen on loopback behind the endpoint's gateway, which authenticates every request.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chattune.inference import Generation, GenerationParams
from chattune.serving.auth import require_key
from chattune.serving.disconnect import unless_disconnected
from chattune.serving.engine import Engine
from chattune.serving.errors import BodyLimit, documented_errors, error_response, install_error_handlers
from chattune.serving.keys import hash_key, matches
from chattune.serving.protocol import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ChoiceMessage,
    ModelCard,
    ModelList,
    ScoreOutput,
    ScoreRequest,
    Usage,
    error_body,
)

MAX_BODY_BYTES = 4 * 2**20
DEFAULT_MAX_TOKENS = 256
# What an instance answers to a generation request besides 200, each in OpenAI's error shape.
REQUEST_ERRORS = (400, 413, 415, 422, 503)
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, server-sent `chat.completion.chunk` events",
        # OpenAPI 3.1: the schema of an event stream describes one event
        "content": {
            "text/event-stream": {
                "schema": {
                    "type": "object",
                    "properties": {"data": {"type": "string", "description": "a JSON chunk, or [DONE] at the end"}},
                    "required": ["data"],
                }
            }
        },
    },
    **documented_errors(404, *REQUEST_ERRORS),
}


def _usage(prompt: int, completion: int) -> Usage:
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def create_app(engine: Engine, *, token: str | None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The serving app of one instance. ``token``: the bearer token every route but the health routes requires
    (the gateway's); None only for an app that no socket exposes (in-process tests)."""
    app = FastAPI(title="chattune instance", version="0.1.0")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token is not None:
        hashes = {"gateway": hash_key(token)}  # compared as the gateway compares endpoint keys
        require_key(
            app,
            lambda presented: matches(presented, hashes),
            "this instance answers its endpoint's gateway only; call the endpoint's scoring URI with an endpoint key",
        )
    metrics = engine.metrics

    @app.on_event("startup")
    async def _start() -> None:
        engine.start()

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        route = request.url.path
        if not route.startswith("/health") and route != "/metrics":
            metrics.requests.labels(route, str(response.status_code)).inc()
            metrics.latency.labels(route).observe(time.monotonic() - started)
        return response

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready", response_model=None, responses=documented_errors(503))
    async def ready() -> dict[str, str] | JSONResponse:
        if engine.ready.is_set():
            return {"status": "ready"}
        if engine.failed:
            return error_response(503, f"model failed to load: {engine.failed}", "load_failed")
        return error_response(503, "model is loading", "loading")

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text: Prometheus' format
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> ModelList:
        cards = [
            ModelCard(id=name, created=engine.created, root=engine.base_name, parent=parent)
            for name, parent in engine.models()
        ]
        return ModelList(data=cards)

    @app.post("/score", responses=documented_errors(*REQUEST_ERRORS))
    async def score(req: ScoreRequest, request: Request) -> list[ScoreOutput]:
        p = req.input_data.parameters
        params = GenerationParams(
            max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, do_sample=p.do_sample
        )
        conversations = [[m.model_dump() for m in conv] for conv in req.input_data.conversations()]
        results = await unless_disconnected(request, engine.generate(conversations, params, engine.resolve(None)))
        return [
            ScoreOutput(
                output=r.text, finish_reason=r.finish_reason, usage=_usage(r.prompt_tokens, r.completion_tokens)
            )
            for r in results
        ]

    @app.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
    async def chat(req: ChatCompletionRequest, request: Request) -> ChatCompletion | StreamingResponse:
        adapter = engine.resolve(req.model)
        sampling = req.temperature is not None and req.temperature > 0
        params = GenerationParams(
            max_new_tokens=req.max_completion_tokens or req.max_tokens or DEFAULT_MAX_TOKENS,
            temperature=req.temperature if req.temperature is not None else 1.0,
            top_p=req.top_p if req.top_p is not None else 1.0,
            do_sample=sampling,
            stop=req.stop_list(),
            seed=req.seed,
        )
        conversation = [m.model_dump() for m in req.messages]
        model = req.model or engine.served_name
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        if req.stream:
            # Submitted before the 200 is sent, so a prompt too long or an unknown model is still a 4xx.
            pendings = [engine.submit(conversation, params, adapter) for _ in range(req.n)]
            include_usage = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                _sse(engine, pendings, completion_id, model, include_usage), media_type="text/event-stream"
            )
        results = await unless_disconnected(request, engine.generate([conversation] * req.n, params, adapter))
        return ChatCompletion(
            id=completion_id,
            created=int(time.time()),
            model=model,
            choices=[
                Choice(index=i, message=ChoiceMessage(content=r.text), finish_reason=r.finish_reason)
                for i, r in enumerate(results)
            ],
            usage=_usage(results[0].prompt_tokens, sum(r.completion_tokens for r in results)),
        )

    return app


async def _sse(
    engine: Engine, pendings: list[Any], completion_id: str, model: str, include_usage: bool
) -> AsyncIterator[bytes]:
    """OpenAI's stream: a role delta, content deltas, a finish_reason chunk per choice, usage if asked, [DONE]."""
    created = int(time.time())

    def chunk(choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }
        if include_usage:
            body["usage"] = usage.model_dump() if usage else None
        return f"data: {json.dumps(body)}\n\n".encode()

    merged: asyncio.Queue[tuple[int, str, Any]] = asyncio.Queue()

    async def pump(index: int, pending: Any) -> None:
        try:
            async for kind, value in engine.stream(pending):
                await merged.put((index, kind, value))
        except Exception as exc:
            await merged.put((index, "error", exc))

    tasks = [asyncio.create_task(pump(i, p)) for i, p in enumerate(pendings)]
    finished: list[Generation] = []
    try:
        for i in range(len(pendings)):
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        while len(finished) < len(pendings):
            index, kind, value = await merged.get()
            if kind == "delta":
                yield chunk([{"index": index, "delta": {"content": value}, "finish_reason": None}])
            elif kind == "done":
                finished.append(value)
                yield chunk([{"index": index, "delta": {}, "finish_reason": value.finish_reason}])
            else:  # after the 200 an error travels as an event, as OpenAI sends it
                message = getattr(value, "message", None) or f"{type(value).__name__}: {value}"
                yield f"data: {json.dumps(error_body(message, 'server_error', 'generation_failed'))}\n\n".encode()
                return
        if include_usage:
            prompt = finished[0].prompt_tokens if finished else 0
            yield chunk([], _usage(prompt, sum(g.completion_tokens for g in finished)))
        yield b"data: [DONE]\n\n"
    finally:
        for task in tasks:
            task.cancel()
        for pending in pendings:
            pending.cancelled = True
