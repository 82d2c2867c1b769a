"""Which checkpoint folders count: the trainer's last write (trainer_state.json) present and whole."""

from __future__ import annotations

import json
from pathlib import Path

from chattune.pipeline import checkpoints


def _folder(root: Path, step: int, state: str | None) -> Path:
    path = root / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if state is not None:
        (path / checkpoints.STATE).write_text(state)
    return path


def test_only_checkpoints_whose_save_finished_count(tmp_path: Path) -> None:
    done = [_folder(tmp_path, step, json.dumps({"global_step": step})) for step in (100, 20)]
    no_state = _folder(tmp_path, 120, None)
    cut_short = _folder(tmp_path, 140, '{"global_step": 14')
    assert checkpoints.complete(tmp_path) == sorted(done, key=checkpoints.step_of)  # by step, not by name
    assert checkpoints.last(tmp_path) == done[0]
    assert checkpoints.incomplete(tmp_path) == [no_state, cut_short]


def test_no_folder_means_no_checkpoint(tmp_path: Path) -> None:
    assert checkpoints.last(tmp_path / "missing") is None
    assert checkpoints.complete(tmp_path / "missing") == checkpoints.incomplete(tmp_path / "missing") == []
