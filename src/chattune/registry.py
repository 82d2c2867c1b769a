"""The model registry: versioned fine-tuned models with lineage back to the job, base model and data.

A LoRA version stores only the adapter (plus tokenizer and chat template) and refers to its base by content hash;
the base weights are never copied into the registry, and deployments serve the adapter over the shared base (several
adapters, one loaded base). Its MLflow model follows the job's ``merge_lora_weights`` (Azure's default true): the
adapter merged into a standalone model, or the adapter alone over a referenced base (``chattune.mlflow_model``).
"""

from __future__ import annotations

import contextlib
import difflib
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from chattune.catalog.importer import registered_version
from chattune.entities import LOCAL_COMPUTE, Job, JobStatus, ModelVersion, Task
from chattune.errors import ConflictError, NotFoundError, UserError
from chattune.export import Export
from chattune.pipeline.config import JobSpec
from chattune.pipeline.outputs import FinetuneOutput, ModelImportOutput, StepOutputs
from chattune.pipeline.resolved import ResolvedConfig
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


def parse_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``NAME`` (the newest version), ``NAME:VERSION`` or ``NAME@ALIAS`` -> (name, version, alias)."""
    if "@" in ref:
        name, _, alias = ref.partition("@")
        return name, None, alias or None
    name, _, version = ref.partition(":")
    return name, (version or None), None


def check_ref(ref: str) -> str:
    """A model reference whose name (and version) could be a registered one: `../x`, `a/b:1`, `m:..` are refused."""
    name, version, _ = parse_ref(ref)
    check_name("model", name)
    if version is not None:
        check_name("version", version)
    return ref


ALIAS_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
RESERVED_ALIASES = frozenset({"latest"})  # `NAME` alone already means the newest version


@contextlib.contextmanager
def _restore_level(logger: logging.Logger, level: int) -> Any:
    try:
        yield
    finally:
        logger.setLevel(level)


def stored_chat_template(path: str | Path) -> str | None:
    """The chat template saved beside a model or adapter (transformers 5 writes chat_template.jinja)."""
    path = Path(path)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


class Registry:
    """The model registry: versions registered from jobs, their aliases and tags, mirrored to MLflow's registry.

    Args:
        settings: The workspace settings.
        store: The workspace database.
    """

    def __init__(self, settings: Settings, store: Store):
        self.settings = settings
        self.store = store

    def register(
        self, job_id: str, *, name: str | None = None, version: str | None = None, description: str = ""
    ) -> ModelVersion:
        """Copy a succeeded job's trained model into the registry and register it in MLflow; return the version."""
        if name is not None:  # a bad --name or --version is refused before anything is looked up
            check_name("model", name)
        if version is not None:
            check_name("version", version)
        job, produced = self._trained_job(job_id)
        imported, finetune = produced.model_import, produced.finetune
        spec = JobSpec.model_validate(job.spec)
        data_dir = Path(spec.data.train).parent.name or "data"
        name = check_name("model", name or f"{imported.name.split('/')[-1]}-{data_dir}")
        if version is not None and (self.settings.registry_dir / name / version).exists():
            raise ConflictError(f"model {name}:{version} already exists", remedy="Pick another --version.")
        resolved = ResolvedConfig.from_record(job.resolved_config)
        merge = finetune.kind == "lora" and resolved.optimization.merge_lora_weights
        # The version is also an MLflow model version (models:/NAME/N); without --version, MLflow's number is ours.
        mlflow_version = self._log_to_mlflow(name, job, finetune, imported, merge=merge)
        version = version or mlflow_version
        target = self.settings.registry_dir / name / version
        try:
            self._copy_in(finetune.trained_model, target, f"model {name}:{version}")
        except BaseException:
            self._mlflow().delete_model_version(name, mlflow_version)
            raise
        mv = ModelVersion(
            name=name,
            version=version,
            created_at=time.time(),
            kind=finetune.kind,
            path=str(target),
            base_model=imported.name,
            base_model_hash=imported.content_hash,
            base_model_path=imported.path,
            job_id=job.id,
            description=description,
            # Azure's catalog task tag for a chat model; a preference job's version says how it was tuned.
            tags={"task": "chat-completion"}
            if spec.task == Task.CHAT_COMPLETION
            else {"task": "chat-completion", "tuning": spec.preference.method},
            lineage=_lineage(
                job,
                produced,
                resolved,
                "merged" if merge else finetune.kind,
                registered_version(imported.name, self.store),
            ),
            metrics=job.metrics,
            mlflow_version=mlflow_version,
        )
        try:
            self.store.add_model_version(mv)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            self._mlflow().delete_model_version(name, mlflow_version)
            raise
        return mv

    def _trained_job(self, job_id: str) -> tuple[Job, StepOutputs]:
        """The succeeded job and its steps' typed outputs; the trained model must still be on disk."""
        from chattune.pipeline.jobs import JobService

        job = JobService(self.settings, self.store).get(job_id)
        if job.status != JobStatus.SUCCEEDED:
            raise ConflictError(
                f"job {job_id} is {job.status}; only a succeeded job's trained_model can be registered",
                remedy=f"Follow it with `chattune jobs stream {job_id}`.",
            )
        produced = StepOutputs.from_records({s.name: s.outputs for s in job.steps if s.outputs})
        trained = produced.finetune.trained_model
        if not trained.is_dir():
            raise NotFoundError(f"job {job_id}'s trained_model is missing at {trained}")
        return job, produced

    @staticmethod
    def _copy_in(trained: Path, target: Path, label: str) -> None:
        """Copy then rename: a registry directory is either complete or absent."""
        if target.exists():
            raise ConflictError(f"{label} already exists", remedy="Pick another --version.")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".register-") as tmp:
            staged = Path(tmp) / "model"
            shutil.copytree(trained, staged)
            os.replace(staged, target)

    def _mlflow(self) -> Any:
        from mlflow import MlflowClient

        from chattune.tracking import configure

        configure(self.settings)
        return MlflowClient()

    def _log_to_mlflow(
        self, name: str, job: Any, finetune: FinetuneOutput, imported: ModelImportOutput, *, merge: bool
    ) -> str:
        """Log the trained model as a pyfunc under the job's MLflow run and register it; return its version."""
        trained, kind = finetune.trained_model, finetune.kind
        config: dict[str, Any] = {"model_name": name, "max_new_tokens": 256}
        if merge:  # merge_lora_weights: a standalone model, copied into the artifact store
            from chattune.inference import save_merged

            with tempfile.TemporaryDirectory(dir=self.settings.home, prefix=".merge-") as tmp:
                merged = Path(tmp) / "model"  # MLflow keeps the directory's name under artifacts/
                save_merged(imported.path, trained, merged)
                return self._log_pyfunc(name, job, {"model": str(merged)}, config)
        if kind == "lora":  # the adapter is small: copied into the artifact store; the base is referenced
            config["base_model_path"] = imported.path
            return self._log_pyfunc(name, job, {"adapter": str(trained)}, config)
        # full weights: referenced, like the base models
        return self._log_pyfunc(name, job, {}, {**config, "model_path": str(trained)})

    def _log_pyfunc(self, name: str, job: Any, artifacts: dict[str, str], config: dict[str, Any]) -> str:
        import mlflow

        from chattune.mlflow_model import ChattuneChatModel
        from chattune.tracking import experiment_id

        run = (
            {"run_id": job.mlflow_run_id}
            if job.mlflow_run_id
            else {"experiment_id": experiment_id(self.settings, job.experiment_name)}
        )
        self._mlflow()
        # MLflow's notes on pickling the model class and on registering are noise here: the class is referenced by
        # its import path (chattune must be installed where the model loads) and chattune reports the version.
        quiet = logging.getLogger("mlflow")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        with (
            mlflow.start_run(**run, nested=mlflow.active_run() is not None),
            _restore_level(quiet, level),
            contextlib.redirect_stderr(io.StringIO()),  # MLflow prints "Successfully registered model ..." itself
        ):
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=ChattuneChatModel(),
                artifacts=artifacts,
                model_config=config,
                registered_model_name=name,
                pip_requirements=["chattune", "torch", "transformers", "peft"],
            )
        return str(info.registered_model_version)

    def get(self, ref: str) -> ModelVersion:
        """The registered version ``ref`` names (``NAME``, ``NAME:VERSION`` or ``NAME@ALIAS``).

        Raises:
            NotFoundError: No such version or alias; the message suggests a close name.
        """
        name, version, alias = parse_ref(check_ref(ref))  # `../x`, `a/b`, spaces, NUL: refused, never looked up
        if alias is not None:
            aliases = self.store.aliases(name)
            if alias not in aliases:
                have = ", ".join(f"@{a}" for a in aliases) or "none"
                raise NotFoundError(
                    f"model {name!r} has no alias {alias!r} (aliases: {have})",
                    remedy=f"Set one: `chattune models alias {name}@{alias} VERSION`.",
                )
            version = aliases[alias]
        try:
            return self.store.get_model_version(name, version)
        except NotFoundError as exc:
            from chattune.catalog.lookup import Catalog

            known = sorted({v.name for v in self.list_versions()} | set(Catalog(lambda: self.store).names()))
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise NotFoundError(
                f"model {ref!r} is neither registered nor in the catalog.{hint}",
                remedy=f"Known models: {', '.join(known)} (see `chattune models list`).",
            ) from exc

    def list_versions(self, name: str | None = None) -> list[ModelVersion]:
        """Registered versions (of ``name``, or all by name), oldest first."""
        return self.store.list_model_versions(name)

    # aliases, tags, deletion --------------------------------------------------------------------------------------
    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        """Point ``NAME@ALIAS`` at a version (moving it if it pointed elsewhere), as MLflow's model aliases do."""
        if not ALIAS_RE.fullmatch(alias) or alias in RESERVED_ALIASES:
            raise UserError(
                f"invalid alias {alias!r}",
                remedy="Use letters, digits, '_' and '-', starting with a letter or '_'; 'latest' is reserved.",
            )
        mv = self.store.get_model_version(check_name("model", name), check_name("version", version))
        self.store.set_alias(name, alias, version)
        if mv.mlflow_version:
            self._mlflow().set_registered_model_alias(name, alias, mv.mlflow_version)
        return mv

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias`` here and in MLflow.

        Raises:
            NotFoundError: The model has no such alias.
        """
        if alias not in self.aliases(name):
            raise NotFoundError(f"model {name!r} has no alias {alias!r}")
        self.store.delete_alias(name, alias)
        with contextlib.suppress(Exception):  # absent in MLflow already: nothing to undo
            self._mlflow().delete_registered_model_alias(name, alias)

    def aliases(self, name: str) -> dict[str, str]:
        """``{alias: version}`` of one registered model."""
        return self.store.aliases(check_name("model", name))

    def set_tags(self, ref: str, tags: dict[str, str]) -> ModelVersion:
        """Add or change tags of a version (in MLflow too); return the version as stored."""
        mv = self.get(ref)
        if mv.mlflow_version:
            client = self._mlflow()
            for key, value in tags.items():
                client.set_model_version_tag(mv.name, mv.mlflow_version, key, value)
        return self.store.update_model_version(mv.name, mv.version, tags={**mv.tags, **tags})

    def delete(self, ref: str) -> ModelVersion:
        """Remove a version and its files; refused while a deployment serves it."""
        mv = self.get(ref)
        users = self.store.deployments_using(mv.name, mv.version)
        if users:
            where = ", ".join(f"{d.endpoint}/{d.name}" for d in users)
            raise ConflictError(
                f"model {mv.id} is served by deployment(s) {where}",
                remedy="Delete those deployments (or move them to another version) first.",
            )
        self.store.delete_model_version(mv.name, mv.version)
        if mv.mlflow_version:
            with contextlib.suppress(Exception):
                self._mlflow().delete_model_version(mv.name, mv.mlflow_version)
        target = Path(mv.path)
        if target.parent == self.settings.registry_dir / mv.name:
            shutil.rmtree(target, ignore_errors=True)
        return mv

    def export(
        self, ref: str, fmt: str, out: Path, dtype: str | None = None, quant: str | None = None
    ) -> tuple[ModelVersion, Export]:
        """Export version ``ref`` (``models export``; chattune.export).

        A merged Hugging Face folder, or a GGUF file with an Ollama Modelfile. The options are checked before the
        version is looked up or any weight read.
        """
        from chattune.export import check_options, export_version

        check_options(fmt, dtype, quant, out)
        mv = self.get(ref)
        return mv, export_version(mv, fmt, out, dtype=dtype, quant=quant)

    def check_template(self, mv: ModelVersion) -> str | None:
        """Check that a version's stored chat template is the one it was trained with; return its SHA-256.

        The most reported failure of fine-tuned chat models is a template mismatch between training and serving.
        """
        from chattune.templates import template_hash

        expected = mv.lineage.get("chat_template_sha256")
        template = stored_chat_template(mv.path)
        if expected is None:
            return template_hash(template) if template else None
        if template is None:
            raise ConflictError(
                f"model {mv.id} has no chat template beside its weights; it was trained with {expected[:12]}...",
                remedy="Re-register the version from its job.",
            )
        actual = template_hash(template)
        if actual != expected:
            raise ConflictError(
                f"model {mv.id}: its chat template (sha256 {actual[:12]}...) is not the one it was trained with "
                f"({expected[:12]}...); serving it would format prompts differently from training",
                remedy=f"Restore {Path(mv.path) / 'chat_template.jinja'} or re-register the version from its job.",
            )
        return actual


def _lineage(
    job: Job, produced: StepOutputs, resolved: ResolvedConfig, mlflow_model: str, parent: ModelVersion | None = None
) -> dict[str, Any]:
    """Where a registered model came from: the job, its base model, data files, parameters and template.

    When the job tuned a registered version further (``model: NAME@ALIAS``), also that version and the job that made
    it.
    """
    imported = produced.model_import
    spec = JobSpec.model_validate(job.spec)
    lineage: dict[str, Any] = {
        "job_id": job.id,
        "task": spec.task.value,
        "job_display_name": job.display_name,
        "mlflow_run_id": job.mlflow_run_id,
        "base_model": {"name": imported.name, "content_hash": imported.content_hash},
        "datasets": {role: check.to_record() for role, check in produced.validate.files.items()},
        "parameters": {k: v["value"] for k, v in resolved.to_record().items()},
        "chat_template_sha256": produced.preprocess.chat_template_sha256,
        "mlflow_model": mlflow_model,
        "compute": _compute(job, produced, resolved),
    }
    if parent is not None:
        lineage["parent_model"] = {
            "model": parent.id,
            "job_id": parent.job_id,
            "task": parent.lineage.get("task", "chat_completion"),
            "base_model": parent.base_model,
        }
    return lineage


def _compute(job: Job, produced: StepOutputs, resolved: ResolvedConfig) -> dict[str, Any]:
    """Where the finetune ran: the compute target, its kind, and how many training processes (workers) it used."""
    spec = JobSpec.model_validate(job.spec)
    metrics = produced.finetune.metrics if "finetune" in produced else {}
    on_ray = spec.compute != LOCAL_COMPUTE
    workers = metrics.get("processes") or (spec.resources.workers if on_ray else resolved.world_size)
    return {"target": spec.compute, "kind": "ray" if on_ray else "local", "workers": int(workers)}
