"""Every config the project ships is loaded and validated (torchtune's habit)."""

from __future__ import annotations

from pathlib import Path

import pytest

from chattune import catalog
from chattune.pipeline.config import load_spec
from chattune.pipeline.resolved import resolve
from chattune.quickstart import RECIPES

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((REPO / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_example_job_files_validate_and_resolve(path: Path) -> None:
    spec = load_spec(path)
    entry = catalog.get_entry(spec.model)
    resolved, warnings = resolve(spec, entry.model_specific_defaults, has_cuda=False)
    assert warnings == []
    assert all(v["source"] in ("user", "default", "model_specific_defaults") for v in resolved.to_record().values())


@pytest.mark.parametrize("model", sorted(RECIPES))
def test_quickstart_recipes_are_valid_job_sections(model: str) -> None:
    from chattune.pipeline.config import parse_spec

    recipe = RECIPES[model]
    spec = parse_spec(
        {
            "model": "tiny-test",
            "data": {"train": "t.jsonl"},
            **{k: recipe[k] for k in ("training", "optimization", "evaluation")},
        }
    )
    assert spec.training.model_dump(exclude_unset=True) == recipe["training"]


def test_every_catalog_entry_is_complete() -> None:
    for entry in catalog.list_entries():
        assert entry.source.key
        assert entry.parameters > 0 and entry.display_name
        assert isinstance(entry.model_specific_defaults, dict)
