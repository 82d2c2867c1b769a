"""Fine-tuning jobs on the wire: jobs, their steps, checkpoints, events and errors (OpenAI's shapes)."""

from __future__ import annotations

from typing import Any, Literal

from chattune.entities import Job, JobStatus, StepRun, StepStatus
from chattune.schemas.base import ListPage, Schema


class JobError(Schema):
    """Why a job failed, as it is stored with the job and shown by ``jobs show``.

    Attributes:
        code: A chattune error code (``step_failed``, ``runner_failed``, ``runner_died``, an error class's code).
        message: What went wrong.
        step: The step that failed, when one did.
        details: The error's structured data (a data file's errors, a config's problems).
    """

    code: str
    message: str
    step: str | None = None
    details: dict[str, Any] = {}


class StepPublic(Schema):
    """One pipeline step of a job (``model_import``, ``preprocess``, ``finetune``, ``evaluate``)."""

    job_id: str
    name: str
    status: StepStatus
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    log_path: str | None = None
    outputs: dict[str, Any] = {}
    error: str | None = None
    mlflow_run_id: str | None = None
    cache_key: str | None = None
    reused_from: str | None = None

    @classmethod
    def from_step(cls, step: StepRun) -> StepPublic:
        """The step as shown, with its duration."""
        return cls.model_validate(step.to_dict())


class CheckpointMetrics(Schema):
    """The training metrics at a checkpoint's step (None where the trainer did not log one yet)."""

    step: int
    train_loss: float | None = None
    valid_loss: float | None = None
    train_mean_token_accuracy: float | None = None
    valid_mean_token_accuracy: float | None = None


class CheckpointPublic(Schema):
    """A saved finetune checkpoint, as OpenAI's ``fine_tuning.job.checkpoint``."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    step_number: int
    path: str
    metrics: CheckpointMetrics


class JobEvent(Schema):
    """One line of a job's log or a metrics report, as OpenAI's ``fine_tuning.job.event``."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] = {}


class JobSummary(Schema):
    """A job in a list, or as ``jobs create`` and ``jobs resume`` answer."""

    id: str
    display_name: str
    model: str
    status: JobStatus
    created_at: float
    finished_at: float | None = None

    @classmethod
    def from_job(cls, job: Job) -> JobSummary:
        """The job's summary."""
        return cls.model_validate(job.to_dict())


class JobPublic(Schema):
    """A job with its steps, checkpoints and events (``jobs show``)."""

    id: str
    display_name: str
    experiment_name: str
    model: str
    status: JobStatus
    created_at: float
    spec: dict[str, Any]
    resolved_config: dict[str, Any] = {}
    started_at: float | None = None
    finished_at: float | None = None
    pid: int | None = None
    mlflow_run_id: str | None = None
    outputs: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    error: JobError | None = None
    steps: list[StepPublic] = []
    checkpoints: list[CheckpointPublic] = []
    events: list[JobEvent] = []

    @classmethod
    def from_job(
        cls, job: Job, checkpoints: list[dict[str, Any]] | None = None, events: list[dict[str, Any]] | None = None
    ) -> JobPublic:
        """The job with its steps, and the checkpoints and events its service found on disk.

        Args:
            job: The job.
            checkpoints: Its finetune's checkpoints (``JobService.checkpoints``).
            events: Its events (``JobService.events``).

        Returns:
            The job as shown.
        """
        doc = {**job.to_dict(), "steps": [s.to_dict() for s in job.steps]}
        return cls.model_validate({**doc, "checkpoints": checkpoints or [], "events": events or []})


JobList = ListPage[JobSummary]
