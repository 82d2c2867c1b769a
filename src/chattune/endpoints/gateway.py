"""The endpoint gateway: authenticates, picks a deployment and an instance, forwards, mirrors, supervises.

Every route except the health routes needs ``Authorization: Bearer <key>``. Keys, traffic, mirror traffic and
deployments are read from the workspace database on each request, so changes apply at once without a restart. The
instances themselves are started, probed and restarted by this process (chattune.endpoints.supervisor).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from chattune import processes
from chattune.endpoints.openapi import document_gateway, forwarded_route
from chattune.endpoints.supervisor import Instance, Supervisor
from chattune.entities import Deployment
from chattune.serving.app import MAX_BODY_BYTES
from chattune.serving.auth import PUBLIC_PATHS, require_key
from chattune.serving.disconnect import ClientDisconnected, closed_response, unless_disconnected
from chattune.serving.errors import BodyLimit, error_response, install_error_handlers
from chattune.serving.keys import matches
from chattune.settings import Settings
from chattune.store import open_store

DEPLOYMENT_HEADER = "azureml-model-deployment"
FORWARDED = ("/score", "/v1/chat/completions", "/v1/models")
RETRY_AFTER_S = "1"

log = logging.getLogger("chattune.gateway")


def pick_deployment(traffic: dict[str, int], rng: random.Random) -> str | None:
    live = {name: pct for name, pct in traffic.items() if pct > 0}
    if not live:
        return None
    return rng.choices(list(live), weights=list(live.values()))[0]


class _Metrics:
    def __init__(self, supervisor: Supervisor) -> None:
        self.registry = CollectorRegistry()
        labels = ["deployment", "code"]
        self.requests = Counter(
            "chattune_gateway_requests", "Requests by deployment and status", labels, registry=self.registry
        )
        self.mirrored = Counter(
            "chattune_gateway_mirrored_requests", "Copies sent to a shadow deployment", ["deployment", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        in_flight = Gauge("chattune_gateway_in_flight", "Requests in flight", ["deployment"], registry=self.registry)
        ready = Gauge(
            "chattune_gateway_ready_instances", "Instances in rotation", ["deployment"], registry=self.registry
        )
        restarts = Gauge("chattune_gateway_instance_restarts", "Instance restarts", registry=self.registry)

        def collect() -> None:
            for name, insts in supervisor.instances.items():
                in_flight.labels(name).set(sum(i.in_flight for i in insts))
                ready.labels(name).set(sum(i.state == "Ready" for i in insts))
            restarts.set(supervisor.restarts_total)

        self.refresh = collect


def create_gateway(settings: Settings, endpoint: str) -> FastAPI:
    store = open_store(settings)
    supervisor = Supervisor(settings, store, endpoint)
    metrics = _Metrics(supervisor)
    client = httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))
    rng = random.Random()
    background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(supervisor.run())
        yield
        task.cancel()
        await client.aclose()
        await supervisor.aclose()

    app = FastAPI(title=f"chattune endpoint {endpoint}", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)

    require_key(
        app,
        lambda key: matches(key, store.key_hashes(endpoint)),
        "missing or invalid key; send `Authorization: Bearer <key>`",
    )

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text: Prometheus' format
    async def prometheus() -> Response:
        metrics.refresh()
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def answer(dep: str, response: Response) -> Response:
        metrics.requests.labels(dep, str(response.status_code)).inc()
        return response

    async def send(dep: Deployment, inst: Instance, request: Request, body: bytes) -> httpx.Response:
        """Forward; returns once the instance starts answering. request_timeout_ms bounds that wait, which for
        a non-streamed answer is the whole generation (the instance sends nothing before it is done)."""
        upstream = client.build_request(
            request.method,
            f"{inst.url}{request.url.path}",
            content=body,
            headers={
                "content-type": request.headers.get("content-type", "application/json"),
                "authorization": f"Bearer {supervisor.token}",  # the client's key stays here
            },
        )
        return await asyncio.wait_for(client.send(upstream, stream=True), dep.request_timeout_ms / 1000)

    def timed_out(dep: Deployment) -> Response:
        return answer(
            dep.name,
            error_response(
                408,
                f"deployment {dep.name!r} did not answer within request_timeout_ms={dep.request_timeout_ms}",
                "request_timeout",
            ),
        )

    async def mirror(dep: Deployment, request: Request, body: bytes) -> None:
        """A copy for the shadow deployment; its answer is read and discarded, its failures never reach the client."""
        inst, _ = supervisor.pick(dep.name, dep.max_concurrent_requests_per_instance)
        if inst is None:
            metrics.mirrored.labels(dep.name, "skipped").inc()
            return
        inst.in_flight += 1
        try:
            response = await send(dep, inst, request, body)
            await response.aread()
            await response.aclose()
            metrics.mirrored.labels(dep.name, str(response.status_code)).inc()
        except (TimeoutError, httpx.HTTPError):
            metrics.mirrored.labels(dep.name, "error").inc()
        finally:
            inst.in_flight -= 1

    async def forward(request: Request) -> Response:
        deployments = {d.name: d for d in store.list_deployments(endpoint)}
        wanted = request.headers.get(DEPLOYMENT_HEADER)
        ep = store.get_endpoint(endpoint)
        if wanted:
            if wanted not in deployments:
                return error_response(
                    404,
                    f"deployment {wanted!r} not found on endpoint {endpoint!r}; have: "
                    f"{', '.join(deployments) or 'none'}",
                    "deployment_not_found",
                    DEPLOYMENT_HEADER,
                )
            name = wanted
        else:
            picked = pick_deployment(ep.traffic, rng)
            if picked is None or picked not in deployments:
                return answer(
                    "-",
                    error_response(
                        503,
                        f"no deployment receives traffic on {endpoint!r}; set it with "
                        f"`chattune endpoints traffic {endpoint} NAME=100` or send the {DEPLOYMENT_HEADER} header",
                        "no_traffic",
                    ),
                )
            name = picked
        dep = deployments[name]
        body = b""
        mirrored = False
        for attempt in range(dep.instance_count + 1):
            inst, full = supervisor.pick(dep.name, dep.max_concurrent_requests_per_instance)
            if inst is None:
                if full:
                    return answer(
                        dep.name,
                        error_response(
                            429,
                            f"deployment {dep.name!r} is at max_concurrent_requests_per_instance="
                            f"{dep.max_concurrent_requests_per_instance} on all {dep.instance_count} instance(s); "
                            "retry",
                            "too_many_requests",
                            headers={"Retry-After": RETRY_AFTER_S},
                        ),
                    )
                return answer(
                    dep.name,
                    error_response(503, f"deployment {dep.name!r} has no ready instance ({dep.state})", "not_ready"),
                )
            if not mirrored:
                body, mirrored = await request.body(), True
                if not wanted:  # Azure mirrors live traffic only, never a request aimed at one deployment
                    for shadow, pct in ep.mirror_traffic.items():
                        if pct > 0 and shadow in deployments and shadow != dep.name and rng.random() * 100 < pct:
                            task = asyncio.create_task(mirror(deployments[shadow], request, body))
                            background.add(task)
                            task.add_done_callback(background.discard)
            inst.in_flight += 1
            try:
                # A client that leaves closes the call to the instance too, and the instance stops generating.
                upstream = await unless_disconnected(request, send(dep, inst, request, body))
                break
            except ClientDisconnected:
                inst.in_flight -= 1
                return answer(dep.name, closed_response())
            except (TimeoutError, httpx.TimeoutException):
                inst.in_flight -= 1
                return timed_out(dep)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as exc:
                # The instance refused the connection, or closed it before answering (it died or is restarting;
                # kill -9 mid-request): nothing reached the client yet, and generating has no side effect, so the
                # request goes to another instance (as Envoy's retry on reset), and this one is out of rotation
                # until the supervisor has seen it ready again.
                inst.in_flight -= 1
                supervisor.suspect(inst)
                log.warning(
                    "%s/%s instance %d failed before answering: %s (attempt %d)",
                    endpoint, dep.name, inst.index, type(exc).__name__, attempt,
                )  # fmt: skip
            except httpx.HTTPError as exc:
                inst.in_flight -= 1
                return answer(
                    dep.name,
                    error_response(502, f"deployment {dep.name!r} is unreachable: {type(exc).__name__}", "bad_gateway"),
                )
        else:
            return answer(
                dep.name, error_response(502, f"no instance of deployment {dep.name!r} is reachable", "bad_gateway")
            )
        headers = {DEPLOYMENT_HEADER: dep.name}
        media_type = upstream.headers.get("content-type")
        if media_type and media_type.startswith("text/event-stream"):

            async def relay() -> AsyncIterator[bytes]:
                try:
                    async for chunk in upstream.aiter_raw():
                        yield chunk
                except httpx.HTTPError as exc:  # after the 200: an error event, as OpenAI sends it
                    yield f'data: {{"error": {{"message": "upstream failed: {type(exc).__name__}"}}}}\n\n'.encode()
                finally:
                    await upstream.aclose()
                    inst.in_flight -= 1

            metrics.requests.labels(dep.name, str(upstream.status_code)).inc()
            return StreamingResponse(relay(), status_code=upstream.status_code, media_type=media_type, headers=headers)
        try:
            content = await upstream.aread()
        except httpx.HTTPError as exc:
            return answer(
                dep.name,
                error_response(502, f"deployment {dep.name!r} failed mid-answer: {type(exc).__name__}", "bad_gateway"),
            )
        finally:
            await upstream.aclose()
            inst.in_flight -= 1
        return answer(
            dep.name, Response(content, status_code=upstream.status_code, media_type=media_type, headers=headers)
        )

    for path in FORWARDED:
        app.add_api_route(path, forward, methods=["GET"] if path == "/v1/models" else ["POST"], **forwarded_route(path))
    document_gateway(app, PUBLIC_PATHS)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="chattune endpoint gateway")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Access logs carry no headers, so keys never reach the log.
    processes.serve(create_gateway(Settings(), args.endpoint), args.fd, log_level="info")


if __name__ == "__main__":
    main()
