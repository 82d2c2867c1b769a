"""`chattune models`: the catalog and the registry."""

from __future__ import annotations

import typer

from chattune.cli.output import emit, out, table
from chattune.errors import UserError
from chattune.schemas import (
    CatalogEntryPublic,
    CatalogEntrySummary,
    ModelAliasPublic,
    ModelImportPublic,
    ModelList,
    ModelTagsPublic,
    ModelVersionDetail,
    ModelVersionPublic,
    RegisteredModelSummary,
)
from chattune.workspace import Workspace

app = typer.Typer(help="Catalog models and registered (fine-tuned) models.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("list")
def list_(json_: bool = JSON) -> None:
    """Catalog entries and registered model versions."""
    ws = Workspace.from_env()
    entries = ws.catalog.list()
    versions = ws.registry.list_versions()
    aliases: dict[tuple[str, str], list[str]] = {}
    for name in {v.name for v in versions}:
        for alias_, version in ws.registry.aliases(name).items():
            aliases.setdefault((name, version), []).append(alias_)
    doc = ModelList(
        catalog=[
            CatalogEntrySummary.model_validate({**e.model_dump(), "id": e.id, "source": e.source.kind}) for e in entries
        ],
        registered=[
            RegisteredModelSummary.model_validate({**v.to_dict(), "aliases": aliases.get((v.name, v.version), [])})
            for v in versions
        ],
    )
    emit(doc, json_, _render_models)


def _render_models(doc: ModelList) -> None:
    table(
        "catalog",
        ["name", "display name", "version", "parameters", "source"],
        [[e.name, e.display_name, e.version, f"{e.parameters / 1e6:.1f}M", e.source] for e in doc.catalog],
    )
    table(
        "registered",
        ["name", "version", "aliases", "kind", "base"],
        [[v.name, v.version, " ".join(f"@{a}" for a in v.aliases), v.kind, v.base_model] for v in doc.registered],
    )


@app.command("show")
def show(ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"), json_: bool = JSON) -> None:
    """Tags of a catalog model, or a registered version with its lineage, the name's versions and aliases."""
    ws = Workspace.from_env()
    entry = ws.catalog.find(ref)
    doc: CatalogEntryPublic | ModelVersionDetail
    if entry is not None:
        doc = CatalogEntryPublic.model_validate({**entry.model_dump(), "id": entry.id})
    else:
        registry = ws.registry
        mv = registry.get(ref)
        aliases = registry.aliases(mv.name)
        doc = ModelVersionDetail.model_validate(
            {
                **ModelVersionPublic.from_version(mv).model_dump(),
                "aliases": sorted(a for a, v in aliases.items() if v == mv.version),
                "all_aliases": aliases,
                "versions": [v.version for v in registry.list_versions(mv.name)],
            }
        )
    emit(doc, json_)


@app.command("alias")
def alias(
    ref: str = typer.Argument(..., help="NAME@ALIAS"),
    version: str = typer.Argument(None, help="the version it points to (leave out with --delete)"),
    delete: bool = typer.Option(False, "--delete", help="remove the alias"),
    json_: bool = JSON,
) -> None:
    """Point NAME@ALIAS at a version (e.g. `models alias chat@champion 3`); deployments can use NAME@ALIAS."""
    name, sep, alias_ = ref.partition("@")
    if not sep or not alias_:
        raise UserError(f"{ref!r}: expected NAME@ALIAS", remedy="e.g. `chattune models alias chat@champion 3`.")
    registry = Workspace.from_env().registry
    if delete:
        registry.delete_alias(name, alias_)
        doc = ModelAliasPublic(name=name, alias=alias_, deleted=True)
    else:
        if not version:
            raise UserError("VERSION is required (or pass --delete)")
        doc = ModelAliasPublic(name=name, alias=alias_, version=registry.set_alias(name, alias_, version).version)
    emit(doc, json_, lambda d: out.print(f"{name}@{alias_} " + ("deleted" if d.deleted else f"-> version {d.version}")))


@app.command("tag")
def tag(
    ref: str = typer.Argument(..., help="NAME:VERSION or NAME@ALIAS"),
    tags: list[str] = typer.Argument(..., help="KEY=VALUE ..."),
    json_: bool = JSON,
) -> None:
    """Add or change tags of a registered version."""
    parsed = {}
    for item in tags:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"tag {item!r}: expected KEY=VALUE")
        parsed[key] = value
    mv = Workspace.from_env().registry.set_tags(ref, parsed)
    emit(ModelTagsPublic(id=mv.id, tags=mv.tags), json_, lambda d: out.print(f"{d.id} tags: {d.tags}"))


@app.command("delete")
def delete(ref: str = typer.Argument(..., help="NAME:VERSION or NAME@ALIAS")) -> None:
    """Delete a registered version and its files; refused while a deployment serves it."""
    mv = Workspace.from_env().registry.delete(ref)
    out.print(f"deleted {mv.id}")


@app.command("import")
def import_(name: str = typer.Argument(..., help="catalog name or local model directory"), json_: bool = JSON) -> None:
    """Materialize base weights into the workspace (once; stored by content hash)."""
    imported = Workspace.from_env().catalog.import_model(name)
    doc = ModelImportPublic(
        name=imported.name, path=str(imported.path), content_hash=imported.content_hash, reused=imported.reused
    )
    emit(doc, json_, lambda d: out.print(f"{d.name}: {d.path} ({'already imported' if d.reused else 'imported'})"))


@app.command("register")
def register(
    job: str = typer.Option(..., "--job", help="a succeeded job id"),
    name: str = typer.Option(None, "--name"),
    version: str = typer.Option(None, "--version"),
    json_: bool = JSON,
) -> None:
    """Register a job's trained_model as a new version, with lineage."""
    mv = Workspace.from_env().registry.register(job, name=name, version=version)
    emit(ModelVersionPublic.from_version(mv), json_, lambda d: out.print(f"registered {d.id} ({d.kind}) from {job}"))
