"""The endpoint gateway: authenticates, picks a deployment and an instance, forwards, mirrors, supervises.

Every route except the health routes needs ``Authorization: Bearer <key>``. Keys, traffic, mirror traffic and
deployments are read from the workspace database on each request, so changes apply at once without a restart. The
instances themselves are started, probed and restarted by this process (chattune.endpoints.supervisor); where a
request goes is chattune.endpoints.routing, how it gets there chattune.endpoints.forwarding. The routes here only
parse, call those and count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from chattune import processes
from chattune.endpoints.forwarding import REFUSED, Forwarder
from chattune.endpoints.openapi import document_gateway, forwarded_route
from chattune.endpoints.routing import DEPLOYMENT_HEADER, Refusal, Router, Target
from chattune.endpoints.supervisor import Supervisor
from chattune.entities import Deployment
from chattune.errors import BadGatewayError, RequestTimeoutError
from chattune.serving.app import MAX_BODY_BYTES
from chattune.serving.auth import PUBLIC_PATHS, BearerAuth
from chattune.serving.disconnect import ClientDisconnected, closed_response, unless_disconnected
from chattune.serving.errors import BodyLimit, coded_response, install_error_handlers
from chattune.serving.keys import matches
from chattune.settings import Settings
from chattune.store import open_store

FORWARDED = ("/score", "/v1/chat/completions", "/v1/models")

log = logging.getLogger("chattune.gateway")


class GatewayMetrics:
    """The gateway's Prometheus metrics.

    Answers and mirrored copies are counted by deployment; instance and queue gauges are read from the supervisor and
    the router at scrape time.
    """

    def __init__(self, router: Router) -> None:
        self.registry = CollectorRegistry()
        self.router = router
        self.supervisor = router.supervisor
        labels = ["deployment", "code"]
        self.requests = Counter(
            "chattune_gateway_requests", "Requests by deployment and status", labels, registry=self.registry
        )
        self.mirrored = Counter(
            "chattune_gateway_mirrored_requests", "Copies sent to a shadow deployment", ["deployment", "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self._in_flight = Gauge(
            "chattune_gateway_in_flight", "Requests in flight", ["deployment"], registry=self.registry
        )
        self._ready = Gauge(
            "chattune_gateway_ready_instances", "Instances in rotation", ["deployment"], registry=self.registry
        )
        self._restarts = Gauge("chattune_gateway_instance_restarts", "Instance restarts", registry=self.registry)
        self._queued = Gauge(
            "chattune_gateway_queued_requests", "Requests waiting for a free instance", ["deployment"],
            registry=self.registry,
        )  # fmt: skip

    def count(self, deployment: str | None, response: Response) -> Response:
        """Count an answer under its deployment (None: not counted) and pass it on."""
        if deployment is not None:
            self.requests.labels(deployment, str(response.status_code)).inc()
        return response

    def scrape(self) -> bytes:
        """The metrics in Prometheus' text format, the instance gauges as they are now."""
        for name, insts in self.supervisor.instances.items():
            self._in_flight.labels(name).set(sum(i.in_flight for i in insts))
            self._ready.labels(name).set(sum(i.state == "Ready" for i in insts))
        for name, line in self.router.lines.items():
            self._queued.labels(name).set(len(line))
        self._restarts.set(self.supervisor.restarts_total)
        return generate_latest(self.registry)


