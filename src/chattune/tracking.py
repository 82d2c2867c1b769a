"""MLflow tracking inside the workspace: a SQLite backend and local artifacts, unless a server is configured."""

from __future__ import annotations

import logging
from typing import Any

from chattune.settings import Settings


def configure(settings: Settings) -> None:
    """Point MLflow at the workspace's tracking store and quiet its logs and progress bars."""
    import os

    # No progress bars on the user's terminal for local artifact copies (chattune prints its own progress).
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    # MLflow logs every database error with its trace before raising it; chattune reports the raised error itself
    # (a full or read-only workspace as one clear line), so the duplicate trace is not shown.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    mlflow.set_tracking_uri(settings.tracking_uri)


def experiment_id(settings: Settings, name: str) -> str:
    """The id of the MLflow experiment ``name``, created (with its artifacts in the workspace) if it does not exist."""
    import mlflow

    configure(settings)
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    settings.artifacts_dir.mkdir(parents=True, exist_ok=True)
    return str(mlflow.create_experiment(name, artifact_location=(settings.artifacts_dir / name).as_uri()))


def flat_metrics(prefix: str, values: dict[str, Any]) -> dict[str, float]:
    """The numeric values of ``values`` as floats, each name prefixed with ``prefix``."""
    return {f"{prefix}{k}": float(v) for k, v in values.items() if isinstance(v, (int, float)) and v is not None}
