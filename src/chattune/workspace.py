"""The Workspace: one object that holds the settings, the store and the services. CLI, SDK and servers use it."""

from __future__ import annotations

from functools import cached_property

from chattune.settings import Settings
from chattune.store import SqliteStore


class Workspace:
    """A local chattune workspace at ``settings.home``, created on first use."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.store = SqliteStore(self.settings.db_path)

    @cached_property
    def jobs(self):  # type: ignore[no-untyped-def]
        from chattune.pipeline.jobs import JobService

        return JobService(self.settings, self.store)

    @cached_property
    def registry(self):  # type: ignore[no-untyped-def]
        from chattune.registry import Registry

        return Registry(self.settings, self.store)

    @cached_property
    def endpoints(self):  # type: ignore[no-untyped-def]
        from chattune.endpoints.service import EndpointService

        return EndpointService(self.settings, self.store, self.registry)
