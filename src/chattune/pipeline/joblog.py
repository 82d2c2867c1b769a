"""A job's log (what ``jobs stream`` shows) and its OpenAI-shaped events (``jobs show --json``), in the job folder.

Written by the job service, the runner and rank 0 of the torchrun workers; each write is one appended line.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any

JOB_LOG = "job.log"
EVENTS = "events.jsonl"


class JobLog:
    """The log and event files of one job."""

    def __init__(self, job_dir: Path):
        self.job_dir = job_dir

    @property
    def path(self) -> Path:
        """The plain-text job log."""
        return self.job_dir / JOB_LOG

    def append(
        self, line: str, *, level: str = "info", type_: str = "message", data: dict[str, Any] | None = None
    ) -> None:
        """One line of the job log (messages only) and one ``fine_tuning.job.event``."""
        now = time.time()
        if type_ == "message":
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%H:%M:%S', time.localtime(now))} {line}\n")
        event = {
            "id": f"ftevent-{secrets.token_hex(8)}",
            "object": "fine_tuning.job.event",
            "created_at": int(now),
            "level": level,
            "message": line.strip(),
            "type": type_,
            "data": data or {},
        }
        with (self.job_dir / EVENTS).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")

    def metrics(self, data: dict[str, Any]) -> None:
        """A ``type: metrics`` event (OpenAI's), not shown in the job log."""
        self.append(f"metrics at step {data.get('step')}", type_="metrics", data=data)

    def events(self) -> list[dict[str, Any]]:
        """Every event so far, oldest first."""
        path = self.job_dir / EVENTS
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
