"""The routes of one deployment instance.

Azure ``/score``, OpenAI ``/v1/chat/completions`` (streamed too), ``/v1/models``, health probes and Prometheus
``/metrics``.

Routes are thin: parse (the wire models of chattune.serving.protocol), authorize (the gateway's token, one
middleware), call the chat service (chattune.serving.chat), shape the answer. Instances listen on loopback behind
the endpoint's gateway, which authenticates every client.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chattune.errors import ModelLoadFailedError, ModelLoadingError
from chattune.serving import sse
from chattune.serving.auth import BearerAuth, route_path
from chattune.serving.chat import ChatService
from chattune.serving.disconnect import unless_disconnected
from chattune.serving.engine import Engine
from chattune.serving.errors import BodyLimit, coded_response, documented_errors, install_error_handlers
from chattune.serving.keys import hash_key, matches
from chattune.serving.protocol import (
    SERVED_MODEL_HEADER,
    AdapterLoad,
    ChatCompletion,
    ChatCompletionRequest,
    ModelList,
    ScoreOutput,
    ScoreRequest,
    ThreadsSetting,
)

MAX_BODY_BYTES = 4 * 2**20

# What an instance answers to a generation request besides 200, each in OpenAI's error shape.
REQUEST_ERRORS = (400, 413, 415, 422, 503)
CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": ChatCompletion,
        "description": "The completion; with `stream: true`, server-sent `chat.completion.chunk` events",
        # OpenAPI 3.1: the schema of an event stream describes one event
        "content": {
            sse.MEDIA_TYPE: {
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


def create_app(engine: Engine, *, token: str | None, max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """The serving app of one instance.

    Args:
        engine: The engine that generates (loaded in the background when the app starts).
        token: The bearer token every route but the health routes requires (the gateway's); None only for an app
            that no socket exposes (in-process tests).
        max_body_bytes: Larger request bodies are answered 413.
    """
    app = FastAPI(title="chattune instance", version="0.1.0")
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    if token is not None:
        hashes = {"gateway": hash_key(token)}  # compared as the gateway compares endpoint keys
        app.add_middleware(
            BearerAuth,
            accepts=lambda presented: matches(presented, hashes),
            refusal="this instance answers its endpoint's gateway only; call the endpoint's scoring URI with an "
            "endpoint key",
        )
    metrics = engine.metrics
    service = ChatService(engine)

    @app.on_event("startup")
    async def _start() -> None:
        engine.start()

    @app.middleware("http")
    async def measure(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.monotonic()
        response = await call_next(request)
        route = route_path(request.scope) or request.url.path  # less a proxy's route prefix (Ray Serve)
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
            return coded_response(ModelLoadFailedError, f"model failed to load: {engine.failed}")
        return coded_response(ModelLoadingError, "model is loading")

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text: Prometheus' format
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models(request: Request) -> ModelList:
        return service.models(request.headers.get(SERVED_MODEL_HEADER))

    @app.post("/score", responses=documented_errors(*REQUEST_ERRORS))
    async def score(req: ScoreRequest, request: Request) -> list[ScoreOutput]:
        return await unless_disconnected(request, service.score(req, request.headers.get(SERVED_MODEL_HEADER)))

    @app.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
    async def chat(req: ChatCompletionRequest, request: Request) -> ChatCompletion | StreamingResponse:
        if req.model is None and (served := request.headers.get(SERVED_MODEL_HEADER)):
            req = req.model_copy(update={"model": served})
        if req.stream:
            return StreamingResponse(await service.stream(req), media_type=sse.MEDIA_TYPE)
        return await unless_disconnected(request, service.complete(req))

    @app.put("/adapters/{name}", status_code=204, responses=documented_errors(400, 404, 409, 422, 503))
    async def add_adapter(name: str, body: AdapterLoad) -> Response:
        """Load a LoRA adapter of this base while serving (the gateway's, for a deployment that shares it)."""
        await engine.add_adapter(name, body.path)
        return Response(status_code=204)

    @app.delete("/adapters/{name}", status_code=204, responses=documented_errors(404, 409, 503))
    async def remove_adapter(name: str) -> Response:
        """Unload an added adapter once its requests are done."""
        await engine.remove_adapter(name)
        return Response(status_code=204)

    @app.put("/threads", status_code=204, responses=documented_errors(400, 422, 503))
    async def set_threads(body: ThreadsSetting) -> Response:
        """Share the machine's cores: the torch threads of this instance's forward passes (the gateway's call)."""
        await engine.set_threads(body.threads)
        return Response(status_code=204)

    return app
