"""Step cache keys: a step whose inputs equal those of a finished step anywhere in the workspace is reused.

A key hashes what decides a step's result: what the step's own ``cache_key`` names (data file contents, the base
model's content hash, the resolved values it reads) and the keys of the steps it needs. Changing any of them
misses the cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from chattune.pipeline.context import KeyInputs, Step
from chattune.pipeline.outputs import StepOutput

# Bump when a step's code changes what it produces for the same inputs. 2: keys built from the typed step protocol.
# 3: chat formats converted into messages, OpenAI's weight honoured, rows ending on a user turn generated for.
CACHE_VERSION = 3


def step_key(step: Step[StepOutput], given: KeyInputs, keys: dict[str, str]) -> str | None:
    """The step's cache key, or None for a step that is never cached."""
    payload = step.cache_key(given)
    if payload is None:
        return None
    needed = {dep: keys[dep] for dep in step.needs if dep in keys}
    body = {"step": step.name, "version": CACHE_VERSION, "needs": needed, **payload}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def outputs_exist(outputs: Any, home: Path) -> bool:
    """A cached step is only reusable while every file it produced in the workspace is still there."""
    if isinstance(outputs, StepOutput):
        return outputs_exist(outputs.to_record(), home)
    if isinstance(outputs, dict):
        return all(outputs_exist(v, home) for v in outputs.values())
    if isinstance(outputs, list):
        return all(outputs_exist(v, home) for v in outputs)
    if isinstance(outputs, str) and outputs.startswith(str(home)):
        return Path(outputs).exists()
    return True
