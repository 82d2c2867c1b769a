"""The endpoint gateway: authenticates, picks a deployment (header or traffic split), forwards to its instance.

Every route except the health routes needs ``Authorization: Bearer <key>``. The endpoint's keys, traffic and
deployments are read from the workspace database on each request, so changes apply at once without a restart.
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Awaitable, Callable

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response

from chattune.endpoints.keys import bearer, matches
from chattune.entities import Deployment, ProvisioningState
from chattune.serving.errors import error_response, install_error_handlers
from chattune.settings import Settings
from chattune.store import SqliteStore

PUBLIC_PATHS = frozenset({"/health/live", "/health/ready"})
DEPLOYMENT_HEADER = "azureml-model-deployment"
FORWARDED = ("/score", "/v1/chat/completions", "/v1/models")


def pick_deployment(traffic: dict[str, int], rng: random.Random) -> str | None:
    live = {name: pct for name, pct in traffic.items() if pct > 0}
    if not live:
        return None
    return rng.choices(list(live), weights=list(live.values()))[0]


def create_gateway(settings: Settings, endpoint: str) -> FastAPI:
    store = SqliteStore(settings.db_path)
    client = httpx.AsyncClient(timeout=None)
    rng = random.Random()
    app = FastAPI(title=f"chattune endpoint {endpoint}", version="0.1.0")
    install_error_handlers(app)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.url.path in PUBLIC_PATHS:
            return await call_next(request)
        key = bearer(request.headers.get("authorization"))
        if not matches(key, store.key_hashes(endpoint)):
            return error_response(
                401,
                "missing or invalid key; send `Authorization: Bearer <key>`",
                "invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return await call_next(request)

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    async def forward(request: Request) -> Response:
        deployments = {d.name: d for d in store.list_deployments(endpoint)}
        wanted = request.headers.get(DEPLOYMENT_HEADER)
        if wanted:
            if wanted not in deployments:
                return error_response(
                    404,
                    f"deployment {wanted!r} not found on endpoint {endpoint!r}; have: "
                    f"{', '.join(deployments) or 'none'}",
                    "deployment_not_found",
                    DEPLOYMENT_HEADER,
                )
            name: str | None = wanted
        else:
            name = pick_deployment(store.get_endpoint(endpoint).traffic, rng)
            if name is None:
                return error_response(
                    503,
                    f"no deployment receives traffic on {endpoint!r}; set it with "
                    f"`chattune endpoints traffic {endpoint} NAME=100` or send the {DEPLOYMENT_HEADER} header",
                    "no_traffic",
                )
        dep: Deployment = deployments[name]  # type: ignore[index]
        if dep.state != ProvisioningState.SUCCEEDED or not dep.port:
            return error_response(503, f"deployment {dep.name!r} is {dep.state}", "deployment_not_ready")
        url = f"http://{settings.host}:{dep.port}{request.url.path}"
        headers = {"content-type": request.headers.get("content-type", "application/json")}
        try:
            upstream = await client.request(
                request.method,
                url,
                content=await request.body(),
                headers=headers,
                timeout=dep.request_timeout_ms / 1000,
            )
        except httpx.TimeoutException:
            return error_response(
                408,
                f"deployment {dep.name!r} did not answer within request_timeout_ms={dep.request_timeout_ms}",
                "request_timeout",
            )
        except httpx.HTTPError as exc:
            return error_response(502, f"deployment {dep.name!r} is unreachable: {type(exc).__name__}", "bad_gateway")
        return Response(
            upstream.content,
            status_code=upstream.status_code,
            media_type=upstream.headers.get("content-type"),
            headers={DEPLOYMENT_HEADER: dep.name},
        )

    for path in FORWARDED:
        app.add_api_route(path, forward, methods=["GET"] if path == "/v1/models" else ["POST"])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="chattune endpoint gateway")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Access logs carry no headers, so keys never reach the log.
    uvicorn.run(create_gateway(Settings(), args.endpoint), fd=args.fd, log_level="info")


if __name__ == "__main__":
    main()
