"""The Workspace: the settings, the store and every service, built one way by the CLI, the SDK and quickstart.

``Workspace.from_env()`` (or ``Workspace.open(settings)``) is the one constructor; its services are typed
attributes (``ws.jobs.create``, ``ws.endpoints.deploy``), created on first use so that a command pays only for the
services it uses. Process entry points below this layer (job runner, torchrun worker, gateway) open the same store
with ``chattune.store.open_store``.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from chattune.settings import Settings
from chattune.store import SqliteStore, open_store
from chattune.workspace.services import CatalogService, ComputeService, DataService

if TYPE_CHECKING:
    from chattune.endpoints.service import EndpointService
    from chattune.pipeline.jobs import JobService
    from chattune.registry import Registry

__all__ = ["CatalogService", "ComputeService", "DataService", "Workspace"]


class Workspace:
    """A local chattune workspace at ``settings.home``, created on first use.

    Attributes:
        settings: Where the workspace is and how its servers listen.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings: Settings = settings or Settings()

    @cached_property
    def store(self) -> SqliteStore:
        """The workspace database, opened (and the workspace created) on first use: ``data validate`` needs none."""
        return open_store(self.settings)

    @classmethod
    def open(cls, settings: Settings | None = None) -> Workspace:
        """The workspace these settings name.

        Args:
            settings: The settings (``home`` is the workspace's directory); None reads them from the environment.

        Returns:
            The workspace.
        """
        return cls(settings)

    @classmethod
    def from_env(cls) -> Workspace:
        """The workspace the environment names (``CHATTUNE_HOME`` and the other ``CHATTUNE_*`` settings)."""
        return cls(Settings())

    @cached_property
    def catalog(self) -> CatalogService:
        """The model catalog and base-weight imports."""
        return CatalogService(self.settings, lambda: self.store)

    @cached_property
    def compute(self) -> ComputeService:
        """This machine's devices, fit checks and the workspace's compute targets."""
        return ComputeService(self.catalog, lambda: self.store)

    @cached_property
    def data(self) -> DataService:
        """Data files: validate, import, demo, download."""
        return DataService(self.catalog)

    @cached_property
    def jobs(self) -> JobService:
        """Fine-tuning jobs."""
        from chattune.pipeline.jobs import JobService

        return JobService(self.settings, self.store)

    @cached_property
    def registry(self) -> Registry:
        """Registered model versions and aliases."""
        from chattune.registry import Registry

        return Registry(self.settings, self.store)

    @cached_property
    def endpoints(self) -> EndpointService:
        """Online endpoints and their deployments."""
        from chattune.endpoints.service import EndpointService

        return EndpointService(self.settings, self.store, self.registry)
