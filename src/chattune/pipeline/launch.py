"""Several training processes on this machine: torchrun launches the finetune workers, this process watches them.

The request (job id, step folder, the outputs of the earlier steps, resume) goes to the workers as a JSON file;
each worker rebuilds the step context from the job record (``python -m chattune.pipeline.worker``), trains its
shard with DDP (NCCL on GPUs, gloo on a CPU), and rank 0 writes ``result.json``. A cancel stops the whole process
group; the checkpoints written so far stay, so ``jobs resume`` continues from the last one.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from chattune.errors import JobCancelledError, StepFailedError
from chattune.pipeline.context import StepContext
from chattune.pipeline.outputs import FinetuneOutput
from chattune.processes import child_env, share_cores, tail

REQUEST = "launch.json"
RESULT = "result.json"
WORKERS_LOG = "workers.log"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: torchrun gets SIGTERM if the runner dies (kill -9 included), and stops its workers in turn."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def torchrun_command(nproc_per_node: int, request: str) -> list[str]:
    """The torchrun command that starts ``nproc_per_node`` finetune workers on this machine for ``request``."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # one node: a local rendezvous on a free port
        "--nnodes=1",
        f"--nproc_per_node={nproc_per_node}",
        "-m",
        "chattune.pipeline.worker",
        request,
    ]


def worker_request(ctx: StepContext) -> dict[str, Any]:
    """What every training worker (torchrun's or Ray Train's) rebuilds its step context from.

    The job id, the step folder, the earlier steps' outputs, whether to resume, and the step's open MLflow run.
    """
    import mlflow

    run = mlflow.active_run()
    return {
        "job_id": ctx.job.id,
        "step_dir": str(ctx.step_dir),
        "inputs": ctx.inputs.to_records(),
        "resume": ctx.resume,
        "mlflow_run_id": run.info.run_id if run else None,
    }


def launch(ctx: StepContext, *, nproc_per_node: int) -> FinetuneOutput:
    """Run the finetune in ``nproc_per_node`` processes and return rank 0's result."""
    request = ctx.step_dir / REQUEST
    result = ctx.step_dir / RESULT
    result.unlink(missing_ok=True)
    request.write_text(json.dumps(worker_request(ctx)), encoding="utf-8")
    log_path = ctx.step_dir / WORKERS_LOG
    # the cores shared between the workers instead of oversubscribed (torchrun alone would pick 1 thread each)
    env = child_env(CHATTUNE_HOME=str(ctx.settings.home), PYTHONUNBUFFERED="1", **share_cores(nproc_per_node))
    ctx.progress(f"  launching {nproc_per_node} training processes with torchrun")
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            torchrun_command(nproc_per_node, str(request)),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # one process group: a cancel stops torchrun and every worker
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        try:
            while proc.poll() is None:
                if ctx.cancelled():
                    _stop(proc)
                    raise JobCancelledError(
                        f"cancelled; `chattune jobs resume {ctx.job.id}` continues from the last checkpoint"
                    )
                time.sleep(0.5)
        except BaseException:
            _stop(proc)
            raise
    if proc.returncode != 0 or not result.exists():
        raise StepFailedError(
            f"the training processes exited with status {proc.returncode}; see {log_path}:\n{tail(log_path, 30)}"
        )
    out = FinetuneOutput.model_validate_json(result.read_text(encoding="utf-8"))
    return out.model_copy(update={"metrics": {**out.metrics, "processes": nproc_per_node}})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
