"""The gateway's routing: least busy ready instance, leases that always give the slot back, 429 / 503 refusals."""

from __future__ import annotations

import asyncio
import types

import pytest

from chattune.endpoints.routing import Refusal, Router
from chattune.endpoints.supervisor import Instance
from chattune.entities import Deployment, DeploymentSettings, ProvisioningState


def _router(*states: str) -> tuple[Router, list[Instance]]:
    insts = [Instance("blue", i, state=state) for i, state in enumerate(states)]
    supervisor = types.SimpleNamespace(instances={"blue": insts})
    return Router(store=None, endpoint="ep", supervisor=supervisor), insts  # type: ignore[arg-type]


def _dep(max_concurrent: int, instances: int) -> Deployment:
    settings = DeploymentSettings(max_concurrent_requests_per_instance=max_concurrent, instance_count=instances)
    return Deployment("ep", "blue", "m", "1", ProvisioningState.SUCCEEDED, 0.0, **settings.columns())


def test_leases_fill_the_least_busy_instance_then_refuse_with_429() -> None:
    router, insts = _router("Ready", "Ready", "Starting")
    dep = _dep(2, 3)

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


def test_no_ready_instance_is_a_503() -> None:
    router, _ = _router("Starting", "NotReady")
    with pytest.raises(Refusal) as caught:
        router.pick(_dep(1, 2))
    assert caught.value.status == 503 and caught.value.code == "not_ready"
