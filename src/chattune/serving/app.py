"""The serving app of one deployment instance: Azure ``/score``, OpenAI ``/v1/chat/completions``, models, health.

Instances listen on loopback behind the endpoint's gateway, which authenticates every request.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from chattune.errors import NotFoundError, UserError
from chattune.inference import GenerationParams
from chattune.serving.engine import Engine
from chattune.serving.errors import error_response, install_error_handlers
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
)


def create_app(engine: Engine) -> FastAPI:
    app = FastAPI(title="chattune instance", version="0.1.0")
    install_error_handlers(app)

    @app.on_event("startup")
    async def _start() -> None:
        engine.start()

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready", response_model=None)
    async def ready() -> dict[str, str] | JSONResponse:
        if engine.ready.is_set():
            return {"status": "ready"}
        if engine.failed:
            return error_response(503, f"model failed to load: {engine.failed}", "load_failed")
        return error_response(503, "model is loading", "loading")

    @app.get("/v1/models")
    async def models() -> ModelList:
        cards = [ModelCard(id=engine.base_name, created=engine.created, root=engine.base_name)]
        if engine.adapter_path:
            cards.append(
                ModelCard(id=engine.served_name, created=engine.created, root=engine.base_name, parent=engine.base_name)
            )
        return ModelList(data=cards)

    @app.post("/score")
    async def score(req: ScoreRequest) -> list[ScoreOutput]:
        p = req.input_data.parameters
        params = GenerationParams(
            max_new_tokens=p.max_new_tokens, temperature=p.temperature, top_p=p.top_p, do_sample=p.do_sample
        )
        conversations = [[m.model_dump() for m in conv] for conv in req.input_data.conversations()]
        results = await run_in_threadpool(engine.generate, conversations, params)
        return [
            ScoreOutput(
                output=r.text,
                finish_reason=r.finish_reason,
                usage=Usage(
                    prompt_tokens=r.prompt_tokens,
                    completion_tokens=r.completion_tokens,
                    total_tokens=r.prompt_tokens + r.completion_tokens,
                ),
            )
            for r in results
        ]

    @app.post("/v1/chat/completions")
    async def chat(req: ChatCompletionRequest) -> ChatCompletion:
        if req.stream:
            raise UserError("stream=true is not supported by this server version; send stream=false")
        if req.model and req.model not in (engine.served_name, engine.base_name):
            raise NotFoundError(
                f"model {req.model!r} is not served here; available: {engine.served_name}, {engine.base_name}"
            )
        sampling = req.temperature is not None and req.temperature > 0
        params = GenerationParams(
            max_new_tokens=req.max_completion_tokens or req.max_tokens or 256,
            temperature=req.temperature if req.temperature is not None else 1.0,
            top_p=req.top_p if req.top_p is not None else 1.0,
            do_sample=sampling,
            stop=req.stop_list(),
            seed=req.seed,
        )
        conversation = [m.model_dump() for m in req.messages]
        results = await run_in_threadpool(engine.generate, [conversation] * req.n, params)
        prompt_tokens = results[0].prompt_tokens
        completion_tokens = sum(r.completion_tokens for r in results)
        return ChatCompletion(
            id=f"chatcmpl-{secrets.token_hex(12)}",
            created=int(time.time()),
            model=req.model or engine.served_name,
            choices=[
                Choice(index=i, message=ChoiceMessage(content=r.text), finish_reason=r.finish_reason)
                for i, r in enumerate(results)
            ],
            usage=Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )

    return app


def build_engine(args: Any) -> Engine:
    return Engine(args.base, args.adapter, args.name, args.base_name, max_new_tokens_cap=args.max_new_tokens_cap)
