"""The step protocol and what every step receives.

Steps share a tiny protocol (torchtune's habit), not a base class: a ``name`` (the same in YAML, CLI, job records
and the step's module), the steps it ``needs``, what its cache key hashes, and ``run(ctx)`` returning its typed
output (chattune.pipeline.outputs).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from chattune.entities import Job
from chattune.pipeline.config import JobSpec
from chattune.pipeline.outputs import StepOutput, StepOutputs
from chattune.pipeline.resolved import ResolvedConfig
from chattune.settings import Settings
from chattune.store.base import Store
from chattune.training.params import OptimizationParams, TrainingParams


@dataclass
class StepContext:
    """The job, its resolved config, the workspace and the outputs of the steps that ran before."""

    job: Job
    spec: JobSpec
    resolved: ResolvedConfig
    settings: Settings
    store: Store
    job_dir: Path
    step_dir: Path
    log: logging.Logger
    # Outputs of the steps that ran before, typed.
    inputs: StepOutputs = field(default_factory=StepOutputs)
    # Progress lines for `jobs stream` (the job log), separate from the step's detailed log file.
    progress: Callable[[str], None] = lambda line: None
    # Structured metrics (OpenAI's `type: metrics` events).
    metrics: Callable[[dict[str, Any]], None] = lambda data: None
    cancelled: Callable[[], bool] = lambda: False
    # Continue the finetune from its last checkpoint (`jobs resume`, or resume_from_checkpoint: true).
    resume: bool = False

    @property
    def training(self) -> TrainingParams:
        """The resolved training parameters."""
        return self.resolved.training

    @property
    def optimization(self) -> OptimizationParams:
        """The resolved optimization parameters."""
        return self.resolved.optimization

    @property
    def outputs_dir(self) -> Path:
        """Where the job's deliverables (the trained model) go."""
        return self.job_dir / "outputs"


@dataclass(frozen=True)
class KeyInputs:
    """What a step's cache key may hash: the spec, the resolved config, data file hashes and earlier outputs."""

    spec: JobSpec
    resolved: ResolvedConfig
    file_hashes: dict[str, str]
    inputs: StepOutputs


OutputT_co = TypeVar("OutputT_co", bound=StepOutput, covariant=True)


class Step(Protocol[OutputT_co]):
    """One pipeline step."""

    name: str
    # Steps whose outputs this one reads; it is skipped when one of them did not succeed.
    needs: tuple[str, ...]

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """What decides this step's result besides the keys of the steps it needs; None: never cached."""
        ...

    def run(self, ctx: StepContext) -> OutputT_co:
        """Do the step's work and return its output."""
        ...
