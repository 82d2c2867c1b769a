"""One attempt at a job (a run or a resume): its steps planned, reused or run, and its end recorded.

``JobRun`` holds what the runner needs between steps: the job record, its typed spec and its resolved config (read
back, never resolved again), the outputs of the steps so far and their cache keys, and the job log.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any

from chattune.entities import Job, JobStatus, StepRun, StepStatus
from chattune.errors import ChattuneError, JobCancelledError
from chattune.pipeline.cache import outputs_exist, step_key
from chattune.pipeline.config import JobSpec
from chattune.pipeline.context import KeyInputs, Step, StepContext
from chattune.pipeline.joblog import JobLog
from chattune.pipeline.jobs import CANCEL_FLAG
from chattune.pipeline.outputs import StepOutput, StepOutputs, read_output
from chattune.pipeline.resolved import ResolvedConfig
from chattune.pipeline.steps import PIPELINE
from chattune.pipeline.steps.validate import file_sha256
from chattune.settings import Settings
from chattune.store.base import Store
from chattune.tracking import experiment_id, flat_metrics


class _StepLog:
    """Route every library log record (transformers, trl, peft, ours) to the step's log file while it runs."""

    def __init__(self, path: Path):
        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def __enter__(self) -> None:
        logging.getLogger().addHandler(self.handler)

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()


