"""One finetune worker under torchrun: ``python -m chattune.pipeline.worker REQUEST.json``.

Rebuilds the step context from the job record (its stored resolved config, never resolved again) and calls the
finetune step's ``train``; rank 0 writes the job's progress lines, logs metrics to the step's MLflow run, and
writes the result atomically (write, then rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from chattune.pipeline.config import JobSpec
from chattune.pipeline.context import StepContext
from chattune.pipeline.joblog import JobLog
from chattune.pipeline.launch import RESULT
from chattune.pipeline.outputs import StepOutputs
from chattune.pipeline.resolved import ResolvedConfig
from chattune.settings import Settings
from chattune.store import open_store


def main(request_path: str) -> None:
    """Run the finetune step as one torchrun worker, from the request file ``request_path``."""
    import mlflow

    from chattune.pipeline.steps.finetune import train
    from chattune.tracking import configure

    request = json.loads(Path(request_path).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    settings = Settings()
    store = open_store(settings)
    job = store.get_job(request["job_id"])
    job_dir = settings.jobs_dir / job.id
    log = JobLog(job_dir)
    step_dir = Path(request["step_dir"])
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )

    def progress(line: str) -> None:
        if rank == 0:
            log.append(line)

    def metrics(data: dict[str, Any]) -> None:
        if rank == 0:
            log.metrics(data)

    ctx = StepContext(
        job=job,
        spec=JobSpec.model_validate(job.spec),
        resolved=ResolvedConfig.from_record(job.resolved_config),
        settings=settings,
        store=store,
        job_dir=job_dir,
        step_dir=step_dir,
        log=logging.getLogger("chattune.step.finetune"),
        inputs=StepOutputs.from_records(request["inputs"]),
        progress=progress,
        metrics=metrics,
        resume=request["resume"],
    )
    run: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if rank == 0 and request.get("mlflow_run_id"):
        configure(settings)
        run = mlflow.start_run(run_id=request["mlflow_run_id"])  # the step's nested run, still open in the runner
    with run:
        result = train(ctx)
    if rank == 0:
        tmp = step_dir / f"{RESULT}.tmp"
        tmp.write_text(json.dumps(result.to_record()), encoding="utf-8")
        tmp.replace(step_dir / RESULT)


if __name__ == "__main__":
    main(sys.argv[1])
