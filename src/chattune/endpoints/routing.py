"""Where a gateway request goes: which deployment, which instance, held by a lease.

The deployment is the one the header names, else one drawn by the traffic split; the instance is the least busy ready
one, under the deployment's max concurrency.

A lease counts the request against its instance while it is held and gives the slot back however the request ends
(answer, error, disconnect, a stream that finishes later), so nobody counts in-flight requests by hand.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi.responses import JSONResponse

from chattune.endpoints.supervisor import Instance, Supervisor
from chattune.entities import Deployment, Endpoint
from chattune.errors import (
    ChattuneError,
    DeploymentNotFoundError,
    NoTrafficError,
    NotReadyError,
    TooManyRequestsError,
)
from chattune.serving.errors import coded_response
from chattune.store.base import Store

# Azure's header that sends a request to one deployment, whatever the traffic split says.
DEPLOYMENT_HEADER = "azureml-model-deployment"
RETRY_AFTER_S = "1"


class Refusal(Exception):
    """A request the gateway answers itself (no deployment or instance for it), in OpenAI's error shape.

    Attributes:
        counted_as: The deployment label /metrics counts it under; None: not counted.
    """

    def __init__(
        self,
        error: type[ChattuneError],
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        counted_as: str | None = None,
    ) -> None:
        super().__init__(message)
        self.error, self.message, self.param, self.headers = error, message, param, headers
        self.counted_as = counted_as

    @property
    def status(self) -> int:
        """The HTTP status, from the error table."""
        return self.error.http_status

    @property
    def code(self) -> str:
        """The error code in the answer's body."""
        return self.error.code

    def response(self) -> JSONResponse:
        """The answer the client gets."""
        return coded_response(self.error, self.message, self.param, self.headers)


@dataclass(frozen=True)
class Target:
    """A routed request: its deployment, the endpoint and its other deployments (for mirroring)."""

    deployment: Deployment
    endpoint: Endpoint
    deployments: dict[str, Deployment] = field(repr=False)
    chosen_by_header: bool


def pick_deployment(traffic: dict[str, int], rng: random.Random) -> str | None:
    """A deployment drawn by its traffic percentage; None when no deployment receives traffic."""
    live = {name: pct for name, pct in traffic.items() if pct > 0}
    if not live:
        return None
    return rng.choices(list(live), weights=list(live.values()))[0]


class Router:
    """Picks deployments and instances for one endpoint's gateway.

    Keys, traffic and deployments are read from the store on each request, so changes apply at once; instances
    and their states are the supervisor's.
    """

    def __init__(self, store: Store, endpoint: str, supervisor: Supervisor, rng: random.Random | None = None) -> None:
        self.store = store
        self.endpoint = endpoint
        self.supervisor = supervisor
        self.rng = rng or random.Random()
        self._turn = itertools.count()

    def route(self, wanted: str | None) -> Target:
        """The deployment a request goes to: ``wanted`` (the header), else one drawn by the traffic split.

        Raises:
            Refusal: 404 for an unknown deployment, 503 when no deployment receives traffic.
        """
        deployments = {d.name: d for d in self.store.list_deployments(self.endpoint)}
        ep = self.store.get_endpoint(self.endpoint)
        if wanted:
            if wanted not in deployments:
                raise Refusal(
                    DeploymentNotFoundError,
                    f"deployment {wanted!r} not found on endpoint {self.endpoint!r}; have: "
                    f"{', '.join(deployments) or 'none'}",
                    param=DEPLOYMENT_HEADER,
                )
            return Target(deployments[wanted], ep, deployments, chosen_by_header=True)
        picked = pick_deployment(ep.traffic, self.rng)
        if picked is None or picked not in deployments:
            raise Refusal(
                NoTrafficError,
                f"no deployment receives traffic on {self.endpoint!r}; set it with "
                f"`chattune endpoints traffic {self.endpoint} NAME=100` or send the {DEPLOYMENT_HEADER} header",
                counted_as="-",
            )
        return Target(deployments[picked], ep, deployments, chosen_by_header=False)

    def mirrors(self, target: Target) -> list[Deployment]:
        """The shadow deployments that get a copy of this request, each drawn by its mirror percentage.

        Azure mirrors live traffic only, never a request aimed at one deployment.
        """
        if target.chosen_by_header:
            return []
        return [
            target.deployments[shadow]
            for shadow, pct in target.endpoint.mirror_traffic.items()
            if pct > 0
            and shadow in target.deployments
            and shadow != target.deployment.name
            and self.rng.random() * 100 < pct
        ]

    def pick(self, dep: Deployment) -> Instance:
        """A ready instance with room for one more request, least busy first (ties taken in turn).

        Raises:
            Refusal: 429 with Retry-After when every ready instance is at max concurrency, 503 when none is ready.
        """
        limit = dep.settings.max_concurrent_requests_per_instance
        ready = [i for i in self.supervisor.instances.get(dep.name, []) if i.state == "Ready"]
        room = [i for i in ready if i.in_flight < limit * i.slots]  # slots: a Ray application's replicas
        if room:
            turn = next(self._turn)
            return min(room, key=lambda i: (i.in_flight, (i.index - turn) % len(room)))
        if ready:
            raise Refusal(
                TooManyRequestsError,
                f"deployment {dep.name!r} is at max_concurrent_requests_per_instance={limit} on all "
                f"{dep.settings.max_instance_count} instance(s); retry",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        raise Refusal(NotReadyError, f"deployment {dep.name!r} has no ready instance ({dep.state})")

    @contextlib.asynccontextmanager
    async def lease(self, dep: Deployment) -> AsyncIterator[Instance]:
        """Hold one request's slot on a picked instance until the block (or a stream handed the lease) ends.

        Raises:
            Refusal: as ``pick``.
        """
        inst = self.pick(dep)
        inst.in_flight += 1
        try:
            yield inst
        finally:
            inst.in_flight -= 1

    @staticmethod
    def suspect(inst: Instance) -> None:
        """A connection to it was refused: out of rotation until the supervisor sees it ready (or restarts it)."""
        if inst.state == "Ready":
            inst.state = "Starting"
