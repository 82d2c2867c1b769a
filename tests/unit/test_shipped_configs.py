"""Every config the project ships is loaded and validated (torchtune's habit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chattune import catalog
from chattune.entities import Task
from chattune.pipeline.config import load_spec
from chattune.pipeline.resolved import resolve
from chattune.quickstart import load_recipe, recipe_names

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_job_files_validate_and_resolve(path: Path) -> None:
    spec = load_spec(path)
    entry = catalog.get_entry(spec.model)
    resolved, warnings = resolve(spec, entry.model_specific_defaults, has_cuda=False)
    assert warnings == []
    assert all(v["source"] in ("user", "default", "model_specific_defaults") for v in resolved.to_record().values())


def test_quickstart_ships_its_recipes() -> None:
    assert {"default", "tiny-test", "default-preference", "tiny-test-preference"} <= set(recipe_names())


@pytest.mark.parametrize("name", recipe_names())
def test_quickstart_recipes_are_valid_job_specs(name: str) -> None:
    task = Task.PREFERENCE if name.endswith("-preference") else Task.CHAT_COMPLETION
    model = name.removesuffix("-preference")
    model = model if model != "default" else catalog.DEFAULT_MODEL
    recipe = load_recipe(model, task)
    assert recipe.name == name and recipe.rows > 0
    assert recipe.spec(model, {"train": "t.jsonl"}).task == task
    spec = recipe.spec(model, {"train": "t.jsonl"})
    assert spec.training.model_dump(mode="json", exclude_unset=True) == recipe.job["training"]
    resolved, warnings = resolve(spec, catalog.get_entry(model).model_specific_defaults, has_cuda=False)
    assert warnings == []
    assert resolved.max_length(None) == recipe.job["training"]["max_seq_length"]


def test_every_catalog_entry_is_complete() -> None:
    for entry in catalog.list_entries():
        assert entry.source.key
        assert entry.parameters > 0 and entry.display_name
        assert isinstance(entry.model_specific_defaults, dict)
