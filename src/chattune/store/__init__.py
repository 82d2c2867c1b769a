"""Persistence: one interface per domain (``base``) and their SQLite implementation; rows never leave the store."""

from chattune.settings import Settings
from chattune.store.base import (
    ComputeStore,
    EndpointStore,
    ImportStore,
    JobStore,
    ModelStore,
    Page,
    Store,
    UserModelStore,
)
from chattune.store.sqlite import SqliteStore

__all__ = [
    "ComputeStore",
    "EndpointStore",
    "ImportStore",
    "JobStore",
    "ModelStore",
    "Page",
    "SqliteStore",
    "Store",
    "UserModelStore",
    "open_store",
]


def open_store(settings: Settings) -> SqliteStore:
    """The workspace's database at ``settings.home``, created on first use.

    The one way every process opens it: ``Workspace.open`` (CLI, SDK, quickstart) and the process entry points
    below the workspace layer (the job runner, the torchrun worker, the gateway), which cannot import it.

    Args:
        settings: The workspace's settings.

    Returns:
        The store.
    """
    settings.home.mkdir(parents=True, exist_ok=True)
    return SqliteStore(settings.db_path)
