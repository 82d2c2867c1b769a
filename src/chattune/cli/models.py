"""`chattune models`: the catalog and the registry."""

from __future__ import annotations

import typer

from chattune import catalog
from chattune.catalog.importer import import_model
from chattune.cli.output import emit_json, out, table
from chattune.workspace import Workspace

app = typer.Typer(help="Catalog models and registered (fine-tuned) models.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("list")
def list_(json_: bool = JSON) -> None:
    """Catalog entries and registered model versions."""
    ws = Workspace()
    entries = catalog.list_entries()
    versions = ws.registry.list_versions()
    if json_:
        emit_json(
            {
                "catalog": [
                    {
                        "name": e.name,
                        "display_name": e.display_name,
                        "version": e.version,
                        "id": e.id,
                        "parameters": e.parameters,
                        "source": e.source.kind,
                    }
                    for e in entries
                ],
                "registered": [
                    {
                        "name": v.name,
                        "version": v.version,
                        "kind": v.kind,
                        "base_model": v.base_model,
                        "job_id": v.job_id,
                        "created_at": v.created_at,
                    }
                    for v in versions
                ],
            }
        )
        return
    table(
        "catalog",
        ["name", "display name", "version", "parameters", "source"],
        [[e.name, e.display_name, e.version, f"{e.parameters / 1e6:.1f}M", e.source.kind] for e in entries],
    )
    table(
        "registered",
        ["name", "version", "kind", "base", "job"],
        [[v.name, v.version, v.kind, v.base_model, v.job_id] for v in versions],
    )


@app.command("show")
def show(ref: str = typer.Argument(..., help="NAME or NAME:VERSION"), json_: bool = JSON) -> None:
    """Tags of a catalog model, or versions and lineage of a registered one."""
    entry = catalog.find_entry(ref)
    if entry is not None:
        doc = {**entry.model_dump(), "id": entry.id}
    else:
        mv = Workspace().registry.get(ref)
        doc = {**mv.to_dict(), "id": mv.id}
    if json_:
        emit_json(doc)
    else:
        out.print_json(data=doc)


@app.command("import")
def import_(name: str = typer.Argument(..., help="catalog name or local model directory"), json_: bool = JSON) -> None:
    """Materialize base weights into the workspace (once; stored by content hash)."""
    ws = Workspace()
    imported = import_model(ws.settings, ws.store, name)
    doc = {
        "name": imported.name,
        "path": imported.path,
        "content_hash": imported.content_hash,
        "reused": imported.reused,
    }
    if json_:
        emit_json(doc)
    else:
        out.print(f"{imported.name}: {imported.path} ({'already imported' if imported.reused else 'imported'})")


@app.command("register")
def register(
    job: str = typer.Option(..., "--job", help="a succeeded job id"),
    name: str = typer.Option(None, "--name"),
    version: str = typer.Option(None, "--version"),
    json_: bool = JSON,
) -> None:
    """Register a job's trained_model as a new version, with lineage."""
    mv = Workspace().registry.register(job, name=name, version=version)
    if json_:
        emit_json({**mv.to_dict(), "id": mv.id})
    else:
        out.print(f"registered {mv.id} ({mv.kind}) from {job}")
