"""The job process: runs the steps in order, recording status, timing, logs and MLflow runs.

Started by ``JobService.start`` as ``python -m chattune.pipeline.runner JOB_ID``; it outlives the CLI command.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from chattune.entities import JobStatus, StepRun, StepStatus
from chattune.errors import ChattuneError, JobCancelledError
from chattune.pipeline import STEPS
from chattune.pipeline.cache import outputs_exist, step_key
from chattune.pipeline.config import JobSpec, values
from chattune.pipeline.context import StepContext
from chattune.pipeline.jobs import CANCEL_FLAG, JobService
from chattune.pipeline.steps.validate import file_sha256
from chattune.settings import Settings
from chattune.store import open_store
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


def run_job(job_id: str, settings: Settings, *, resume: bool = False) -> JobStatus:
    import mlflow
    import transformers

    store = open_store(settings)
    jobs = JobService(settings, store)
    job = store.get_job(job_id)
    job_dir = jobs.job_dir(job_id)
    spec = JobSpec.model_validate(job.spec)
    training, optimization = values(job.resolved_config)
    logging.getLogger().setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity_info()
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()

    def progress(line: str) -> None:
        jobs.append_log(job_id, line)

    def metrics(data: dict[str, Any]) -> None:
        jobs.append_log(job_id, f"metrics at step {data.get('step')}", type_="metrics", data=data)

    def cancelled() -> bool:
        return (job_dir / CANCEL_FLAG).exists()

    previous = {s.name: s for s in store.list_steps(job_id)} if resume else {}
    store.update_job(job_id, status=JobStatus.RUNNING, started_at=time.time(), pid=os.getpid(), error=None)
    progress(f"job {job_id} ({job.display_name}) {'resuming' if resume else 'running'}")
    file_hashes = {
        role: file_sha256(path)
        for role in ("train", "validation", "test", "generation_test")
        if (path := getattr(spec.data, role)) and Path(path).is_file()
    }
    exp = experiment_id(settings, spec.experiment_name)
    outputs: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    final = JobStatus.SUCCEEDED
    error: dict[str, Any] | None = None
    run_args: dict[str, Any] = (
        {"run_id": job.mlflow_run_id}
        if resume and job.mlflow_run_id
        else {"experiment_id": exp, "run_name": job.display_name, "tags": {"chattune.job_id": job_id}}
    )
    with mlflow.start_run(**run_args) as parent:
        if not resume:
            store.update_job(job_id, mlflow_run_id=parent.info.run_id)
            mlflow.log_params({k: v["value"] for k, v in job.resolved_config.items()})
            mlflow.set_tags({f"source.{k}": v["source"] for k, v in job.resolved_config.items()})
        for name in STEPS:
            step = StepRun(job_id=job_id, name=name)
            if cancelled() or final == JobStatus.CANCELLED:
                final = JobStatus.CANCELLED
                step.status, step.error = StepStatus.SKIPPED, "job cancelled"
                store.save_step(step)
                continue
            missing = [dep for dep in _needs(name) if dep not in outputs]
            if missing:
                step.status, step.error = StepStatus.SKIPPED, f"needs {', '.join(missing)}, which did not succeed"
                store.save_step(step)
                progress(f"step {name}: skipped ({step.error})")
                continue
            key = step_key(name, spec, job.resolved_config, file_hashes, keys, outputs)
            if key:
                keys[name] = key
            kept = previous.get(name)
            if kept and kept.status == StepStatus.SUCCEEDED and outputs_exist(kept.outputs, settings.home):
                outputs[name] = kept.outputs
                progress(f"step {name}: kept from the interrupted attempt")
                continue
            cached = store.find_cached_step(name, key) if key and not spec.settings.force_rerun else None
            if cached and cached.job_id != job_id and outputs_exist(cached.outputs, settings.home):
                now = time.time()
                step.status, step.outputs, step.cache_key = StepStatus.SUCCEEDED, cached.outputs, key
                # Point at the job that produced the outputs, not at another job that reused them.
                step.reused_from, step.started_at, step.finished_at = cached.reused_from or cached.job_id, now, now
                store.save_step(step)
                outputs[name] = cached.outputs
                progress(f"step {name}: reused from {step.reused_from} (same inputs; settings.force_rerun runs it)")
                continue
            step_dir = job_dir / "steps" / name
            step_dir.mkdir(parents=True, exist_ok=True)
            step.log_path, step.cache_key = str(step_dir / "step.log"), key
            step.status, step.started_at = StepStatus.RUNNING, time.time()
            store.save_step(step)
            progress(f"step {name}: running")
            with (
                mlflow.start_run(experiment_id=exp, run_name=name, nested=True) as child,
                _StepLog(step_dir / "step.log"),
            ):
                step.mlflow_run_id = child.info.run_id
                ctx = StepContext(
                    job=job,
                    spec=spec,
                    training=training,
                    optimization=optimization,
                    settings=settings,
                    store=store,
                    job_dir=job_dir,
                    step_dir=step_dir,
                    log=logging.getLogger(f"chattune.step.{name}"),
                    inputs=outputs,
                    progress=progress,
                    metrics=metrics,
                    cancelled=cancelled,
                    resume=resume or training.resume_from_checkpoint,
                )
                try:
                    ctx.log.info("step %s of job %s started in %s", name, job_id, step_dir)
                    result = _run_step(name, ctx)
                    ctx.log.info("step %s outputs: %s", name, result)
                    outputs[name] = result
                    step.outputs, step.status = result, StepStatus.SUCCEEDED
                    mlflow.log_metrics(flat_metrics("", result.get("metrics", {})))
                except JobCancelledError as exc:
                    step.status, step.error, final = StepStatus.CANCELLED, exc.message, JobStatus.CANCELLED
                except Exception as exc:  # a step failure is recorded, never raised past the runner
                    logging.getLogger("chattune.runner").error("step %s failed:\n%s", name, traceback.format_exc())
                    step.status = StepStatus.FAILED
                    step.error = exc.message if isinstance(exc, ChattuneError) else f"{type(exc).__name__}: {exc}"
                    error = {"code": getattr(exc, "code", "step_failed"), "message": step.error, "step": name}
                    if isinstance(exc, ChattuneError) and exc.details:
                        error["details"] = exc.details
                    final = JobStatus.FAILED
                finally:
                    step.finished_at = time.time()
                    store.save_step(step)
                    # The step's own files (log, templates, predictions) become artifacts of its nested run;
                    # datasets and weights stay in the job folder.
                    for path in sorted(step_dir.glob("*")):
                        if path.is_file():
                            mlflow.log_artifact(str(path))
            took = step.duration_s or 0.0
            line = f"step {name}: {step.status} in {took:.1f}s" + (f": {step.error}" if step.error else "")
            jobs.append_log(job_id, line, level="error" if step.status == StepStatus.FAILED else "info")
            if step.status == StepStatus.FAILED and not spec.settings.continue_on_step_failure:
                break
        if cancelled():
            final = JobStatus.CANCELLED
        for name in STEPS:  # steps never reached (stopped after a failure) are recorded as skipped
            if not any(s.name == name and s.status != StepStatus.PENDING for s in store.list_steps(job_id)):
                store.save_step(StepRun(job_id=job_id, name=name, status=StepStatus.SKIPPED, error="not reached"))
        metrics_ = outputs.get("evaluate", {}).get("metrics", {})
        for which, values_ in metrics_.items():
            mlflow.log_metrics(flat_metrics(f"{which}_", values_))
        if "finetune" in outputs:
            mlflow.log_metrics(flat_metrics("", outputs["finetune"]["metrics"]))
        mlflow.log_dict({k: v for k, v in job.resolved_config.items()}, "resolved_config.json")
    job_outputs = {"trained_model": outputs["finetune"]["trained_model"]} if "finetune" in outputs else {}
    store.update_job(
        job_id,
        status=final,
        finished_at=time.time(),
        outputs=job_outputs,
        metrics={**metrics_, "finetune": outputs.get("finetune", {}).get("metrics", {})},
        error=error,
    )
    progress(f"job {job_id}: {final}")
    return final


def _needs(step: str) -> list[str]:
    return {
        "model_import": [],
        "validate": [],
        "preprocess": ["validate", "model_import"],
        "finetune": ["preprocess"],
        "evaluate": ["finetune"],
    }[step]


def _run_step(name: str, ctx: StepContext) -> dict[str, Any]:
    from chattune.pipeline.steps import REGISTRY

    return REGISTRY[name](ctx)


def main() -> None:
    job_id = sys.argv[1]
    resume = "--resume" in sys.argv[2:]
    settings = Settings()
    try:
        status = run_job(job_id, settings, resume=resume)
    except Exception as exc:  # outside any step (tracking store, database): the job still ends as failed
        traceback.print_exc()
        open_store(settings).update_job(
            job_id,
            status=JobStatus.FAILED,
            finished_at=time.time(),
            error={"code": "runner_failed", "message": f"{type(exc).__name__}: {exc}"},
        )
        sys.exit(1)
    sys.exit(0 if status == JobStatus.SUCCEEDED else 1)


if __name__ == "__main__":
    main()
