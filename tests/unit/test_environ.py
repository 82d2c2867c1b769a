"""accelerate's kwargs defaults are learned without unsetting and re-setting the process environment (a getenv race
that crashed a training process), and child processes get their environment defaults at spawn."""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest


def _accelerates_own_clear_environment() -> None:
    """Undo keep_process_environment() if this process ran it before: reloading the module restores accelerate's own
    clear_environment (which to_kwargs looks up at each call)."""
    import accelerate.utils.environment

    importlib.reload(accelerate.utils.environment)


def _record_environment_writes(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """os.environ writes reach the C environment through os.putenv / os.unsetenv: record them."""
    writes: list[Any] = []
    put, unset = os.putenv, os.unsetenv
    monkeypatch.setattr(os, "putenv", lambda k, v: (writes.append(("put", k)), put(k, v)))
    monkeypatch.setattr(os, "unsetenv", lambda k: (writes.append(("unset", k)), unset(k)))
    return writes


def test_accelerate_clears_the_whole_environment_without_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hazard itself, so that the guard below is known to matter with the accelerate installed here."""
    from accelerate.utils import GradientAccumulationPlugin

    _accelerates_own_clear_environment()
    writes = _record_environment_writes(monkeypatch)
    GradientAccumulationPlugin(num_steps=2).to_kwargs()
    assert len([w for w in writes if w[0] == "unset"]) >= len(os.environ) > 0


def test_the_guard_keeps_the_process_environment_and_accelerates_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from accelerate.utils import GradientAccumulationPlugin

    from chattune.training.environ import keep_process_environment

    _accelerates_own_clear_environment()
    keep_process_environment()
    monkeypatch.setenv("CHATTUNE_TEST_MARKER", "kept")
    before = dict(os.environ)
    writes = _record_environment_writes(monkeypatch)
    assert GradientAccumulationPlugin(num_steps=2).to_kwargs() == {"num_steps": 2}
    assert writes == []
    assert dict(os.environ) == before
    assert type(os.environ).__name__ == "_Environ"  # the real mapping is back


def test_child_processes_start_with_their_defaults_and_the_users_choices_win(monkeypatch: pytest.MonkeyPatch) -> None:
    from chattune.processes import CHILD_DEFAULTS, child_env

    assert {"ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY", "MLFLOW_DISABLE_TELEMETRY"} <= set(CHILD_DEFAULTS)
    for name in CHILD_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    assert {k: child_env()[k] for k in CHILD_DEFAULTS} == CHILD_DEFAULTS
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "512")
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "false")
    env = child_env()
    assert env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "512" and env["MLFLOW_DISABLE_TELEMETRY"] == "false"
