"""Job service: create a job from a spec, run it in its own process, follow it, cancel it."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from chattune import catalog
from chattune.catalog.importer import resolve_model_ref
from chattune.compute import detect
from chattune.entities import Job, JobStatus, StepRun
from chattune.errors import ConflictError
from chattune.pipeline import STEPS
from chattune.pipeline.config import JobSpec, display_name, resolve
from chattune.settings import Settings
from chattune.store.base import Page, Store

JOB_LOG = "job.log"
CANCEL_FLAG = "CANCEL"


def model_label(ref: str) -> str:
    entry = catalog.find_entry(ref)
    return entry.name if entry else Path(ref).name


class JobService:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def job_dir(self, job_id: str) -> Path:
        return self.settings.jobs_dir / job_id

    def create(self, spec: JobSpec, *, start: bool = True) -> tuple[Job, list[str]]:
        """Validate and resolve ``spec``, record the job, and start its runner process. Returns (job, warnings)."""
        target = resolve_model_ref(spec.model)  # unknown model: NotFound now, not minutes later
        defaults = target.model_specific_defaults if isinstance(target, catalog.CatalogEntry) else {}
        info = detect()
        resolved, warnings = resolve(spec, defaults, has_cuda=info.has_cuda)
        name = spec.display_name or display_name(model_label(spec.model), resolved, max(1, len(info.gpus)))
        job_id = f"ftjob-{secrets.token_hex(6)}"
        job = Job(
            id=job_id,
            display_name=name,
            experiment_name=spec.experiment_name,
            model=spec.model,
            status=JobStatus.QUEUED,
            created_at=time.time(),
            spec=spec.model_dump(mode="json"),
            resolved_config=resolved,
            steps=[StepRun(job_id=job_id, name=s) for s in STEPS],
        )
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        self.store.create_job(job)
        for w in warnings:
            self.append_log(job_id, f"warning: {w}")
        if start:
            self.start(job_id)
        return self.get(job_id), warnings

    def start(self, job_id: str) -> None:
        out = (self.job_dir(job_id) / "runner.log").open("ab")
        env = {**os.environ, "CHATTUNE_HOME": str(self.settings.home)}
        proc = subprocess.Popen(
            [sys.executable, "-m", "chattune.pipeline.runner", job_id],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # the job outlives the command that created it
        )
        self.store.update_job(job_id, pid=proc.pid)

    def append_log(self, job_id: str, line: str) -> None:
        with (self.job_dir(job_id) / JOB_LOG).open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {line}\n")

    def get(self, job_id: str) -> Job:
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
        return self.store.list_jobs(limit=limit, after=after)

    def cancel(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job.status.is_terminal:
            raise ConflictError(f"job {job_id} already {job.status}")
        (self.job_dir(job_id) / CANCEL_FLAG).touch()
        return job

    def stream(
        self, job_id: str, emit: Callable[[str], None], *, poll_s: float = 0.5, timeout_s: float | None = None
    ) -> Job:
        """Emit the job log as it grows until the job ends; return the final job."""
        path = self.job_dir(job_id) / JOB_LOG
        position = 0
        deadline = time.monotonic() + timeout_s if timeout_s else None
        while True:
            job = self.get(job_id)
            if path.exists():
                with path.open("r", encoding="utf-8") as fh:
                    fh.seek(position)
                    for line in fh:
                        emit(line.rstrip("\n"))
                    position = fh.tell()
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


def job_summary(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "display_name": job.display_name,
        "model": job.model,
        "status": str(job.status),
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }
