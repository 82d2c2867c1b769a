"""Links from the studio's pages into MLflow's own UI, which reads the same tracking store.

MLflow's UI routes by the URL's fragment: ``#/runs/RUN_ID`` finds the run's experiment itself and redirects to it, so
a link needs no experiment id (no MLflow call while a page renders); ``#/models/NAME/versions/VERSION`` is a
registered model version.
"""

from __future__ import annotations

import shlex
import urllib.parse
from dataclasses import dataclass

from chattune.settings import Settings


@dataclass(frozen=True)
class MlflowLinks:
    """MLflow UI addresses for the studio's templates, and the command that starts that UI."""

    base: str
    tracking_uri: str

    @classmethod
    def from_settings(cls, settings: Settings) -> MlflowLinks:
        """The links for the workspace's settings (``CHATTUNE_MLFLOW_UI_URL``)."""
        return cls(settings.mlflow_ui_url.rstrip("/"), settings.tracking_uri)

    def run(self, run_id: str) -> str:
        """The run's page (MLflow redirects to it inside its experiment)."""
        return f"{self.base}/#/runs/{urllib.parse.quote(run_id, safe='')}"

    def model_version(self, name: str, version: str) -> str:
        """A registered model version's page."""
        quote = urllib.parse.quote
        return f"{self.base}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"

    @property
    def start_command(self) -> str:
        """How to start MLflow's UI at ``base`` over the workspace's tracking store."""
        parsed = urllib.parse.urlsplit(self.base)
        return shlex.join(
            [
                "mlflow",
                "ui",
                "--backend-store-uri",
                self.tracking_uri,
                "--host",
                parsed.hostname or "127.0.0.1",
                "--port",
                str(parsed.port or 5000),
            ]
        )
