"""The finetune on a Ray target: a Ray Train ``TorchTrainer`` whose workers run the same training code as torchrun's.

The job runner is the Ray driver. Each of the ``instance_count * processes_per_instance`` workers rebuilds the step
context from the job record (chattune.pipeline.worker) and calls the finetune step's ``train`` with Ray's Hugging
Face integration: ``prepare_trainer`` and ``RayTrainReportCallback``, which reports every checkpoint the Trainer
saves to Ray Train (copied under ``RunConfig(storage_path, name=job id)``). Ray restarts the workers after a worker
dies (``FailureConfig(max_failures)``) and the run continues from the last reported checkpoint; a resumed job (same
run name and storage) continues from it too (``ray.train.get_checkpoint()``). Process groups: gloo on CPUs, NCCL on
GPUs. Rank 0 writes progress lines, metrics and the result where the local step does: the workspace must be on a
filesystem every node reads (the one machine here; a shared filesystem on a real cluster, docs/scale-out.md).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from chattune.compute.targets import ComputeTargets, driver_env
from chattune.errors import JobCancelledError, StepFailedError
from chattune.pipeline.context import StepContext
from chattune.pipeline.launch import RESULT, worker_request
from chattune.pipeline.outputs import FinetuneOutput
from chattune.processes import CHILD_DEFAULTS

# The subfolder of a Ray Train checkpoint that holds the Hugging Face checkpoint (RayTrainReportCallback's layout).
HF_CHECKPOINT = "checkpoint"
# The Python thread switch interval of a Ray Train worker (see _train_loop).
TRAIN_SWITCH_INTERVAL_S = 0.05


def _train_loop(request: dict[str, Any]) -> None:  # pragma: no cover - runs in a Ray Train worker
    """One Ray Train worker: the step's ``train`` with Ray's Hugging Face integration."""
    # Ray Train runs this function in a thread of the worker actor; the actor's main thread (Ray's task loop) wakes
    # often and takes the GIL from it at every switch interval (5 ms by default). With 50 ms the training thread keeps
    # the GIL through more of each step: 1-worker tiny-test runs trained ~13% faster (docs/benchmarks.md, "Ray: where
    # the per-step cost goes"). The actor runs nothing but this training, and Ray's control messages wait at most 50 ms.
    sys.setswitchinterval(TRAIN_SWITCH_INTERVAL_S)
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer

    from chattune.pipeline.steps.finetune import TrainerHooks
    from chattune.pipeline.worker import run

    def resume_from() -> Path | None:
        checkpoint = ray.train.get_checkpoint()  # after a worker restart or a resumed job: the last one reported
        return Path(checkpoint.path) / HF_CHECKPOINT if checkpoint else None

    train_context = ray.train.get_context()
    if train_context.get_world_size() == 1:
        _leave_world_of_one()
    hooks = TrainerHooks(callbacks=[RayTrainReportCallback()], prepare=prepare_trainer, resume_from=resume_from)
    run(request, train_context.get_world_rank(), hooks)


# The variables Ray Train sets for torch.distributed in each worker (ray.train.torch.config).
_DIST_ENV = ("LOCAL_RANK", "RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK")


def _leave_world_of_one() -> None:  # pragma: no cover - a Ray Train worker's (and a subprocess's in the unit test)
    """Train a 1-worker run as the local runner does: no process group, no ``DistributedDataParallel``.

    Ray Train sets up a process group and ``LOCAL_RANK`` for every run, and Accelerate then wraps the model in DDP
    over gloo even for a world of one: buffer syncs, broadcasts and all-gathers that change nothing (a 1-worker
    tiny-test job trained ~20% faster without them, docs/benchmarks.md). With the group destroyed and the variables
    gone, the HF Trainer sees the single process it is; Ray Train's own calls (report, checkpoints, restarts) do not
    use the group.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for name in _DIST_ENV:
        os.environ.pop(name, None)


def worker_env(ctx: StepContext) -> dict[str, str]:
    """The environment of the Ray workers: this workspace's ``CHATTUNE_*`` settings and chattune's child defaults."""
    env = {**CHILD_DEFAULTS, **{k: v for k, v in os.environ.items() if k.startswith("CHATTUNE_")}}
    env.update(CHATTUNE_HOME=str(ctx.settings.home), PYTHONUNBUFFERED="1")
    return env


def storage_path(ctx: StepContext) -> str:
    """Where Ray Train keeps the run's checkpoints.

    ``CHATTUNE_RAY_STORAGE`` (a shared path or URI), else the workspace's jobs folder (the run is named after the job).
    """
    return ctx.settings.ray_storage or str(ctx.settings.jobs_dir)


def launch(ctx: StepContext) -> FinetuneOutput:
    """Run the finetune as a Ray Train ``TorchTrainer`` on the job's compute target; return rank 0's result.

    Raises:
        NotFoundError: The target is not recorded.
        StepFailedError: Training failed (after Ray's restarts).
        JobCancelledError: The job was cancelled (the run's workers are stopped with the driver's Ray job).
    """
    target = ComputeTargets(ctx.store).get(ctx.spec.compute)
    # A local cluster's token: in the environment before Ray is imported (it reads its
    # authentication mode once per process).
    os.environ.update(driver_env(target))
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    resources = ctx.spec.resources
    result_path = ctx.step_dir / RESULT
    result_path.unlink(missing_ok=True)
    limit = ctx.training.save_total_limit
    trainer = TorchTrainer(
        _train_loop,
        train_loop_config=worker_request(ctx),
        torch_config=TorchConfig(backend="nccl" if resources.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=resources.workers,
            use_gpu=resources.use_gpu,
            resources_per_worker={"CPU": resources.cpus_per_process, **({"GPU": 1} if resources.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=ctx.job.id,
            storage_path=storage_path(ctx),
            failure_config=FailureConfig(max_failures=ctx.spec.settings.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=limit if limit > 0 else None),
        ),
    )
    if resources.workers == 1:
        how = "1 Ray Train worker", "one process, no process group"
    else:
        how = f"{resources.workers} Ray Train workers", "NCCL on GPUs" if resources.use_gpu else "gloo on CPUs"
    ctx.progress(f"  launching {how[0]} on compute {target.name} ({target.address}), {how[1]}")
    ray.init(
        address=target.address,
        runtime_env={"env_vars": worker_env(ctx)},
        logging_level=logging.WARNING,
        configure_logging=False,
    )
    outcome: dict[str, Any] = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as exc:  # reported by the waiting thread
            outcome["error"] = exc

    try:
        thread = threading.Thread(target=fit, name="ray-train-fit", daemon=True)
        thread.start()
        while thread.is_alive():
            if ctx.cancelled():
                # Leaving the Ray job (ray.shutdown below) ends its actors: the Train controller and every worker.
                raise JobCancelledError(
                    f"cancelled; `chattune jobs resume {ctx.job.id}` continues from the last checkpoint"
                )
            thread.join(0.5)
    finally:
        ray.shutdown()
    if "error" in outcome or not result_path.exists():
        raise StepFailedError(
            f"Ray Train failed on compute {target.name}: {outcome.get('error', 'no result written by rank 0')}"
        ) from outcome.get("error")
    out = FinetuneOutput.model_validate_json(result_path.read_text(encoding="utf-8"))
    run_dir = Path(storage_path(ctx)) / ctx.job.id
    extra = {"processes": resources.workers, "compute": target.name, "ray_run": str(run_dir)}
    return out.model_copy(update={"metrics": {**out.metrics, **extra}})
