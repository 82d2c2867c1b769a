"""Model import: catalog sources into the workspace by content hash; the hub path against a local hub-layout cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from chattune.catalog import get_entry
from chattune.catalog.importer import build_random_model
from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def test_tiny_import_is_stored_once_by_content_hash(cli, home: Path) -> None:
    first = parse_json(cli("models", "import", "tiny-test", "--json"))
    second = parse_json(cli("models", "import", "tiny-test", "--json"))
    assert first["reused"] is False and second["reused"] is True
    assert first["path"] == second["path"] == str(home / "models" / first["content_hash"])
    assert (Path(first["path"]) / "model.safetensors").exists()
    assert len(list((home / "models").iterdir())) == 1


def test_hub_model_from_a_local_hub_cache(cli, tmp_path: Path) -> None:
    """The real `snapshot_download` code path, offline, against the hub's cache layout (no network here)."""
    repo = get_entry("phi-3-mini-4k-instruct").source.repo_id
    assert repo == "microsoft/Phi-3-mini-4k-instruct"
    cache = tmp_path / "hf"
    commit = "0" * 40
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / commit
    build_random_model(get_entry("tiny-test").source, snapshot)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir(parents=True)
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text(commit)
    env = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    doc = parse_json(cli("models", "import", "phi-3-mini-4k-instruct", "--json", env=env))
    assert Path(doc["path"]) == snapshot and len(doc["content_hash"]) == 64


def test_hub_model_offline_without_cache_fails_fast_with_a_remedy(cli, tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result = cli("models", "import", "phi-3-mini-4k-instruct", env=env, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "microsoft/Phi-3-mini-4k-instruct" in result.stderr and "local directory" in result.stderr
