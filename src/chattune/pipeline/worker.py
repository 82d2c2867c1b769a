"""One finetune worker: ``python -m chattune.pipeline.worker REQUEST.json`` under torchrun, or a Ray Train worker.

Both rebuild the step context from the job record (its stored resolved config, never resolved again) and call the
finetune step's ``train`` (``run``); rank 0 writes the job's progress lines, logs metrics to the step's MLflow run,
and writes the result atomically (write, then rename).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chattune.pipeline.config import JobSpec
from chattune.pipeline.context import StepContext
from chattune.pipeline.joblog import JobLog
from chattune.pipeline.launch import RESULT
from chattune.pipeline.outputs import FinetuneOutput, StepOutputs
from chattune.pipeline.resolved import ResolvedConfig
from chattune.settings import Settings
from chattune.store import open_store

if TYPE_CHECKING:
    from chattune.pipeline.steps.finetune import TrainerHooks


def context(request: dict[str, Any], rank: int) -> StepContext:
    """The finetune's step context in a worker of rank ``rank``: progress and metrics are rank 0's only.

    A worker never looks at the cancel flag: ranks reading it at different steps would leave the others waiting in
    a collective. The launcher stops every worker at once instead (torchrun's process group, Ray's job).
    """
    settings = Settings()
    store = open_store(settings)
    job = store.get_job(request["job_id"])
    job_dir = settings.jobs_dir / job.id
    log = JobLog(job_dir)

    def progress(line: str) -> None:
        if rank == 0:
            log.append(line)

    def metrics(data: dict[str, Any]) -> None:
        if rank == 0:
            log.metrics(data)

    return StepContext(
        job=job,
        spec=JobSpec.model_validate(job.spec),
        resolved=ResolvedConfig.from_record(job.resolved_config),
        settings=settings,
        store=store,
        job_dir=job_dir,
        step_dir=Path(request["step_dir"]),
        log=logging.getLogger("chattune.step.finetune"),
        inputs=StepOutputs.from_records(request["inputs"]),
        progress=progress,
        metrics=metrics,
        resume=request["resume"],
    )


def run(request: dict[str, Any], rank: int, hooks: TrainerHooks | None = None) -> FinetuneOutput:
    """Train as the worker of rank ``rank``: the step's MLflow run reopened on rank 0, which writes the result."""
    import mlflow

    from chattune.pipeline.steps.finetune import train
    from chattune.tracking import configure

    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )
    ctx = context(request, rank)
    mlflow_run: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if rank == 0 and request.get("mlflow_run_id"):
        configure(ctx.settings)
        mlflow_run = mlflow.start_run(run_id=request["mlflow_run_id"])  # the step's nested run, open in the runner
    with mlflow_run:
        result = train(ctx, hooks)
    if rank == 0:
        tmp = ctx.step_dir / f"{RESULT}.tmp"
        tmp.write_text(json.dumps(result.to_record()), encoding="utf-8")
        tmp.replace(ctx.step_dir / RESULT)
    return result


def main(request_path: str) -> None:
    """Run the finetune step as one torchrun worker, from the request file ``request_path``."""
    run(json.loads(Path(request_path).read_text(encoding="utf-8")), int(os.environ.get("RANK", "0")))


if __name__ == "__main__":
    main(sys.argv[1])
