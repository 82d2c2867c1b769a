"""model_import: materialize the base model in the workspace (once per content hash)."""

from __future__ import annotations

from typing import Any

from chattune.catalog.importer import import_model
from chattune.pipeline.context import KeyInputs, StepContext
from chattune.pipeline.outputs import ModelImportOutput


class ModelImport:
    """The ``model_import`` step."""

    name = "model_import"
    needs: tuple[str, ...] = ()

    def cache_key(self, given: KeyInputs) -> dict[str, Any] | None:
        """Never cached: the import index (source -> content hash) already makes it instant."""
        return None

    def run(self, ctx: StepContext) -> ModelImportOutput:
        """Import the job's model (or reuse the copy with the same content)."""
        imported = import_model(ctx.settings, ctx.store, ctx.spec.model)
        ctx.progress(f"  {imported.name}: {'reused' if imported.reused else 'imported'} {imported.path}")
        return ModelImportOutput(name=imported.name, path=str(imported.path), content_hash=imported.content_hash)


STEP = ModelImport()
