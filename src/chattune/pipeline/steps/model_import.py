"""model_import: materialize the base model in the workspace (once per content hash)."""

from __future__ import annotations

from typing import Any

from chattune.catalog.importer import import_model
from chattune.pipeline.context import StepContext


def run(ctx: StepContext) -> dict[str, Any]:
    imported = import_model(ctx.settings, ctx.store, ctx.spec.model)
    ctx.progress(f"  {imported.name}: {'reused' if imported.reused else 'imported'} {imported.path}")
    return {"name": imported.name, "path": imported.path, "content_hash": imported.content_hash}
