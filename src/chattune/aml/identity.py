"""Credentials with Azure's names.

A local chattune workspace needs no cloud credential: these classes exist only so that notebook code written for
``azure.identity`` runs unchanged; they authenticate nothing.
"""

from __future__ import annotations

import time
from typing import Any, NamedTuple


class AccessToken(NamedTuple):
    """A token and its expiry (seconds since the epoch), as ``azure.core.credentials.AccessToken``."""

    token: str
    expires_on: int


class DefaultAzureCredential:
    """Satisfies ``DefaultAzureCredential()`` call sites; a local workspace asks for no credential."""

    def __init__(self, **kwargs: Any) -> None:
        self.options = kwargs

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        """A placeholder token (no cloud is contacted), so ``credential.get_token(...)`` checks pass."""
        return AccessToken("local-workspace", int(time.time()) + 3600)


class InteractiveBrowserCredential(DefaultAzureCredential):
    """Satisfies ``InteractiveBrowserCredential()`` call sites; no browser is opened, nothing is authenticated."""