class JobRun:
    """One attempt at a job.

    Holds its record, typed spec and resolved config (read, never resolved again), the outputs of the steps so far, and
    where its log goes.
    """

    def __init__(self, job_id: str, settings: Settings, store: Store, *, resume: bool):
        self.settings, self.store, self.resume = settings, store, resume
        self.job: Job = store.get_job(job_id)
        self.spec = JobSpec.model_validate(self.job.spec)
        self.resolved = ResolvedConfig.from_record(self.job.resolved_config)
        self.job_dir = settings.jobs_dir / job_id
        self.log = JobLog(self.job_dir)
        self.outputs = StepOutputs()
        self.keys: dict[str, str] = {}
        self.final = JobStatus.SUCCEEDED
        self.error: dict[str, Any] | None = None
        self.previous = {s.name: s for s in store.list_steps(job_id)} if resume else {}
        self.file_hashes = {
            role: file_sha256(path)
            for role in ("train", "validation", "test", "generation_test")
            if (path := getattr(self.spec.data, role)) and Path(path).is_file()
        }
        self.experiment = experiment_id(settings, self.spec.experiment_name)

    def cancelled(self) -> bool:
        """A cancel was requested (``jobs cancel`` touches the flag file)."""
        return (self.job_dir / CANCEL_FLAG).exists()

    def begin(self) -> None:
        """Mark the job running in this process."""
        self.store.update_job(
            self.job.id, status=JobStatus.RUNNING, started_at=time.time(), pid=os.getpid(), error=None
        )
        self.log.append(f"job {self.job.id} ({self.job.display_name}) {'resuming' if self.resume else 'running'}")

    def mlflow_run_args(self) -> dict[str, Any]:
        """Reopen the job's MLflow run on a resume, else start one in the job's experiment."""
        if self.resume and self.job.mlflow_run_id:
            return {"run_id": self.job.mlflow_run_id}
        return {
            "experiment_id": self.experiment,
            "run_name": self.job.display_name,
            "tags": {"chattune.job_id": self.job.id},
        }

    def log_config(self, run_id: str) -> None:
        """The resolved values as MLflow params, their sources as tags."""
        import mlflow

        self.store.update_job(self.job.id, mlflow_run_id=run_id)
        record = self.resolved.to_record()
        mlflow.log_params({k: v["value"] for k, v in record.items()})
        mlflow.set_tags({f"source.{k}": v["source"] for k, v in record.items()})

    def plan(self, step: Step[StepOutput]) -> StepRun | None:
        """The step's record, keyed; None when it is skipped (cancelled, or a step it needs did not succeed)."""
        record = StepRun(job_id=self.job.id, name=step.name)
        missing = [dep for dep in step.needs if dep not in self.outputs]
        if self.cancelled() or self.final == JobStatus.CANCELLED:
            self.final = JobStatus.CANCELLED
            record.status, record.error = StepStatus.SKIPPED, "job cancelled"
        elif missing:
            record.status, record.error = StepStatus.SKIPPED, f"needs {', '.join(missing)}, which did not succeed"
            self.log.append(f"step {step.name}: skipped ({record.error})")
        if record.status == StepStatus.SKIPPED:
            self.store.save_step(record)
            return None
        given = KeyInputs(self.spec, self.resolved, self.file_hashes, self.outputs)
        record.cache_key = step_key(step, given, self.keys)
        if record.cache_key:
            self.keys[step.name] = record.cache_key
        return record

    def reuse(self, step: Step[StepOutput], record: StepRun) -> bool:
        """Take the step's result from the interrupted attempt or from another job with the same cache key."""
        home = self.settings.home
        kept = self.previous.get(step.name)
        if kept and kept.status == StepStatus.SUCCEEDED and outputs_exist(kept.outputs, home):
            self.outputs.add(step.name, read_output(step.name, kept.outputs))
            self.log.append(f"step {step.name}: kept from the interrupted attempt")
            return True
        key = record.cache_key
        cached = self.store.find_cached_step(step.name, key) if key and not self.spec.settings.force_rerun else None
        if not (cached and cached.job_id != self.job.id and outputs_exist(cached.outputs, home)):
            return False
        now = time.time()
        record.status, record.outputs = StepStatus.SUCCEEDED, cached.outputs
        # Point at the job that produced the outputs, not at another job that reused them.
        record.reused_from, record.started_at, record.finished_at = cached.reused_from or cached.job_id, now, now
        self.store.save_step(record)
        self.outputs.add(step.name, read_output(step.name, cached.outputs))
        self.log.append(
            f"step {step.name}: reused from {record.reused_from} (same inputs; settings.force_rerun runs it)"
        )
        return True

    def execute(self, step: Step[StepOutput], record: StepRun) -> None:
        """Run the step in its own folder, log file and nested MLflow run; a failure is recorded, never raised."""
        import mlflow

        step_dir = self.job_dir / "steps" / step.name
        step_dir.mkdir(parents=True, exist_ok=True)
        record.log_path, record.status, record.started_at = str(step_dir / "step.log"), StepStatus.RUNNING, time.time()
        self.store.save_step(record)
        self.log.append(f"step {step.name}: running")
        with (
            mlflow.start_run(experiment_id=self.experiment, run_name=step.name, nested=True) as child,
            _StepLog(step_dir / "step.log"),
        ):
            record.mlflow_run_id = child.info.run_id
            ctx = self._context(step.name, step_dir)
            try:
                ctx.log.info("step %s of job %s started in %s", step.name, self.job.id, step_dir)
                output = step.run(ctx)
                ctx.log.info("step %s outputs: %s", step.name, output)
                self.outputs.add(step.name, output)
                record.outputs, record.status = output.to_record(), StepStatus.SUCCEEDED
                mlflow.log_metrics(flat_metrics("", getattr(output, "metrics", {})))
            except JobCancelledError as exc:
                record.status, record.error, self.final = StepStatus.CANCELLED, exc.message, JobStatus.CANCELLED
            except Exception as exc:  # a step failure is recorded, never raised past the runner
                self._failed(record, exc)
            finally:
                record.finished_at = time.time()
                self.store.save_step(record)
                # The step's own files (log, templates, predictions) become artifacts of its nested run;
                # datasets and weights stay in the job folder.
                for path in sorted(step_dir.glob("*")):
                    if path.is_file():
                        mlflow.log_artifact(str(path))
        line = f"step {step.name}: {record.status} in {record.duration_s or 0.0:.1f}s"
        level = "error" if record.status == StepStatus.FAILED else "info"
        self.log.append(line + (f": {record.error}" if record.error else ""), level=level)

    def _context(self, name: str, step_dir: Path) -> StepContext:
        return StepContext(
            job=self.job,
            spec=self.spec,
            resolved=self.resolved,
            settings=self.settings,
            store=self.store,
            job_dir=self.job_dir,
            step_dir=step_dir,
            log=logging.getLogger(f"chattune.step.{name}"),
            inputs=self.outputs,
            progress=self.log.append,
            metrics=self.log.metrics,
            cancelled=self.cancelled,
            resume=self.resume or self.resolved.training.resume_from_checkpoint,
        )

    def _failed(self, record: StepRun, exc: Exception) -> None:
        logging.getLogger("chattune.runner").error("step %s failed:\n%s", record.name, traceback.format_exc())
        record.status = StepStatus.FAILED
        record.error = exc.message if isinstance(exc, ChattuneError) else f"{type(exc).__name__}: {exc}"
        self.error = {"code": getattr(exc, "code", "step_failed"), "message": record.error, "step": record.name}
        if isinstance(exc, ChattuneError) and exc.details:
            self.error["details"] = exc.details
        self.final = JobStatus.FAILED

    def log_results(self) -> None:
        """Mark the steps never reached as skipped; log the job's metrics and resolved config to its MLflow run."""
        import mlflow

        if self.cancelled():
            self.final = JobStatus.CANCELLED
        seen = {s.name for s in self.store.list_steps(self.job.id) if s.status != StepStatus.PENDING}
        for step in PIPELINE:  # steps never reached (stopped after a failure) are recorded as skipped
            if step.name not in seen:
                self.store.save_step(
                    StepRun(job_id=self.job.id, name=step.name, status=StepStatus.SKIPPED, error="not reached")
                )
        for which, values_ in self._evaluation().items():
            mlflow.log_metrics(flat_metrics(f"{which}_", values_))
        if "finetune" in self.outputs:
            mlflow.log_metrics(flat_metrics("", self.outputs.finetune.metrics))
        record = self.resolved.to_record()
        if "preprocess" in self.outputs:
            # The one value that needs the model at hand: -1 (or a longer wish) becomes the model's context.
            length = self.outputs.preprocess.max_seq_length
            given = self.resolved.training.max_seq_length
            why = "the model's context" if given <= 0 else f"max_seq_length {given}, capped by the model's context"
            record["effective_max_seq_length"] = {"value": length, "source": f"derived: {why}"}
            mlflow.log_param("effective_max_seq_length", length)
            mlflow.set_tag("source.effective_max_seq_length", record["effective_max_seq_length"]["source"])
        mlflow.log_dict(record, "resolved_config.json")

    def _evaluation(self) -> dict[str, dict[str, float]]:
        return self.outputs.evaluate.metrics if "evaluate" in self.outputs else {}

    def record(self) -> JobStatus:
        """Record the job's end: status, the trained model, metrics and the error of the failed step."""
        finetune = self.outputs.finetune if "finetune" in self.outputs else None
        self.store.update_job(
            self.job.id,
            status=self.final,
            finished_at=time.time(),
            outputs={"trained_model": str(finetune.trained_model)} if finetune else {},
            metrics={**self._evaluation(), "finetune": finetune.metrics if finetune else {}},
            error=self.error,
        )
        self.log.append(f"job {self.job.id}: {self.final}")
        return self.final
