"""The studio token: made on first start, shown once, stored only as its hash, rotatable.

``CHATTUNE_STUDIO_TOKEN`` in the environment sets it instead (scripts and tests); nothing is written then.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from chattune.serving.keys import generate_key, hash_key, matches

TOKEN_ENV = "CHATTUNE_STUDIO_TOKEN"
TOKEN_FILE = "studio-token.json"


class StudioToken:
    """The workspace's studio token, as a hash in ``home/studio-token.json`` (mode 0600) or from the environment.

    Args:
        home: The workspace directory.
    """

    def __init__(self, home: Path) -> None:
        self.path = home / TOKEN_FILE

    @property
    def from_env(self) -> bool:
        """Whether the environment sets the token."""
        return bool(os.environ.get(TOKEN_ENV))

    @property
    def is_set_up(self) -> bool:
        """Whether a token exists (in the environment or made earlier)."""
        return self.from_env or self.path.exists()

    def ensure(self) -> str | None:
        """Make the token on first use; the new token (to be shown once), or None when one exists already."""
        return None if self.is_set_up else self.rotate()

    def rotate(self) -> str:
        """A new token; the old one stops working (sessions made with it are the server's to drop)."""
        token = generate_key()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"hash": hash_key(token), "created_at": time.time()}), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(self.path)
        return token

    def hashes(self) -> dict[str, str]:
        """The hashes a presented token is compared with."""
        if self.from_env:
            return {"env": hash_key(os.environ[TOKEN_ENV])}
        if not self.path.exists():
            return {}
        return {"file": str(json.loads(self.path.read_text(encoding="utf-8"))["hash"])}

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is the token (compared in constant time, as endpoint keys are)."""
        return matches(presented, self.hashes())
