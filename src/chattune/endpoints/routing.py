"""Where a gateway request goes: which deployment, which instance, held by a lease.

The deployment is the one the header names, else one drawn by the traffic split; the instance is the least busy ready
one, under the deployment's max concurrency. When every ready instance is at it, the request waits in the
deployment's queue, first come first served, for up to ``max_queue_wait_ms`` (with at most ``max_queue_length``
waiting), as vLLM and TGI queue what they cannot batch yet; only then is the answer a 429 with ``Retry-After``.

A lease counts the request against its instance while it is held and gives the slot back however the request ends
(answer, error, disconnect, a stream that finishes later), so nobody counts in-flight requests by hand.
"""

from __future__ import annotations

import asyncio
import collections
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
# How often a queued request looks for a free instance besides being woken by a finished one (an instance that
# became ready, a Ray replica added by the autoscaler, a slot whose waiter left).
QUEUE_POLL_S = 0.25


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


class WaitingLine:
    """The requests of one deployment that wait for a free instance, first come first served."""

    def __init__(self) -> None:
        self._line: collections.deque[asyncio.Future[None]] = collections.deque()

    def __len__(self) -> int:
        return len(self._line)

    async def wait(self, timeout_s: float, *, front: bool = False) -> None:
        """Wait in line until woken or ``timeout_s`` passed (``front``: a request that was woken and lost its turn)."""
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        (self._line.appendleft if front else self._line.append)(turn)
        try:
            await asyncio.wait_for(turn, timeout_s)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(ValueError):
                self._line.remove(turn)  # still there after a timeout or a cancellation (the client left)

    def wake(self) -> None:
        """A slot was freed: the first in line looks for it."""
        while self._line:
            turn = self._line.popleft()
            if not turn.done():
                turn.set_result(None)
                return


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
        self.lines: collections.defaultdict[str, WaitingLine] = collections.defaultdict(WaitingLine)

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

    def pick(self, dep: Deployment) -> Instance | None:
        """A ready instance with room for one more request, least busy first (ties taken in turn); None: all busy.

        Raises:
            Refusal: 503 when no instance is ready.
        """
        ready, limit = self.supervisor.serving(dep)
        if not ready:
            raise Refusal(NotReadyError, f"deployment {dep.name!r} has no ready instance ({dep.state})")
        room = [i for i in ready if i.in_flight < limit * i.slots]  # slots: a Ray application's replicas
        if not room:
            return None
        turn = next(self._turn)
        return min(room, key=lambda i: (i.in_flight, (i.index - turn) % len(room)))

    async def admit(self, dep: Deployment) -> Instance:
        """An instance with a free slot: at once when one is free and nobody waits, else after a wait in line.

        Raises:
            Refusal: 429 with Retry-After when the line is full or the wait exceeded ``max_queue_wait_ms``; 503 when no
                instance is ready.
        """
        line, settings = self.line(dep), dep.settings
        if not line and (inst := self.pick(dep)):
            return inst
        busy = (
            f"deployment {dep.name!r} is at max_concurrent_requests_per_instance="
            f"{settings.max_concurrent_requests_per_instance} on all {settings.max_instance_count} instance(s)"
        )
        if len(line) >= settings.max_queue_length:
            raise self._too_many(f"{busy} and max_queue_length={settings.max_queue_length} requests wait already")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.max_queue_wait_ms / 1000
        front = False
        while (remaining := deadline - loop.time()) > 0:
            await line.wait(min(remaining, QUEUE_POLL_S), front=front)
            if inst := self.pick(dep):
                return inst
            front = True  # woken or polled and still no room: keep the place at the head of the line
        raise self._too_many(f"{busy}; waited max_queue_wait_ms={settings.max_queue_wait_ms} for a free one")

    @staticmethod
    def _too_many(message: str) -> Refusal:
        return Refusal(TooManyRequestsError, f"{message}; retry", headers={"Retry-After": RETRY_AFTER_S})

    @contextlib.asynccontextmanager
    async def lease(self, dep: Deployment, *, queue: bool = True) -> AsyncIterator[Instance]:
        """Hold one request's slot on an instance until the block (or a stream handed the lease) ends.

        Args:
            dep: The deployment.
            queue: Wait in the deployment's line when every instance is busy (False: a 429 at once, for mirrored
                copies, which must never delay live traffic).

        Raises:
            Refusal: as ``admit``.
        """
        inst = await self.admit(dep) if queue else self.pick(dep)
        if inst is None:
            raise self._too_many(f"deployment {dep.name!r} has no free instance for a mirrored copy")
        inst.in_flight += 1
        try:
            yield inst
        finally:
            inst.in_flight -= 1
            self.line(dep).wake()

    def line(self, dep: Deployment) -> WaitingLine:
        """The line a request of ``dep`` waits in: its instances'.

        A deployment served from another's instances waits with that one's requests, first come first served.
        """
        return self.lines[dep.share_base_with or dep.name]

    @staticmethod
    def suspect(inst: Instance) -> None:
        """A connection to it was refused: out of rotation until the supervisor sees it ready (or restarts it)."""
        if inst.state == "Ready":
            inst.state = "Starting"
