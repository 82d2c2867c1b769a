"""chattune.tracking: a new workspace's MLflow database is a copy of an empty one made once per MLflow version."""

from __future__ import annotations

from pathlib import Path

import mlflow

from chattune.settings import Settings
from chattune.tracking import configure, experiment_id


def test_a_new_workspace_starts_from_the_cached_empty_database(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = Settings(home=tmp_path / "a", cache_dir=cache)
    configure(first)
    template = cache / "mlflow" / f"empty-{mlflow.__version__}.db"
    assert template.exists() and (first.home / "mlflow.db").exists()
    made = template.stat().st_mtime_ns

    second = Settings(home=tmp_path / "b", cache_dir=cache)
    exp = experiment_id(second, "chat_completion_x")
    assert template.stat().st_mtime_ns == made  # reused, not rebuilt
    with mlflow.start_run(experiment_id=exp):
        mlflow.log_metric("loss", 0.5)
    runs = mlflow.search_runs([exp], output_format="list")
    assert [r.data.metrics["loss"] for r in runs] == [0.5]
    # The Default experiment's artifacts belong to this workspace, as chattune's own experiments' do.
    assert mlflow.get_experiment("0").artifact_location == (second.artifacts_dir / "0").as_uri()
    # The first workspace is untouched by the second's runs.
    configure(first)
    assert mlflow.get_experiment_by_name("chat_completion_x") is None
