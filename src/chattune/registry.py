"""The model registry: versioned fine-tuned models with lineage back to the job, base model and data.

A LoRA version stores only the adapter (plus tokenizer and chat template) and refers to its base by content hash;
the base weights are never copied.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from chattune.entities import JobStatus, ModelVersion
from chattune.errors import ConflictError, NotFoundError, UserError
from chattune.settings import Settings
from chattune.store.base import Store

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(kind: str, name: str) -> str:
    """Names become directory names: refuse path separators, traversal and odd characters."""
    if not NAME_RE.fullmatch(name) or ".." in name:
        raise UserError(
            f"invalid {kind} name {name!r}",
            remedy="Use letters, digits, '.', '_' and '-' (up to 128 characters, starting with a letter or digit).",
        )
    return name


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME``, ``NAME:VERSION`` (``@ALIAS`` comes with the registry issue)."""
    name, _, version = ref.partition(":")
    return name, (version or None)


class Registry:
    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def register(
        self, job_id: str, *, name: str | None = None, version: str | None = None, description: str = ""
    ) -> ModelVersion:
        from chattune.pipeline.jobs import JobService

        job = JobService(self.settings, self.store).get(job_id)
        if job.status != JobStatus.SUCCEEDED:
            raise ConflictError(
                f"job {job_id} is {job.status}; only a succeeded job's trained_model can be registered",
                remedy=f"Follow it with `chattune jobs stream {job_id}`.",
            )
        steps = {s.name: s for s in job.steps}
        trained = Path(job.outputs["trained_model"])
        if not trained.is_dir():
            raise NotFoundError(f"job {job_id}'s trained_model is missing at {trained}")
        imported = steps["model_import"].outputs
        finetune = steps["finetune"].outputs
        data_dir = Path(job.spec["data"]["train"]).parent.name or "data"
        name = check_name("model", name or f"{imported['name'].split('/')[-1]}-{data_dir}")
        version = check_name("version", version or self._next_version(name))
        lineage: dict[str, Any] = {
            "job_id": job.id,
            "job_display_name": job.display_name,
            "mlflow_run_id": job.mlflow_run_id,
            "base_model": {"name": imported["name"], "content_hash": imported["content_hash"]},
            "datasets": steps["validate"].outputs.get("files", {}),
            "parameters": {k: v["value"] for k, v in job.resolved_config.items()},
            "chat_template_sha256": steps["preprocess"].outputs.get("chat_template_sha256"),
        }
        target = self.settings.registry_dir / name / version
        if target.exists():
            raise ConflictError(f"model {name}:{version} already exists", remedy="Pick another --version.")
        target.parent.mkdir(parents=True, exist_ok=True)
        # Copy then rename: a registry directory is either complete or absent.
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".register-") as tmp:
            staged = Path(tmp) / "model"
            shutil.copytree(trained, staged)
            os.replace(staged, target)
        mv = ModelVersion(
            name=name,
            version=version,
            created_at=time.time(),
            kind=finetune["kind"],
            path=str(target),
            base_model=imported["name"],
            base_model_hash=imported["content_hash"],
            base_model_path=imported["path"],
            job_id=job.id,
            description=description,
            tags={"task": "chat-completion"},
            lineage=lineage,
            metrics=job.metrics,
        )
        try:
            self.store.add_model_version(mv)
        except Exception:
            shutil.rmtree(target, ignore_errors=True)
            raise
        return mv

    def _next_version(self, name: str) -> str:
        # The seed uses a timestamp as the version; keep that, made unique within the same second.
        existing = {v.version for v in self.store.list_model_versions(name)}
        stamp = int(time.time())
        while str(stamp) in existing:
            stamp += 1
        return str(stamp)

    def get(self, ref: str) -> ModelVersion:
        name, version = parse_ref(ref)
        try:
            return self.store.get_model_version(name, version)
        except NotFoundError as exc:
            from chattune import catalog

            known = sorted({v.name for v in self.list_versions()} | {e.name for e in catalog.list_entries()})
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise NotFoundError(
                f"model {ref!r} is neither registered nor in the catalog.{hint}",
                remedy=f"Known models: {', '.join(known)} (see `chattune models list`).",
            ) from exc

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        return self.store.list_model_versions(name)
