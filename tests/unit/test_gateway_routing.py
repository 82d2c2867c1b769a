"""The gateway's routing: least busy ready instance, leases that always give the slot back, the deployment's waiting
line (first come first served, bounded in length and time), 429 / 503 refusals."""

from __future__ import annotations

import asyncio
import functools
import types

import pytest

from chattune.endpoints.routing import Refusal, Router
from chattune.endpoints.supervisor import Instance, Supervisor
from chattune.entities import Deployment, DeploymentSettings, ProvisioningState


def _router(*states: str) -> tuple[Router, list[Instance]]:
    insts = [Instance("blue", i, state=state) for i, state in enumerate(states)]
    supervisor = types.SimpleNamespace(instances={"blue": insts}, hosts={})
    supervisor.serving = functools.partial(Supervisor.serving, supervisor)  # the real rule, over these instances
    return Router(store=None, endpoint="ep", supervisor=supervisor), insts  # type: ignore[arg-type]


def _dep(max_concurrent: int, instances: int, **queue: int) -> Deployment:
    settings = DeploymentSettings(
        max_concurrent_requests_per_instance=max_concurrent, instance_count=instances, **queue
    )
    return Deployment("ep", "blue", "m", "1", ProvisioningState.SUCCEEDED, 0.0, **settings.columns())


def test_leases_fill_the_least_busy_instance_then_refuse_with_429_without_a_queue() -> None:
    router, insts = _router("Ready", "Ready", "Starting")
    dep = _dep(2, 3, max_queue_wait_ms=0)

    async def run() -> None:
        async with router.lease(dep) as a, router.lease(dep) as b:
            assert {a.index, b.index} == {0, 1}  # spread before stacking
            async with router.lease(dep), router.lease(dep):
                assert [i.in_flight for i in insts] == [2, 2, 0]  # never the instance that is not ready
                with pytest.raises(Refusal) as full:
                    async with router.lease(dep):
                        pass
                assert full.value.status == 429 and full.value.headers == {"Retry-After": "1"}
                assert full.value.code == "too_many_requests"
                assert "max_queue_wait_ms=0" in full.value.message
        assert [i.in_flight for i in insts] == [0, 0, 0]

    asyncio.run(run())


def test_a_lease_is_given_back_when_the_request_fails() -> None:
    router, insts = _router("Ready")

    async def run() -> None:
        with pytest.raises(TimeoutError):
            async with router.lease(_dep(1, 1)):
                raise TimeoutError
        assert insts[0].in_flight == 0

    asyncio.run(run())


def test_a_busy_deployment_queues_requests_first_come_first_served() -> None:
    """Three requests beyond the one slot wait in line and get it in the order they came, each as soon as the one
    before gives it back; the line's length is what /metrics shows."""
    router, insts = _router("Ready")
    dep = _dep(1, 1)
    order: list[int] = []

    async def request(n: int, release: asyncio.Event) -> None:
        async with router.lease(dep):
            order.append(n)
            await release.wait()

    async def run() -> None:
        releases = [asyncio.Event() for _ in range(4)]
        tasks = []
        for n in range(4):
            tasks.append(asyncio.create_task(request(n, releases[n])))
            await asyncio.sleep(0.01)  # arrive in order
        assert order == [0] and len(router.lines["blue"]) == 3 and insts[0].in_flight == 1
        for n in range(4):
            releases[n].set()
            await asyncio.sleep(0.02)
            assert order == list(range(min(n + 2, 4)))
        await asyncio.gather(*tasks)
        assert insts[0].in_flight == 0 and len(router.lines["blue"]) == 0

    asyncio.run(run())


def test_the_queue_is_bounded_in_time_and_length_then_429() -> None:
    router, insts = _router("Ready")
    dep = _dep(1, 1, max_queue_wait_ms=100, max_queue_length=1)

    async def run() -> None:
        async with router.lease(dep):
            waiter = asyncio.create_task(router.admit(dep))
            await asyncio.sleep(0.01)
            with pytest.raises(Refusal) as full:  # the one place in line is taken: refused at once
                await router.admit(dep)
            assert full.value.status == 429 and "max_queue_length=1" in full.value.message
            with pytest.raises(Refusal) as waited:
                await waiter
            assert waited.value.status == 429 and "waited max_queue_wait_ms=100" in waited.value.message
            assert full.value.headers == waited.value.headers == {"Retry-After": "1"}
        assert len(router.lines["blue"]) == 0 and insts[0].in_flight == 0

    asyncio.run(run())


def test_a_request_that_leaves_the_line_frees_its_place_and_mirrors_never_wait() -> None:
    router, insts = _router("Ready")
    dep = _dep(1, 1, max_queue_length=1)

    async def run() -> None:
        async with router.lease(dep):
            gone = asyncio.create_task(router.admit(dep))
            await asyncio.sleep(0.01)
            gone.cancel()  # the client disconnected while it waited
            await asyncio.sleep(0.01)
            assert len(router.lines["blue"]) == 0
            nxt = asyncio.create_task(router.admit(dep))  # the place it held is free again
            await asyncio.sleep(0.01)
            assert not nxt.done()
            with pytest.raises(Refusal) as copy:
                async with router.lease(dep, queue=False):
                    pass
            assert copy.value.status == 429
        assert await nxt is insts[0]

    asyncio.run(run())


def test_no_ready_instance_is_a_503() -> None:
    router, _ = _router("Starting", "NotReady")
    with pytest.raises(Refusal) as caught:
        router.pick(_dep(1, 2))
    assert caught.value.status == 503 and caught.value.code == "not_ready"


def test_a_ray_application_holds_its_replicas_requests_and_serves_own_5xx_is_retried() -> None:
    """A Ray deployment is one "instance" (its Serve application) with a slot per replica: 2 replicas x 2 requests
    are admitted, the fifth is 429. A plain-text 5xx from Serve's proxy (a replica died) is retried; the app's own
    JSON errors, and any answer of a local instance, are the client's."""
    import httpx

    from chattune.endpoints.forwarding import Forwarder

    router, insts = _router("Ready")
    insts[0].prefix, insts[0].slots = "/ep/blue", 2
    dep = _dep(2, 2)
    leases = [router.pick(dep) for _ in range(4)]
    for inst in leases:
        assert inst is not None
        inst.in_flight += 1
    assert router.pick(dep) is None  # all 4 slots taken: the next request waits in line

    def answer(status: int, media: str) -> httpx.Response:
        return httpx.Response(status, headers={"content-type": media}, content=b"x")

    async def check() -> list[bool]:
        ray_app, local = insts[0], Instance("blue", 1, state="Ready")
        return [
            await Forwarder.failed_in_serve(ray_app, answer(500, "text/plain; charset=utf-8")),
            await Forwarder.failed_in_serve(ray_app, answer(503, "text/plain")),
            await Forwarder.failed_in_serve(ray_app, answer(500, "application/json")),
            await Forwarder.failed_in_serve(ray_app, answer(200, "text/plain")),
            await Forwarder.failed_in_serve(local, answer(500, "text/plain")),
        ]

    assert asyncio.run(check()) == [True, True, False, False, False]


def test_a_deployment_sharing_anothers_base_uses_its_instances_that_have_its_adapter_and_waits_in_its_line() -> None:
    router, insts = _router("Ready", "Ready")
    host = _dep(1, 2, max_queue_wait_ms=2000)
    guest = Deployment(
        "ep", "green", "other", "1", ProvisioningState.SUCCEEDED, 0.0, share_base_with="blue",
        **DeploymentSettings(max_queue_wait_ms=2000).columns(),
    )  # fmt: skip
    router.supervisor.hosts = {"blue": host}
    insts[1].adapters = {"other:1": "/adapters/other"}  # only instance 1 has loaded green's adapter so far

    async def run() -> None:
        async with router.lease(guest) as got:
            assert got.index == 1 and insts[1].in_flight == 1
            async with router.lease(host) as other:
                assert other.index == 0  # the host's own requests go anywhere
            waiting = asyncio.create_task(_hold(router, guest))
            await asyncio.sleep(0.05)
            assert len(router.line(host)) == 1 and router.line(guest) is router.line(host)  # one line: the host's
        assert (await waiting) == 1  # woken when the slot it waited for came free
        router.supervisor.hosts = {}  # the host is gone: nothing serves the guest
        with pytest.raises(Refusal) as gone:
            async with router.lease(guest):
                pass
        assert gone.value.status == 503

    asyncio.run(run())


async def _hold(router: Router, dep: Deployment) -> int:
    async with router.lease(dep) as inst:
        return inst.index


def test_the_cores_are_shared_between_the_local_instances_of_every_endpoint_of_the_workspace() -> None:
    import os
    import subprocess

    gone = subprocess.Popen(["true"])
    gone.wait()
    alive, dead = os.getpid(), gone.pid

    def dep(endpoint: str, name: str, count: int = 1, **fields: object) -> Deployment:
        fields.setdefault("state", ProvisioningState.SUCCEEDED)
        return Deployment(endpoint, name, "m", "1", created_at=0.0, instance_count=count, **fields)  # type: ignore[arg-type]

    own = {  # this endpoint's: what they want, running yet or not
        "blue": dep("ep", "blue", 2),
        "green": dep("ep", "green", 1, state=ProvisioningState.CREATING),
        "broken": dep("ep", "broken", 3, state=ProvisioningState.FAILED),  # runs nothing
        "on-ray": dep("ep", "on-ray", 2, compute="dev"),  # Ray's replicas, on Ray's CPUs
    }
    others = [  # another endpoint's: the instances whose processes run
        dep("other", "a", 2, instances=[{"index": 0, "pid": alive}, {"index": 1, "pid": dead}]),
        dep("other", "guest", 1, share_base_with="a", instances=[{"index": 0, "pid": alive, "on": "a"}]),
        dep("other", "r", 1, compute="dev", instances=[{"index": 0, "pid": alive}]),
    ]
    store = types.SimpleNamespace(
        list_endpoints=lambda: [types.SimpleNamespace(name="ep"), types.SimpleNamespace(name="other")],
        list_deployments=lambda endpoint: others if endpoint == "other" else list(own.values()),
    )
    supervisor = types.SimpleNamespace(store=store, endpoint="ep")
    assert Supervisor._machine_instances(supervisor, own) == 2 + 1 + 1  # type: ignore[arg-type]
