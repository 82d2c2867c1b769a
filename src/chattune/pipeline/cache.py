"""Step cache keys: a step whose inputs equal those of a finished step anywhere in the workspace is reused.

A key hashes what decides a step's result: the content of the data files, the base model's content hash, the
resolved config values the step reads, and the keys of the steps it consumes. Changing any of them misses the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chattune.pipeline.config import JobSpec

# Bump when a step's code changes what it produces for the same inputs.
CACHE_VERSION = 1

# model_import is not listed: the import index (source -> content hash) already makes it instant.
CACHED_STEPS = ("validate", "preprocess", "finetune", "evaluate")


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def step_key(
    name: str,
    spec: JobSpec,
    resolved: dict[str, dict[str, Any]],
    file_hashes: dict[str, str],
    keys: dict[str, str],
    outputs: dict[str, dict[str, Any]],
) -> str | None:
    if name not in CACHED_STEPS:
        return None
    values = {k: v["value"] for k, v in resolved.items()}
    payload: dict[str, Any] = {"step": name, "version": CACHE_VERSION}
    if name == "validate":
        payload["files"] = file_hashes
    elif name == "preprocess":
        payload.update(
            validate=keys["validate"],
            model=outputs["model_import"]["content_hash"],
            max_seq_length=values["max_seq_length"],
            max_train_rows=spec.data.max_train_rows,
            test_rows=spec.evaluation.max_rows,
        )
    elif name == "finetune":
        payload.update(preprocess=keys["preprocess"], config=values)
    else:
        payload.update(finetune=keys["finetune"], evaluation=spec.evaluation.model_dump())
    return _digest(payload)


def outputs_exist(outputs: Any, home: Path) -> bool:
    """A cached step is only reusable while every file it produced in the workspace is still there."""
    if isinstance(outputs, dict):
        return all(outputs_exist(v, home) for v in outputs.values())
    if isinstance(outputs, list):
        return all(outputs_exist(v, home) for v in outputs)
    if isinstance(outputs, str) and outputs.startswith(str(home)):
        return Path(outputs).exists()
    return True
