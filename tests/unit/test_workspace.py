"""The public surface: one Workspace with typed services, pages from every list call, schemas built from entities."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from chattune.entities import Endpoint, Job, JobStatus, ProvisioningState, StepRun
from chattune.schemas import EndpointKeys, JobList, JobPublic, JobSummary
from chattune.settings import Settings
from chattune.store import Page, SqliteStore
from chattune.workspace import CatalogService, ComputeService, DataService, Workspace


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CHATTUNE_HOME", str(tmp_path / "home"))
    return Settings()


def test_every_service_is_a_typed_attribute(settings: Settings) -> None:
    from chattune.endpoints.service import EndpointService
    from chattune.pipeline.jobs import JobService
    from chattune.registry import Registry

    # the names only type checkers import (the services load on first use)
    names = {"JobService": JobService, "Registry": Registry, "EndpointService": EndpointService}
    hints = {name: typing.get_type_hints(getattr(Workspace, name).func, localns=names)["return"] for name in (
        "catalog", "compute", "data", "jobs", "registry", "endpoints",
    )}  # fmt: skip
    assert hints == {
        "catalog": CatalogService,
        "compute": ComputeService,
        "data": DataService,
        "jobs": JobService,
        "registry": Registry,
        "endpoints": EndpointService,
    }
    ws = Workspace.from_env()
    assert ws.settings.home == settings.home
    assert isinstance(ws.jobs, JobService) and isinstance(ws.endpoints, EndpointService)
    assert ws.catalog.get("tiny-test").name == "tiny-test"


def test_the_workspace_is_created_only_when_its_store_is_used(settings: Settings) -> None:
    ws = Workspace.open(settings)
    ws.data.token_counter(None)
    assert not settings.home.exists()
    assert isinstance(ws.store, SqliteStore)
    assert settings.db_path.exists()


def test_a_page_is_a_list_with_a_cursor() -> None:
    page = Page(["a", "b"], "b")
    assert page == ["a", "b"] and page.items == ["a", "b"] and page.has_more and page.next_cursor == "b"
    last = Page(["c"])
    assert not last.has_more and last.next_cursor is None


def test_every_list_call_returns_a_page(settings: Settings) -> None:
    store = Workspace.open(settings).store
    job = Job("ftjob-1", "d", "e", "tiny-test", JobStatus.QUEUED, 1.0, {}, steps=[StepRun("ftjob-1", "validate")])
    store.create_job(job)
    store.create_endpoint(Endpoint("ep", "key", ProvisioningState.CREATING, 1.0), {})
    for page in (
        store.list_jobs(),
        store.list_steps("ftjob-1"),
        store.list_model_versions(),
        store.list_endpoints(),
        store.list_deployments("ep"),
    ):
        assert isinstance(page, Page) and not page.has_more


def test_job_schemas_are_built_from_the_entity() -> None:
    job = Job("ftjob-1", "d", "e", "tiny-test", JobStatus.FAILED, 1.0, {"model": "tiny-test"})
    job.steps = [StepRun("ftjob-1", "validate", started_at=1.0, finished_at=3.5)]
    job.error = {"code": "step_failed", "message": "boom", "step": "validate"}  # type: ignore[assignment]
    shown = JobPublic.from_job(job).model_dump(mode="json")
    assert shown["status"] == "failed" and shown["steps"][0]["duration_s"] == 2.5
    assert shown["error"] == {"code": "step_failed", "message": "boom", "step": "validate", "details": {}}
    listed = JobList(data=[JobSummary.from_job(job)], has_more=False).model_dump(mode="json")
    assert listed == {
        "data": [
            {"id": "ftjob-1", "display_name": "d", "model": "tiny-test", "status": "failed", "created_at": 1.0,
             "finished_at": None}
        ],
        "has_more": False,
        "next_cursor": None,
    }  # fmt: skip


def test_one_key_pair_shape() -> None:
    keys = EndpointKeys.from_key_types({"primary": "p", "secondary": "s"})
    assert keys.model_dump() == {"primary_key": "p", "secondary_key": "s"}
