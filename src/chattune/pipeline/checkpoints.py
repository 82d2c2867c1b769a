"""The finetune's checkpoints on disk: which are complete, which a crash left half-written.

The Trainer writes ``trainer_state.json`` last (after the weights, optimizer, scheduler and RNG state), so a
checkpoint without it, or with it cut short, was interrupted while saving. Listing, resuming and cleaning up all use
this one rule: a job killed during a save lists, and resumes from, the checkpoint before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DIR = "checkpoints"
STATE = "trainer_state.json"


def step_of(path: Path) -> int:
    """The training step number of a ``checkpoint-N`` folder."""
    return int(path.name.rsplit("-", 1)[1])


def _all(root: Path) -> list[Path]:
    return sorted(root.glob("checkpoint-*"), key=step_of) if root.exists() else []


def _state(path: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((path / STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, cut short by the kill, or rotated away as we read
        return None
    return state


def saved(root: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Checkpoints whose save finished, oldest first, each with its trainer state."""
    return [(p, state) for p in _all(root) if (state := _state(p)) is not None]


def complete(root: Path) -> list[Path]:
    """Checkpoint folders whose save finished, oldest first."""
    return [p for p, _ in saved(root)]


def incomplete(root: Path) -> list[Path]:
    """Checkpoint folders a crash left half-written."""
    return [p for p in _all(root) if _state(p) is None]


def last(root: Path) -> Path | None:
    """The newest checkpoint whose save finished, or None."""
    found = complete(root)
    return found[-1] if found else None


def global_step(path: Path) -> int:
    """The training step a saved checkpoint holds: its trainer state's ``global_step``, else its folder's number.

    Ray Train keeps a copy of each checkpoint as ``checkpoint_<n>/checkpoint``: the state file tells its step.
    """
    state = _state(path)
    if state is not None and "global_step" in state:
        return int(state["global_step"])
    return step_of(path)
