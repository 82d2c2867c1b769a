"""Endpoint keys: generated with ``secrets``, stored only as SHA-256 hashes, compared in constant time.

A plain SHA-256 suffices (no slow KDF): keys are 256-bit random strings, not guessable passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_TYPES = ("primary", "secondary")


def generate_key() -> str:
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def matches(presented: str | None, hashes: dict[str, str]) -> bool:
    """True when ``presented`` is one of the keys; every stored hash is compared, so timing reveals nothing."""
    if not presented:
        return False
    digest = hash_key(presented)
    found = False
    for stored in hashes.values():
        found |= hmac.compare_digest(digest, stored)
    return found


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
