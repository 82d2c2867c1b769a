"""Persistence: a small interface (``base.Store``) and its SQLite implementation."""

from chattune.store.base import Page, Store
from chattune.store.sqlite import SqliteStore

__all__ = ["Page", "SqliteStore", "Store"]