def create_gateway(settings: Settings, endpoint: str) -> FastAPI:
    """The gateway app of one endpoint (its lifespan runs the instances' supervisor)."""
    store = open_store(settings)
    supervisor = Supervisor(settings, store, endpoint)
    router = Router(store, endpoint, supervisor)
    forwarder = Forwarder(supervisor.token)
    metrics = GatewayMetrics(router)
    background: set[asyncio.Task[None]] = set()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(supervisor.run())
        yield
        task.cancel()
        await forwarder.aclose()
        await supervisor.aclose()

    app = FastAPI(title=f"chattune endpoint {endpoint}", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(
        BearerAuth,
        accepts=lambda key: matches(key, store.key_hashes(endpoint)),
        refusal="missing or invalid key; send `Authorization: Bearer <key>`",
    )

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/health/ready")
    async def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/metrics", response_class=PlainTextResponse)  # documented as text: Prometheus' format
    async def prometheus() -> Response:
        return Response(metrics.scrape(), media_type=CONTENT_TYPE_LATEST)

    def mirror(target: Target, request: Request, body: bytes) -> None:
        async def copy(shadow: Deployment) -> None:
            metrics.mirrored.labels(shadow.name, await forwarder.mirror(router, shadow, request, body)).inc()

        for shadow in router.mirrors(target):
            task = asyncio.create_task(copy(shadow))
            background.add(task)
            task.add_done_callback(background.discard)

    async def forward(request: Request) -> Response:
        try:
            target = router.route(request.headers.get(DEPLOYMENT_HEADER))
        except Refusal as refusal:
            return metrics.count(refusal.counted_as, refusal.response())
        dep = target.deployment
        # Read first: the disconnect watcher below consumes what the client sends next.
        body = await request.body()
        mirrored = False
        try:
            for attempt in range(dep.settings.max_instance_count + 1):
                async with contextlib.AsyncExitStack() as lease:
                    # A client that leaves while its request waits in the deployment's line leaves the line.
                    inst = await unless_disconnected(request, lease.enter_async_context(router.lease(dep)))
                    if not mirrored:
                        mirror(target, request, body)
                        mirrored = True
                    try:
                        # A client that leaves closes the call to the instance too, and the instance stops.
                        upstream = await unless_disconnected(request, forwarder.send(dep, inst, request, body))
                    except REFUSED as exc:
                        # The instance refused the connection, or closed it before answering (it died or is
                        # restarting; kill -9 mid-request): nothing reached the client yet, and generating has no
                        # side effect, so the request goes to another instance (as Envoy's retry on reset), and
                        # this one is out of rotation until the supervisor has seen it ready again.
                        router.suspect(inst)
                        log.warning(
                            "%s/%s instance %d failed before answering: %s (attempt %d)",
                            endpoint, dep.name, inst.index, type(exc).__name__, attempt,
                        )  # fmt: skip
                        continue
                    if await forwarder.failed_in_serve(inst, upstream):
                        # Ray Serve's proxy answered for a replica that died before it answered (its own plain-text
                        # 5xx, never one of the app's): as a reset above, retried, and Serve routes to another.
                        log.warning(
                            "%s/%s: Serve failed before the app answered: %d (attempt %d)",
                            endpoint, dep.name, upstream.status_code, attempt,
                        )  # fmt: skip
                        continue
                    # The lease goes with the answer: a stream holds its slot until it ends.
                    return metrics.count(dep.name, await forwarder.answer(dep, upstream, lease.pop_all()))
        except Refusal as refusal:
            return metrics.count(dep.name, refusal.response())
        except ClientDisconnected:
            return metrics.count(dep.name, closed_response())
        except (TimeoutError, httpx.TimeoutException):
            timeout_ms = dep.settings.request_timeout_ms
            message = f"deployment {dep.name!r} did not answer within request_timeout_ms={timeout_ms}"
            return metrics.count(dep.name, coded_response(RequestTimeoutError, message))
        except httpx.HTTPError as exc:
            message = f"deployment {dep.name!r} is unreachable: {type(exc).__name__}"
            return metrics.count(dep.name, coded_response(BadGatewayError, message))
        message = f"no instance of deployment {dep.name!r} is reachable"
        return metrics.count(dep.name, coded_response(BadGatewayError, message))

    for path in FORWARDED:
        app.add_api_route(path, forward, methods=["GET"] if path == "/v1/models" else ["POST"], **forwarded_route(path))
    document_gateway(app, PUBLIC_PATHS)
    return app


def main() -> None:
    """Serve one endpoint's gateway on the socket the parent bound."""
    parser = argparse.ArgumentParser(description="chattune endpoint gateway")
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Access logs carry no headers, so keys never reach the log.
    processes.serve(create_gateway(Settings(), args.endpoint), args.fd, log_level="info")


if __name__ == "__main__":
    main()
