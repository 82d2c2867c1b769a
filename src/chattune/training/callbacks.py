"""Trainer callbacks: progress lines for `jobs stream`, MLflow metrics, cooperative cancel."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from transformers import TrainerCallback


class ProgressCallback(TrainerCallback):
    """Writes each log event as a progress line and as MLflow metrics of the active (step) run."""

    def __init__(
        self,
        progress: Callable[[str], None],
        cancelled: Callable[[], bool],
        metrics: Callable[[dict[str, Any]], None] = lambda data: None,
    ):
        self.progress = progress
        self.cancelled = cancelled
        self.metrics = metrics

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        """Log the event's numbers to the active MLflow run and the job's metrics, and write them as a progress line."""
        import mlflow

        if not logs:
            return
        numbers = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
        if mlflow.active_run() is not None and numbers:
            mlflow.log_metrics(numbers, step=state.global_step)
        self.metrics({"step": state.global_step, **numbers})
        shown = ", ".join(f"{k} {v:.4g}" for k, v in numbers.items() if k != "epoch")
        self.progress(f"  step {state.global_step}/{state.max_steps} epoch {numbers.get('epoch', 0):.2f}: {shown}")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Stop training when the job has been cancelled."""
        if self.cancelled():
            control.should_training_stop = True
