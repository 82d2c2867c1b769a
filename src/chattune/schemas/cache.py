"""The user-level model cache on the wire (``cache show``, ``cache clear``)."""

from __future__ import annotations

from chattune.schemas.base import Schema


class CacheEntryPublic(Schema):
    """A converted model (``kind`` model, named by its source) or a downloaded wheel in the cache."""

    kind: str
    name: str
    path: str
    bytes: int


class CachePublic(Schema):
    """Where the cache is, its size, and what it holds (``cache clear``: what it held)."""

    path: str
    bytes: int
    entries: list[CacheEntryPublic] = []
