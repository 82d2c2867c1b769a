"""JobService.create: the memory-fit check runs for every caller, and the resolved config is stored once."""

from __future__ import annotations

from pathlib import Path

import pytest

from chattune import compute
from chattune.errors import ComputeError
from chattune.pipeline.config import JobSpec, parse_spec
from chattune.pipeline.jobs import JobService
from chattune.pipeline.resolved import ResolvedConfig
from chattune.settings import Settings
from chattune.store import SqliteStore


def service(tmp_path: Path) -> JobService:
    settings = Settings(home=tmp_path / "home")
    settings.home.mkdir(parents=True)
    return JobService(settings, SqliteStore(settings.db_path))


def machine(ram_gb: float) -> compute.ComputeInfo:
    return compute.ComputeInfo(size="local-cpu", cpu_cores=2, ram_gb=ram_gb, ram_available_gb=ram_gb)


def spec() -> JobSpec:
    return parse_spec({"model": "tiny-test", "data": {"train": "t.jsonl"}, "training": {"max_seq_length": 64}})


def test_a_model_that_does_not_fit_is_refused_with_compute_checks_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compute, "detect", lambda: machine(0.0001))
    jobs = service(tmp_path)
    with pytest.raises(ComputeError) as exc:
        jobs.create(spec(), start=False)
    assert "GB available on cpu" in exc.value.message
    assert exc.value.remedy == "Pick a smaller model, enable LoRA, or use a GPU machine."
    assert jobs.list().items == []


def test_a_created_job_stores_the_resolved_config_it_reads_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(compute, "detect", lambda: machine(64.0))
    jobs = service(tmp_path)
    job, warnings = jobs.create(spec(), start=False)
    assert warnings == []
    assert job.resolved_config["max_seq_length"] == {"value": 64, "source": "user"}
    assert job.resolved_config["mixed_precision"] == {"value": "fp32", "source": "default"}
    assert job.resolved_config["lora_target_modules"] == {"value": "all-linear", "source": "default"}
    resolved = ResolvedConfig.from_record(job.resolved_config)
    assert resolved.training.max_seq_length == 64 and resolved.max_length(2048) == 64
    # The stored spec keeps only what the user gave, so reading it back tells user values from defaults.
    assert job.spec["training"] == {"max_seq_length": 64}
