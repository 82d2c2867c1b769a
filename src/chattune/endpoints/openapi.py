"""The gateway's OpenAPI document: its forwarded routes described with the instance's own wire models.

The gateway forwards ``/score``, ``/v1/chat/completions`` and ``/v1/models`` as raw bytes (one generic handler,
nothing parsed), so FastAPI alone would publish them untyped. Here the document gets the same request and response
models as the instance (chattune.serving.protocol), the statuses the gateway adds (401, 408, 429, 502, ...), the
``azureml-model-deployment`` header and the bearer-key security scheme; how requests are forwarded is unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from chattune.serving.app import CHAT_RESPONSES
from chattune.serving.errors import documented_errors
from chattune.serving.protocol import ChatCompletionRequest, ModelList, ScoreOutput, ScoreRequest

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "endpointKey"
REQUEST_BODIES: dict[str, type[BaseModel]] = {"/score": ScoreRequest, "/v1/chat/completions": ChatCompletionRequest}
# What the gateway itself answers on a forwarded route, besides what the instance answers (passed through).
GATEWAY_ERRORS = (401, 404, 408, 429, 502, 503)
INSTANCE_ERRORS = (400, 413, 415, 422)


def _answers(path: str) -> dict[int | str, dict[str, Any]]:
    ok: dict[int | str, dict[str, Any]]
    if path == "/score":
        ok = {200: {"description": "One answer per conversation", "model": list[ScoreOutput]}}
    elif path == "/v1/chat/completions":
        ok = {200: CHAT_RESPONSES[200]}
    else:
        ok = {200: {"description": "The models the deployment serves", "model": ModelList}}
    errors = GATEWAY_ERRORS if path == "/v1/models" else sorted({*GATEWAY_ERRORS, *INSTANCE_ERRORS})
    return {**ok, **documented_errors(*errors)}


def forwarded_route(path: str) -> dict[str, Any]:
    """Keyword arguments for ``add_api_route`` of a forwarded path: its documented answers and request."""
    extra: dict[str, Any] = {
        "parameters": [
            {
                "name": "azureml-model-deployment",
                "in": "header",
                "required": False,
                "description": "Send the request to this deployment, whatever the traffic split",
                "schema": {"type": "string"},
            }
        ]
    }
    model = REQUEST_BODIES.get(path)
    if model is not None:
        extra["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    return {"responses": _answers(path), "openapi_extra": extra}


def document_gateway(app: FastAPI, public_paths: Iterable[str]) -> None:
    """Complete the OpenAPI document FastAPI generates for the gateway.

    Adds the request models' schemas (as the instance's document has them) and the key requirement, which every route
    but ``public_paths`` has.
    """
    generate = app.openapi
    public = frozenset(public_paths)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {})
        components.setdefault("schemas", {}).update(_request_schemas())
        components["securitySchemes"] = {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "the endpoint's primary or secondary key",
            }
        }
        schema["security"] = [{SECURITY_SCHEME: []}]
        for path, operations in schema.get("paths", {}).items():
            for operation in operations.values():
                if path in public:
                    operation["security"] = []
                else:
                    operation.setdefault("responses", {}).setdefault("401", _unauthorized())
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _request_schemas() -> dict[str, Any]:
    """The request models' component schemas exactly as FastAPI renders them for the instance.

    A twin app with the instance's typed handlers (never served) generates them.
    """
    twin = FastAPI()

    @twin.post("/score")
    async def score(body: ScoreRequest) -> None:
        return None

    @twin.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest) -> None:
        return None

    schemas: dict[str, Any] = twin.openapi()["components"]["schemas"]
    return {name: s for name, s in schemas.items() if name not in ("HTTPValidationError", "ValidationError")}


def _unauthorized() -> dict[str, Any]:
    (doc,) = documented_errors(401).values()
    return {
        "description": doc["description"],
        "content": {"application/json": {"schema": {"$ref": REF.format(model="ErrorResponse")}}},
    }
