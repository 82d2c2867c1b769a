"""What every step receives. Steps share this tiny protocol: ``run(ctx) -> outputs``; no base classes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from chattune.entities import Job
from chattune.pipeline.config import JobSpec, OptimizationParams, TrainingParams
from chattune.settings import Settings
from chattune.store.base import Store


@dataclass
class StepContext:
    job: Job
    spec: JobSpec
    training: TrainingParams
    optimization: OptimizationParams
    settings: Settings
    store: Store
    job_dir: Path
    step_dir: Path
    log: logging.Logger
    # Outputs of the steps that ran before, by step name.
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Progress lines for `jobs stream` (the job log), separate from the step's detailed log file.
    progress: Callable[[str], None] = lambda line: None
    # Structured metrics (OpenAI's `type: metrics` events).
    metrics: Callable[[dict[str, Any]], None] = lambda data: None
    cancelled: Callable[[], bool] = lambda: False
    # Continue the finetune from its last checkpoint (`jobs resume`, or resume_from_checkpoint: true).
    resume: bool = False

    @property
    def outputs_dir(self) -> Path:
        return self.job_dir / "outputs"


class Step(Protocol):
    def __call__(self, ctx: StepContext) -> dict[str, Any]: ...
