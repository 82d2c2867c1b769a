"""The studio's links into MLflow's own UI: the run by its id alone (MLflow finds its experiment), a registered
version by name and MLflow's version, quoted; and the command that starts that UI over the workspace's store."""

from __future__ import annotations

from pathlib import Path

from chattune.settings import Settings
from chattune.studio.mlflow_links import MlflowLinks


def test_links_and_the_start_command_follow_the_settings(tmp_path: Path) -> None:
    links = MlflowLinks.from_settings(Settings(home=tmp_path, mlflow_ui_url="http://127.0.0.1:5099/"))
    assert links.run("abc123") == "http://127.0.0.1:5099/#/runs/abc123"
    assert links.model_version("my chat", "3") == "http://127.0.0.1:5099/#/models/my%20chat/versions/3"
    assert links.start_command == (
        f"mlflow ui --backend-store-uri sqlite:///{tmp_path / 'mlflow.db'} --host 127.0.0.1 --port 5099"
    )


def test_the_default_is_where_mlflow_ui_listens_by_default(tmp_path: Path) -> None:
    links = MlflowLinks.from_settings(Settings(home=tmp_path))
    assert links.run("r") == "http://127.0.0.1:5000/#/runs/r"
    assert links.start_command.endswith("--host 127.0.0.1 --port 5000")
