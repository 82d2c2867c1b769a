"""Job service: create a job from a spec, run it in its own process, follow it, cancel it."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from chattune import compute
from chattune.catalog import CatalogEntry
from chattune.catalog.importer import resolve_model_ref
from chattune.catalog.lookup import Catalog
from chattune.compute.targets import ComputeTargets
from chattune.entities import LOCAL_COMPUTE, Job, JobStatus, ModelVersion, StepRun, Task
from chattune.errors import ConflictError
from chattune.pipeline import STEPS, checkpoints
from chattune.pipeline.config import JobSpec, parse_spec
from chattune.pipeline.joblog import JOB_LOG, JobLog
from chattune.pipeline.resolved import display_name, resolve
from chattune.processes import child_env, start_module
from chattune.settings import Settings
from chattune.store.base import Page, Store

CANCEL_FLAG = "CANCEL"


def model_label(ref: str, catalog: Catalog | None = None) -> str:
    """A short label for a model reference: its catalog name, a registered version's name, else its path's end."""
    entry = (catalog or Catalog()).find(ref)
    if entry:
        return entry.name
    name = ref.partition("@")[0]  # NAME@ALIAS, NAME:VERSION: the registered name
    return Path(name.rpartition(":")[0] or name).name


class JobService:
    """Fine-tuning jobs: create, start, resume, cancel, inspect and follow them.

    Args:
        settings: The workspace settings.
        store: The workspace database.
    """

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store
        # The built-in models and the workspace's imported ones: a job's `model` may name either.
        self.catalog = Catalog(lambda: store)

    def job_dir(self, job_id: str) -> Path:
        """The job's working directory (outputs, logs, cancel flag)."""
        return self.settings.jobs_dir / job_id

    def create(
        self, spec: JobSpec | dict[str, Any], *, start: bool = True, compute_name: str | None = None
    ) -> tuple[Job, list[str]]:
        """Validate and resolve ``spec``, record the job, and start its runner process. Returns (job, warnings).

        ``spec``: a JobSpec (from ``load_spec`` or built in Python) or a mapping shaped like the job YAML. Either way
        it goes through the YAML's checks, so a misspelt training key fails here, naming the closest valid one.
        ``compute_name`` names the compute target, over the spec's ``compute`` (``jobs create --compute``).

        Raises:
            NotFoundError: The model or the compute target does not exist.
            ComputeError: The model does not fit the compute, or a Ray target cannot be reached or is too small.
        """
        raw = spec.model_dump(mode="json", exclude_unset=True) if isinstance(spec, JobSpec) else dict(spec)
        if compute_name is not None:
            raw["compute"] = compute_name
        spec = parse_spec(raw, source="job spec")
        # unknown model: NotFound now, not minutes later
        target = resolve_model_ref(spec.model, self.catalog, versions=self.store)
        if isinstance(target, ModelVersion):  # a registered version tuned further: its base's catalog entry
            entry = self.catalog.find(target.base_model)
        else:
            entry = target if isinstance(target, CatalogEntry) else None
        on_ray = spec.compute != LOCAL_COMPUTE
        warnings: list[str] = []
        if on_ray:
            res = spec.resources
            status = ComputeTargets(self.store).fits(
                spec.compute, workers=res.workers, cpus_per_worker=res.cpus_per_process, use_gpu=res.use_gpu
            )
            info = status.compute_info()
            has_cuda, cpu_bf16 = res.use_gpu, False
        else:
            info = compute.detect()
            has_cuda, cpu_bf16 = info.has_cuda, compute.cpu_has_bf16()
            if "resources" in raw:
                warnings.append(
                    "resources apply to Ray compute targets; on local, "
                    "optimization.number_of_gpu_to_use_finetuning sets the training processes"
                )
        resolved, resolve_warnings = resolve(
            spec,
            entry.model_specific_defaults if entry else {},
            has_cuda=has_cuda,
            devices=info.devices,
            cpu_bf16=cpu_bf16,
            cuda_bf16=compute.cuda_has_bf16() if info.has_cuda and not on_ray else has_cuda,
            lora_targets=entry.lora_target_modules if entry else None,
            lora_targets_source=entry.lora_targets_source if entry else None,
        )
        warnings += resolve_warnings
        if entry and on_ray and spec.resources.use_gpu:
            warnings.append(f"{spec.compute}: Ray does not report GPU memory; the training memory check is skipped")
        elif entry:  # a model that cannot train here fails now, for the CLI, the SDK and quickstart alike
            options = resolved.memory_options()
            if on_ray:
                options["world_size"] = spec.resources.workers
            fit = compute.check(entry, info, **options)
            if not fit.ok:
                raise compute.unfit_error(fit)
        gpus_per_node = spec.resources.workers if on_ray else resolved.optimization.number_of_gpu_to_use_finetuning
        data = "ultrachat" if spec.task == Task.CHAT_COMPLETION else spec.preference.method
        name = spec.display_name or display_name(
            model_label(spec.model, self.catalog), resolved, gpus_per_node, data=data
        )
        job_id = f"ftjob-{secrets.token_hex(6)}"
        job = Job(
            id=job_id,
            display_name=name,
            experiment_name=spec.experiment_name,
            model=spec.model,
            status=JobStatus.QUEUED,
            created_at=time.time(),
            spec=spec.model_dump(mode="json"),
            resolved_config=resolved.to_record(),
            steps=[StepRun(job_id=job_id, name=s) for s in STEPS],
        )
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        self.store.create_job(job)
        for w in warnings:
            self.append_log(job_id, f"warning: {w}", level="warn")
        if start:
            self.start(job_id)
        return self.get(job_id), warnings

    def start(self, job_id: str, *, resume: bool = False) -> None:
        """Start the job's runner process (detached: it outlives the caller) and record its pid."""
        pid = start_module(
            "chattune.pipeline.runner",
            [job_id, *(["--resume"] if resume else [])],
            self.job_dir(job_id) / "runner.log",
            env=child_env(CHATTUNE_HOME=str(self.settings.home)),
        )
        self.store.update_job(job_id, pid=pid)

    def log(self, job_id: str) -> JobLog:
        """The job's log and event files."""
        return JobLog(self.job_dir(job_id))

    def append_log(self, job_id: str, line: str, *, level: str = "info") -> None:
        """One line of the job log and its event."""
        self.log(job_id).append(line, level=level)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        """The job's OpenAI-shaped events, oldest first."""
        return self.log(job_id).events()

    def _checkpoint_root(self, job_id: str) -> Path:
        return self.job_dir(job_id) / "steps" / "finetune" / checkpoints.DIR

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        """The finetune's saved checkpoints with the metrics at their step (OpenAI's checkpoint objects)."""
        out = []
        for path, state in checkpoints.saved(self._checkpoint_root(job_id)):
            step, history = checkpoints.step_of(path), state["log_history"]

            def last(key: str, step: int = step, history: list[dict[str, Any]] = history) -> float | None:
                values = [h[key] for h in history if key in h and h.get("step", 0) <= step]
                return float(values[-1]) if values else None

            out.append(
                {
                    "id": f"ftckpt-{job_id}-{step}",
                    "object": "fine_tuning.job.checkpoint",
                    "step_number": step,
                    "path": str(path),
                    "metrics": {
                        "step": step,
                        "train_loss": last("loss"),
                        "valid_loss": last("eval_loss"),
                        "train_mean_token_accuracy": last("mean_token_accuracy"),
                        "valid_mean_token_accuracy": last("eval_mean_token_accuracy"),
                    },
                }
            )
        return out

    def resume(self, job_id: str) -> Job:
        """Run a failed or cancelled job again.

        Finished steps are kept, the finetune continues from its last checkpoint (optimizer, scheduler and RNG state
        restored).
        """
        job = self.get(job_id)
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            raise ConflictError(
                f"job {job_id} is {job.status}; only a failed or cancelled job can be resumed",
                remedy=f"Follow it with `chattune jobs stream {job_id}`." if not job.status.is_terminal else None,
            )
        (self.job_dir(job_id) / CANCEL_FLAG).unlink(missing_ok=True)
        # pid=None: until the new runner records its pid, `get` must not take the dead old one for a crash.
        self.store.update_job(job_id, status=JobStatus.QUEUED, finished_at=None, error=None, pid=None)
        root = self._checkpoint_root(job_id)
        for partial in checkpoints.incomplete(root):
            # A crash during a save: the Trainer would write into this folder again; remove it so that what is
            # listed is what the resume can use.
            shutil.rmtree(partial)
            self.append_log(job_id, f"removed {partial.name}: its save was interrupted (no {checkpoints.STATE})")
        if JobSpec.model_validate(job.spec).compute != LOCAL_COMPUTE:
            # Ray Train decides: the last checkpoint it registered (its run folder, named after the job).
            self.append_log(job_id, "resume requested; Ray Train continues from the last checkpoint it registered")
        else:
            newest = checkpoints.last(root)
            at = checkpoints.step_of(newest) if newest else "none"
            self.append_log(job_id, f"resume requested; last checkpoint: {at}")
        self.start(job_id, resume=True)
        return self.get(job_id)

    def get(self, job_id: str) -> Job:
        """The job; one whose runner died without recording an end is marked failed (``runner_died``) first."""
        job = self.store.get_job(job_id)
        if not job.status.is_terminal and job.pid and not _alive(job.pid):
            # The runner died without recording an end (killed, OOM): say so instead of "running" forever.
            job = self.store.update_job(
                job_id,
                status=JobStatus.FAILED,
                finished_at=time.time(),
                error={"code": "runner_died", "message": f"the job process {job.pid} ended without finishing"},
            )
        return job

    def list(self, *, limit: int = 50, after: str | None = None) -> Page[Job]:
        """Jobs, newest first, ``limit`` at a time, after the job ``after``."""
        return self.store.list_jobs(limit=limit, after=after)

    def cancel(self, job_id: str) -> Job:
        """Ask a running job to stop: the runner sees the cancel flag and stops at its next check.

        Raises:
            ConflictError: The job has already finished.
        """
        job = self.get(job_id)
        if job.status.is_terminal:
            raise ConflictError(f"job {job_id} already {job.status}")
        (self.job_dir(job_id) / CANCEL_FLAG).touch()
        return job

    def read_log(self, job_id: str, position: int = 0, *, final: bool = False) -> tuple[tuple[str, ...], int]:
        """The whole lines the job log has from byte ``position`` on, and the position after them.

        A line still being written is left for the next read, so a follower never splits one; ``final`` (the job has
        ended) reads an unterminated last line too.
        """
        path = self.job_dir(job_id) / JOB_LOG
        if not path.exists():
            return (), position
        with path.open("rb") as fh:
            fh.seek(position)
            data = fh.read()
        complete = data if final else data[: data.rfind(b"\n") + 1]
        return tuple(complete.decode("utf-8", errors="replace").splitlines()), position + len(complete)

    def stream(
        self, job_id: str, emit: Callable[[str], None], *, poll_s: float = 0.5, timeout_s: float | None = None
    ) -> Job:
        """Emit the job log as it grows until the job ends; return the final job."""
        position = 0
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while True:
            job = self.get(job_id)
            lines, position = self.read_log(job_id, position, final=job.status.is_terminal)
            for line in lines:
                emit(line)
            if job.status.is_terminal:
                return job
            if deadline and time.monotonic() > deadline:
                return job
            time.sleep(poll_s)


def _alive(pid: int) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
