"""Where chattune keeps its state: the workspace at ``$CHATTUNE_HOME`` (default ``~/.chattune``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Workspace settings, read from ``CHATTUNE_*`` environment variables.

    Attributes:
        home: The workspace directory. Everything chattune writes goes here, except files named with ``--out``.
        mlflow_tracking_uri: Override for MLflow tracking (a team's server). Default: a SQLite file in ``home``.
        host: Interface that gateways and instances bind. Loopback by default: nothing is exposed by accident.
        ready_timeout_s: How long ``deployments create`` waits for an instance to load and warm up.
        inference_dtype: Weights' dtype for evaluation, serving and the MLflow pyfunc: ``auto`` is bf16 where the
            hardware has native bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32.
        packed_linear: The serving engine, in fp32 on a CPU, multiplies through oneDNN with each linear layer's
            weight packed once at load time (chattune.packed_linear); ``CHATTUNE_PACKED_LINEAR=0``: transformers'
            own layers.
        credentials_path: The client's copy of endpoint keys (mode 0600, outside the workspace), written when keys
            are created or regenerated, so `endpoints keys` and `endpoints invoke` find them as Azure's
            `get_keys` does. The workspace database and the gateways hold only hashes. Empty: keep no copy.
        cache_dir: The user-level cache, shared by every workspace of this user on this machine: the embedded
            model fetched from the package index and converted once (``$CHATTUNE_CACHE_DIR``, default
            ``$XDG_CACHE_HOME/chattune``, i.e. ``~/.cache/chattune``). ``chattune cache clear`` empties it.
        mlflow_ui_url: Where MLflow's own UI over the tracking store answers (``mlflow ui`` listens on
            ``http://127.0.0.1:5000`` by default); the studio links each job's run and each registered version there.
        ray_storage: Where Ray Train keeps the checkpoints of jobs on a Ray target (``RunConfig.storage_path``): a
            path every node reads, or a URI (``s3://...``). Default: the workspace's jobs folder.
    """

    model_config = SettingsConfigDict(env_prefix="CHATTUNE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".chattune")
    mlflow_tracking_uri: str | None = None
    host: str = "127.0.0.1"
    ready_timeout_s: float = 300.0
    inference_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    packed_linear: bool = True
    credentials_path: Path | None = Field(
        default_factory=lambda: Path.home() / ".config" / "chattune" / "credentials.json"
    )
    cache_dir: Path = Field(default_factory=lambda: _xdg_cache_home() / "chattune")
    ray_storage: str | None = None
    mlflow_ui_url: str = "http://127.0.0.1:5000"

    @property
    def db_path(self) -> Path:
        """The workspace database."""
        return self.home / "chattune.db"

    @property
    def models_dir(self) -> Path:
        """Imported base models."""
        return self.home / "models"

    @property
    def registry_dir(self) -> Path:
        """Registered model versions' files."""
        return self.home / "registry"

    @property
    def jobs_dir(self) -> Path:
        """Jobs' working directories (outputs, logs)."""
        return self.home / "jobs"

    @property
    def endpoints_dir(self) -> Path:
        """Per-endpoint directories: deployment logs and the gateway's instance token."""
        return self.home / "endpoints"

    @property
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: ``mlflow_tracking_uri`` if set, else a SQLite database in the workspace."""
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifacts_dir(self) -> Path:
        """MLflow's artifact store in the workspace."""
        return self.home / "mlartifacts"


def _xdg_cache_home() -> Path:
    """``$XDG_CACHE_HOME``, or ``~/.cache`` where it is not set (the XDG base directory rule)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
