"""The job process: plans each step, then reuses its earlier result or runs it, and records the job's end.

Started by ``JobService.start`` as ``python -m chattune.pipeline.runner JOB_ID``; it outlives the CLI command.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback

from chattune.entities import JobStatus, StepStatus
from chattune.pipeline.attempt import JobRun
from chattune.pipeline.steps import PIPELINE
from chattune.settings import Settings
from chattune.store import open_store


def run_job(job_id: str, settings: Settings, *, resume: bool = False) -> JobStatus:
    """Run (or resume) a job to its end: plan each step, then reuse it or run it; record the outcome."""
    import mlflow

    run = JobRun(job_id, settings, open_store(settings), resume=resume)
    _route_library_logs()
    run.begin()
    with mlflow.start_run(**run.mlflow_run_args()) as parent:
        if not resume:
            run.log_config(parent.info.run_id)
        for step in PIPELINE:
            planned = run.plan(step)
            if planned is None or run.reuse(step, planned):
                continue
            run.execute(step, planned)
            if planned.status == StepStatus.FAILED and not run.spec.settings.continue_on_step_failure:
                break
        run.log_results()
    return run.record()


def _route_library_logs() -> None:
    """Route transformers' and TRL's logging through the root logger, so a step's log file gets their lines."""
    import transformers

    logging.getLogger().setLevel(logging.INFO)
    transformers.utils.logging.set_verbosity_info()
    transformers.utils.logging.disable_default_handler()
    transformers.utils.logging.enable_propagation()


def main() -> None:
    """Entry point of ``python -m chattune.pipeline.runner JOB_ID [--resume]``: run the job, exit 0 if it succeeded.

    An error outside any step still ends the job as failed (``runner_failed``).
    """
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
