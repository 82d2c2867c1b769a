"""chattune.store.sqlite.SqliteStore on a throwaway database: round trips, pages, domain errors, WAL."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from chattune.entities import (
    Deployment,
    Endpoint,
    Job,
    JobError,
    JobStatus,
    ModelVersion,
    ProvisioningState,
    StepRun,
    StepStatus,
)
from chattune.errors import ConflictError, NotFoundError, UserError
from chattune.store import SqliteStore
from chattune.store.base import Page


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "db" / "chattune.db")


def make_job(job_id: str, created_at: float, steps: tuple[str, ...] = ("validate", "finetune")) -> Job:
    return Job(
        id=job_id,
        display_name=f"name-{job_id}",
        experiment_name="exp",
        model="tiny-test",
        status=JobStatus.QUEUED,
        created_at=created_at,
        spec={"data": {"train": "/data/train.jsonl"}, "training": {"learning_rate": 1e-4}},
        resolved_config={"lora_r": {"value": 8, "source": "default"}},
        steps=[StepRun(job_id=job_id, name=s) for s in steps],
    )


def make_version(name: str, version: str, created_at: float) -> ModelVersion:
    return ModelVersion(
        name=name,
        version=version,
        created_at=created_at,
        kind="lora",
        path=f"/reg/{name}/{version}",
        base_model="tiny-test",
        base_model_hash="ab" * 32,
        base_model_path="/models/abab",
        job_id="ftjob-1",
        tags={"task": "chat-completion"},
        lineage={"datasets": {"train": "x"}},
        metrics={"eval_loss": 1.5},
    )


# -- jobs and steps ---------------------------------------------------------------------------------------------


def test_job_round_trip_with_enums_and_json(store: SqliteStore) -> None:
    job = make_job("ftjob-a", 100.0)
    store.create_job(job)
    got = store.get_job("ftjob-a")
    assert got == job
    assert got.status is JobStatus.QUEUED
    assert [s.name for s in got.steps] == ["validate", "finetune"]
    assert all(s.status is StepStatus.PENDING for s in got.steps)
    assert got.spec["training"]["learning_rate"] == 1e-4


def test_update_job_fields(store: SqliteStore) -> None:
    store.create_job(make_job("ftjob-a", 100.0))
    updated = store.update_job(
        "ftjob-a",
        status=JobStatus.FAILED,
        started_at=101.0,
        finished_at=105.5,
        pid=4242,
        metrics={"train_loss": 0.5},
        error={"code": "step_failed", "message": "boom"},
    )
    assert updated.status is JobStatus.FAILED
    assert updated.status.is_terminal
    assert updated.pid == 4242
    assert updated.metrics == {"train_loss": 0.5}
    assert updated.error == JobError("step_failed", "boom")
    assert store.get_job("ftjob-a") == updated
    # The raw column holds the enum's value, not its repr.
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("SELECT status FROM jobs").fetchone()[0] == "failed"


def test_missing_job_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFoundError) as exc:
        store.get_job("ftjob-nope")
    assert exc.value.code == "not_found"
    assert exc.value.message == "job 'ftjob-nope' not found"
    assert exc.value.remedy == "List jobs with `chattune jobs list`."
    with pytest.raises(NotFoundError) as exc:
        store.update_job("ftjob-nope", pid=1)
    assert exc.value.code == "not_found"
    assert "ftjob-nope" in exc.value.message


def test_duplicate_job_is_conflict(store: SqliteStore) -> None:
    store.create_job(make_job("ftjob-a", 1.0))
    with pytest.raises(ConflictError) as exc:
        store.create_job(make_job("ftjob-a", 2.0))
    assert exc.value.code == "conflict"
    assert exc.value.http_status == 409


def test_list_jobs_pages_newest_first(store: SqliteStore) -> None:
    for i in range(5):
        store.create_job(make_job(f"ftjob-{i}", 100.0 + i))
    page = store.list_jobs(limit=2)
    assert isinstance(page, Page)
    assert [j.id for j in page.items] == ["ftjob-4", "ftjob-3"]
    assert page.next_cursor == "ftjob-3"
    page = store.list_jobs(limit=2, after=page.next_cursor)
    assert [j.id for j in page.items] == ["ftjob-2", "ftjob-1"]
    assert page.next_cursor == "ftjob-1"
    page = store.list_jobs(limit=2, after=page.next_cursor)
    assert [j.id for j in page.items] == ["ftjob-0"]
    assert page.next_cursor is None
    assert store.list_jobs(limit=5).next_cursor is None
    assert [j.id for j in store.list_jobs().items] == [f"ftjob-{i}" for i in range(4, -1, -1)]
    assert store.list_jobs(limit=5).items[0].steps[0].name == "validate"


def test_list_jobs_after_unknown_cursor_is_not_found(store: SqliteStore) -> None:
    with pytest.raises(NotFoundError):
        store.list_jobs(after="ftjob-missing")


def test_list_jobs_pages_do_not_lose_jobs_with_equal_timestamps(store: SqliteStore) -> None:
    for i in range(3):
        store.create_job(make_job(f"ftjob-{i}", 100.0))
    seen: list[str] = []
    after = None
    for _ in range(10):
        page = store.list_jobs(limit=1, after=after)
        seen += [j.id for j in page.items]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == ["ftjob-0", "ftjob-1", "ftjob-2"]


def test_steps_save_update_and_keep_position(store: SqliteStore) -> None:
    store.create_job(make_job("ftjob-a", 1.0, steps=("validate", "model_import", "preprocess")))
    step = StepRun(
        job_id="ftjob-a",
        name="model_import",
        status=StepStatus.SUCCEEDED,
        started_at=10.0,
        finished_at=12.5,
        log_path="/logs/model_import.log",
        outputs={"path": "/models/x", "content_hash": "cd" * 32},
    )
    store.save_step(step)
    steps = store.list_steps("ftjob-a")
    assert [s.name for s in steps] == ["validate", "model_import", "preprocess"]
    assert steps[1] == step
    assert steps[1].status is StepStatus.SUCCEEDED
    assert steps[1].duration_s == 2.5
    store.save_step(StepRun(job_id="ftjob-a", name="finetune", status=StepStatus.RUNNING))
    assert [s.name for s in store.list_steps("ftjob-a")] == ["validate", "model_import", "preprocess", "finetune"]
    assert store.get_job("ftjob-a").steps[3].status is StepStatus.RUNNING
    assert store.list_steps("ftjob-other") == []


# -- imports and registry ---------------------------------------------------------------------------------------


def test_model_imports(store: SqliteStore) -> None:
    assert store.find_import("random:0") is None
    store.record_import("random:0", "h1", "/models/h1")
    store.record_import("random:0", "h2", "/models/h2")  # a re-import replaces the row
    assert store.find_import("random:0") == ("h2", "/models/h2")


def test_model_versions(store: SqliteStore) -> None:
    store.add_model_version(make_version("m", "1", 1.0))
    store.add_model_version(make_version("m", "2", 2.0))
    store.add_model_version(make_version("other", "1", 3.0))
    assert store.get_model_version("m", "1") == make_version("m", "1", 1.0)
    assert store.get_model_version("m").version == "2"  # latest
    assert [v.id for v in store.list_model_versions("m")] == ["m:1", "m:2"]
    assert [v.id for v in store.list_model_versions()] == ["m:1", "m:2", "other:1"]
    with pytest.raises(ConflictError) as exc:
        store.add_model_version(make_version("m", "2", 9.0))
    assert exc.value.code == "conflict"
    assert exc.value.message == "model m version 2 already exists"
    assert store.get_model_version("m", "2").created_at == 2.0
    with pytest.raises(NotFoundError) as nf:
        store.get_model_version("m", "3")
    assert nf.value.code == "not_found"
    assert nf.value.message == "registered model 'm:3' not found"
    with pytest.raises(NotFoundError, match="registered model 'zzz' not found"):
        store.get_model_version("zzz")


# -- endpoints, keys, deployments -------------------------------------------------------------------------------


def make_endpoint(name: str = "ep-one", created_at: float = 1.0) -> Endpoint:
    return Endpoint(name=name, auth_mode="key", state=ProvisioningState.CREATING, created_at=created_at)


def make_deployment(name: str, created_at: float, endpoint: str = "ep-one") -> Deployment:
    return Deployment(
        endpoint=endpoint,
        name=name,
        model_name="m",
        model_version="1",
        state=ProvisioningState.CREATING,
        created_at=created_at,
    )


def test_endpoint_crud_and_key_hashes(store: SqliteStore) -> None:
    hashes = {"primary": "a" * 64, "secondary": "b" * 64}
    store.create_endpoint(make_endpoint(), hashes)
    assert store.key_hashes("ep-one") == hashes
    got = store.get_endpoint("ep-one")
    assert got == make_endpoint()
    assert got.state is ProvisioningState.CREATING
    updated = store.update_endpoint(
        "ep-one", state=ProvisioningState.SUCCEEDED, port=8123, pid=99, traffic={"blue": 100}
    )
    assert updated.state is ProvisioningState.SUCCEEDED
    assert updated.traffic == {"blue": 100}
    assert updated.scoring_uri("127.0.0.1") == "http://127.0.0.1:8123/score"
    store.set_key_hash("ep-one", "primary", "c" * 64)
    assert store.key_hashes("ep-one") == {"primary": "c" * 64, "secondary": "b" * 64}
    store.create_endpoint(make_endpoint("ep-two", 2.0), {})
    assert [e.name for e in store.list_endpoints()] == ["ep-one", "ep-two"]
    with pytest.raises(ConflictError, match="endpoint 'ep-one' already exists"):
        store.create_endpoint(make_endpoint(), hashes)
    store.delete_endpoint("ep-one")
    with pytest.raises(NotFoundError) as exc:
        store.get_endpoint("ep-one")
    assert exc.value.code == "not_found"
    assert exc.value.message == "endpoint 'ep-one' not found"
    assert store.key_hashes("ep-one") == {}  # keys go with their endpoint
    with pytest.raises(NotFoundError):
        store.update_endpoint("ep-one", port=1)


def test_deployment_crud(store: SqliteStore) -> None:
    store.create_endpoint(make_endpoint(), {})
    store.create_deployment(make_deployment("blue", 1.0))
    store.create_deployment(make_deployment("green", 2.0))
    assert store.get_deployment("ep-one", "blue") == make_deployment("blue", 1.0)
    assert [d.name for d in store.list_deployments("ep-one")] == ["blue", "green"]
    updated = store.update_deployment("ep-one", "blue", state=ProvisioningState.FAILED, port=9000, log_path="/l")
    assert updated.state is ProvisioningState.FAILED
    assert (updated.port, updated.log_path) == (9000, "/l")
    with pytest.raises(ConflictError, match="deployment 'blue' already exists on endpoint 'ep-one'"):
        store.create_deployment(make_deployment("blue", 3.0))
    store.delete_deployment("ep-one", "blue")
    with pytest.raises(NotFoundError) as exc:
        store.get_deployment("ep-one", "blue")
    assert exc.value.code == "not_found"
    assert exc.value.message == "deployment 'blue' not found on endpoint 'ep-one'"
    with pytest.raises(NotFoundError):
        store.update_deployment("ep-one", "blue", port=1)
    # A deployment needs its endpoint, and deleting the endpoint removes its deployments.
    with pytest.raises(UserError):
        store.create_deployment(make_deployment("x", 1.0, endpoint="ep-missing"))
    store.delete_endpoint("ep-one")
    assert store.list_deployments("ep-one") == []


# -- the database itself ----------------------------------------------------------------------------------------


def test_wal_mode_and_foreign_keys(store: SqliteStore) -> None:
    store.create_job(make_job("ftjob-a", 1.0))
    with contextlib.closing(sqlite3.connect(store.path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "chattune.db"
    SqliteStore(path).create_job(make_job("ftjob-a", 1.0))
    assert SqliteStore(path).get_job("ftjob-a").display_name == "name-ftjob-a"


def test_a_job_error_is_typed_on_the_way_in_and_out(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "db.sqlite")
    store.create_job(Job("ftjob-e", "d", "e", "tiny-test", JobStatus.RUNNING, 1.0, {}))
    failed = store.update_job("ftjob-e", status=JobStatus.FAILED, error={"code": "runner_died", "message": "gone"})
    assert failed.error == JobError("runner_died", "gone")
    typed = JobError("step_failed", "bad row", step="validate", details={"errors": [{"line": 4}]})
    assert store.update_job("ftjob-e", error=typed).error == typed
    assert store.update_job("ftjob-e", error=None).error is None
    with pytest.raises(TypeError):
        store.update_job("ftjob-e", error={"code": "x", "message": "y", "misspelt": 1})
