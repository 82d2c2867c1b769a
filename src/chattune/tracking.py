"""MLflow tracking inside the workspace: a SQLite backend and local artifacts, unless a server is configured."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import tempfile
from pathlib import Path
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
    if settings.mlflow_tracking_uri is None:
        _seed_database(settings, mlflow.__version__)
    mlflow.set_tracking_uri(settings.tracking_uri)


DATABASE = "mlflow.db"


def _seed_database(settings: Settings, version: str) -> None:
    """Give a new workspace its MLflow database as a copy of an empty one, made once per MLflow version.

    MLflow creates a SQLite store by running its schema migrations, several seconds of CPU each time; the empty
    result is the same for every workspace, so the user-level cache keeps one (``mlflow/empty-<version>.db``) and a
    new workspace starts from a copy. MLflow then opens it as its own (same schema version). The copy's Default
    experiment keeps its artifacts in the workspace, where chattune's experiments keep theirs.
    """
    db = settings.home / DATABASE
    if db.exists():
        return
    template = settings.cache_dir / "mlflow" / f"empty-{version}.db"
    if not template.exists():
        _build_template(template)
    settings.home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=settings.home, prefix=".mlflow-", suffix=".db")
    os.close(fd)
    try:
        shutil.copyfile(template, tmp)
        with contextlib.closing(sqlite3.connect(tmp)) as conn, conn:
            default = (settings.artifacts_dir / "0").as_uri()
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0", (default,))
        with contextlib.suppress(FileExistsError):  # another process of this workspace made it first
            os.link(tmp, db)
    finally:
        os.unlink(tmp)


def _build_template(template: Path) -> None:
    """Create an empty MLflow database with MLflow's own store (its migrations), then move it into the cache."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=template.parent, prefix=".build-") as tmp:
        path = Path(tmp) / DATABASE
        store = SqlAlchemyStore(f"sqlite:///{path}", (Path(tmp) / "artifacts").as_uri())
        store.engine.dispose()
        os.replace(path, template)


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
