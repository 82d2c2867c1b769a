"""Endpoint keys: generated with ``secrets``, stored only as SHA-256 hashes, compared in constant time.

A plain SHA-256 suffices (no slow KDF): keys are 256-bit random strings, not guessable passwords.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path

KEY_TYPES = ("primary", "secondary")
# The gateway's token for its instances reaches them in this environment variable (readable by the owner only, unlike
# the command line).
INSTANCE_TOKEN_ENV = "CHATTUNE_INSTANCE_TOKEN"
INSTANCE_TOKEN_FILE = "instance.token"  # in the endpoint's folder


def generate_key() -> str:
    """A new random endpoint key (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 hex digest of a key: what the workspace stores instead of the key."""
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
    """The token of an ``Authorization: Bearer ...`` header value, or None when it has none."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def instance_token(path: Path) -> str:
    """Make (once) or read the token an endpoint's gateway presents to its instances.

    The token is made once (mode 0600, beside the endpoint's logs) and read again by a restarted gateway, so that it can
    still call the instances it adopts. Instances listen on loopback, which every local user can reach; the token keeps
    all but the gateway out.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".token-")  # 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(generate_key())
        os.link(tmp, path)  # whole or absent, and never replaces a token that instances already hold
    except FileExistsError:
        pass
    finally:
        os.unlink(tmp)
    return path.read_text(encoding="utf-8").strip()


class KeyRing:
    """The client side's copy of endpoint keys: one JSON file, mode 0600, written atomically.

    Azure returns keys on request (``get_keys``); a server that keeps only hashes cannot, so the client that
    received them keeps them, as the Azure CLI keeps its tokens in ~/.azure. Entries are per workspace and endpoint.
    """

    def __init__(self, path: Path | None, workspace: Path):
        self.path = path
        self.workspace = str(Path(workspace).resolve())

    def _read(self) -> dict[str, dict[str, str]]:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, str]]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".credentials-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:  # mkstemp creates it 0600
                json.dump(data, fh, indent=1)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _id(self, endpoint: str) -> str:
        return f"{self.workspace}::{endpoint}"

    def get(self, endpoint: str) -> dict[str, str]:
        """The saved keys of ``endpoint`` in this workspace (``{key_type: key}``); empty when none are saved."""
        return dict(self._read().get(self._id(endpoint), {}))

    def save(self, endpoint: str, keys: dict[str, str]) -> None:
        """Save ``keys`` for ``endpoint``, replacing those of the same type and keeping the others."""
        data = self._read()
        data[self._id(endpoint)] = {**data.get(self._id(endpoint), {}), **keys}
        self._write(data)

    def forget(self, endpoint: str) -> None:
        """Drop the saved keys of ``endpoint``."""
        data = self._read()
        if data.pop(self._id(endpoint), None) is not None:
            self._write(data)
