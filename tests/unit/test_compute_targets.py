"""Compute targets without a cluster: names and addresses, the store, `local`, and a job naming its compute."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chattune.compute.targets import ComputeTargets, check_address
from chattune.entities import ComputeKind, ComputeTarget, LocalRayCluster
from chattune.errors import ComputeError, ConfigError, ConflictError, NotFoundError, UserError
from chattune.pipeline.config import ResourcesSpec, parse_spec
from chattune.pipeline.jobs import JobService
from chattune.schemas import ComputeTargetPublic, ComputeTargetStatus
from chattune.settings import Settings
from chattune.store import SqliteStore
from tests.conftest import exact


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return SqliteStore(tmp_path / "chattune.db")


def test_a_job_spec_names_local_compute_and_one_process_by_default() -> None:
    spec = parse_spec({"data": {"train": "t.jsonl"}})
    assert spec.compute == "local"
    assert spec.resources == ResourcesSpec(instance_count=1, processes_per_instance=1, use_gpu=False)
    assert spec.resources.workers == 1 and spec.settings.max_failures == 2
    ray = parse_spec(
        {
            "data": {"train": "t.jsonl"},
            "compute": "dev",
            "resources": {"instance_count": 2, "processes_per_instance": 3},
        }
    )
    assert ray.compute == "dev" and ray.resources.workers == 6
    # what a job record stores reads back the same
    assert parse_spec(ray.model_dump(mode="json")).resources == ray.resources


def test_bad_compute_and_resources_are_reported_together_with_their_lines(tmp_path: Path) -> None:
    from chattune.pipeline.config import load_spec

    path = tmp_path / "job.yaml"
    path.write_text(
        "compute: My Cluster\nresources:\n  instance_count: 0\n  procs_per_instance: 2\ndata:\n  train: t.jsonl\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    text = exc.value.message
    assert f"{path}:1: compute" in text and "not a compute target name" in text
    assert f"{path}:3: resources.instance_count" in text
    assert f"{path}:4: resources.procs_per_instance" in text and "processes_per_instance" in text
    assert exc.value.exit_code == 2


@pytest.mark.parametrize("address", ["auto", "ray://head.example:10001", "10.0.0.5:6379", "127.0.0.1:65535"])
def test_ray_addresses_accepted(address: str) -> None:
    check_address(address)


@pytest.mark.parametrize("address", ["", "http://h:1", "ray://h", "h:0", "h:70000", "h:port"])
def test_bad_ray_addresses_say_what_is_accepted(address: str) -> None:
    with pytest.raises(UserError) as exc:
        check_address(address)
    assert exc.value.exit_code == 2 and "ray://HOST:PORT" in (exc.value.remedy or "")


def test_targets_are_recorded_listed_and_removed(store: SqliteStore) -> None:
    targets = ComputeTargets(store)
    added = targets.add("team", "ray://head.example:10001")
    assert ComputeTargetPublic.model_validate(added.to_dict()).address == "ray://head.example:10001"
    assert targets.get("team") == added and added.kind == ComputeKind.RAY
    with pytest.raises(ConflictError):
        targets.add("team", "auto")
    for bad in ("local", "Team", "9lives", "a" * 33):
        with pytest.raises(UserError):
            targets.add(bad, "auto")
    with pytest.raises(NotFoundError) as exc:
        targets.get("nope")
    assert "known targets: local, team" in exc.value.message and exc.value.exit_code == 2
    with pytest.raises(UserError) as stop:
        targets.stop_ray("team")  # not started here: never stopped by chattune
    assert "compute remove team" in (stop.value.remedy or "")
    targets.remove("team")
    assert targets.list() == []


def test_a_local_cluster_round_trips_through_the_store(store: SqliteStore) -> None:
    cluster = LocalRayCluster(
        temp_dir="/tmp/chattune-ray-x", gcs_port=6390, node_cpus=[1, 1], pids=[11, 12], daemon_pids=[13], up_at=5.0
    )
    target = ComputeTarget(
        name="dev", kind=ComputeKind.RAY, address="127.0.0.1:6390", created_at=1.0, local_cluster=cluster
    )
    store.add_compute_target(target)
    assert store.get_compute_target("dev") == target


def test_local_is_this_machine_as_one_node(store: SqliteStore) -> None:
    status = ComputeTargets(store).status("local")
    doc = exact(ComputeTargetStatus, ComputeTargetStatus.model_validate(status.to_dict()).model_dump(mode="json"))
    assert doc["kind"] == "local" and len(doc["nodes"]) == 1 and doc["cpus"] >= 1 and doc["reachable"]


def test_an_unreachable_target_is_a_status_and_refuses_jobs(store: SqliteStore, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    targets = ComputeTargets(store)
    targets.add("gone", f"127.0.0.1:{port}")
    status = targets.status("gone")
    assert not status.reachable and "nothing answers" in (status.error or "")
    with pytest.raises(ComputeError) as exc:
        targets.fits("gone", workers=2, cpus_per_worker=1, use_gpu=False)
    assert "cannot be reached" in exc.value.message and exc.value.exit_code == 2


def test_a_job_on_an_unknown_target_is_refused_before_it_is_recorded(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir(parents=True)
    jobs = JobService(settings, SqliteStore(settings.db_path))
    spec = {"model": "tiny-test", "data": {"train": "t.jsonl"}}
    with pytest.raises(NotFoundError) as exc:
        jobs.create(spec, start=False, compute_name="nowhere")
    assert "compute target 'nowhere' not found" in exc.value.message
    assert jobs.list().items == []
    job, warnings = jobs.create({**spec, "resources": {"instance_count": 2}}, start=False)
    assert job.spec["compute"] == "local"
    assert any("resources apply to Ray compute targets" in w for w in warnings)


def test_a_recorded_pid_whose_process_started_after_the_cluster_came_up_is_left_alone() -> None:
    """stop-ray kills by recorded pid only a process that already ran when the cluster was up (no reused pid)."""
    import psutil

    from chattune.compute.ray_cluster import processes

    me = psutil.Process()
    cluster = LocalRayCluster(
        temp_dir="/nonexistent/chattune-ray-test", gcs_port=1, node_cpus=[1], pids=[me.pid], up_at=me.create_time() - 5
    )
    assert processes(cluster) == []
    cluster.up_at = me.create_time() + 5
    assert me.pid in [p.pid for p in processes(cluster)]


def test_the_finetune_cache_key_tells_ray_workers_from_a_local_run() -> None:
    """Same resolved config: a 2-worker Ray run trains on a larger global batch than a local one-process run."""
    from chattune.pipeline.context import KeyInputs
    from chattune.pipeline.outputs import StepOutputs
    from chattune.pipeline.resolved import resolve
    from chattune.pipeline.steps.finetune import STEP

    local = parse_spec({"data": {"train": "t.jsonl"}})
    on_ray = parse_spec({"data": {"train": "t.jsonl"}, "compute": "dev", "resources": {"instance_count": 2}})
    resolved, _ = resolve(local, {}, has_cuda=False)
    key_local = STEP.cache_key(KeyInputs(local, resolved, {}, StepOutputs()))
    key_ray = STEP.cache_key(KeyInputs(on_ray, resolved, {}, StepOutputs()))
    assert key_local == {"config": resolved.to_record()}  # unchanged for local jobs: their cached steps stay valid
    assert key_ray == {**key_local, "ray": {"workers": 2, "use_gpu": False}}
