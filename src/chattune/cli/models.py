"""`chattune models`: the catalog and the registry."""

from __future__ import annotations

from pathlib import Path

import typer

from chattune.cli.output import emit, out, progress, table
from chattune.errors import UserError
from chattune.schemas import (
    CatalogEntryPublic,
    ModelAliasPublic,
    ModelExportPublic,
    ModelImportPublic,
    ModelList,
    ModelTagsPublic,
    ModelVersionDetail,
    ModelVersionPublic,
    UserModelImportPublic,
)
from chattune.workspace import Workspace, documents

app = typer.Typer(help="Catalog models and registered (fine-tuned) models.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("list")
def list_(json_: bool = JSON) -> None:
    """Catalog entries and registered model versions."""
    doc = documents.model_list(Workspace.from_env())
    emit(doc, json_, _render_models)


def _render_models(doc: ModelList) -> None:
    table(
        "catalog",
        ["name", "display name", "version", "parameters", "source", "weights"],
        [[e.name, e.display_name, e.version, f"{e.parameters / 1e6:.1f}M", e.source, e.weights] for e in doc.catalog],
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
    doc = documents.catalog_entry(ws, entry) if entry is not None else documents.model_version(ws, ref)
    if isinstance(doc, CatalogEntryPublic):
        emit(doc, json_, _render_entry)
    else:
        emit(doc, json_)


def _render_entry(doc: CatalogEntryPublic) -> None:
    def line(text: str) -> None:  # sources hold [brackets]: printed as they are, not as rich markup
        out.print(text, markup=False, highlight=False)

    line(f"{doc.name} ({doc.source}, version {doc.version}): {doc.description}")
    line(f"  id: {doc.id}")
    line(f"  weights: {doc.weights}" + (f", stored at {doc.path}" if doc.path else ""))
    for name, derived in doc.derived.items():
        value = derived.value
        if name == "chat_template":
            value = repr(str(value)[:60] + "...")
        elif name == "memory_estimate":
            value = f"{value['total_gb']} GB per process"
        elif name == "assistant_mask":
            value = " | ".join(repr(span) for span in value["trained_spans"])
        line(f"  {name}: {value}  [{derived.source}]")
    line(f"  tags: {doc.tags}")


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
def import_(
    name: str = typer.Argument(..., help="catalog name or local model directory; with --from, the name to give"),
    source: str = typer.Option(
        None, "--from", help="a model folder (Hugging Face layout), a hub id owner/name[@revision], or a .gguf file"
    ),
    chat_template: str = typer.Option(
        None, "--chat-template", help="with --from: a shipped template's name (chatml, smollm2, mistral, ...) or a file"
    ),
    lora_target_modules: str = typer.Option(
        None, "--lora-target-modules", help="with --from: all-linear (default), peft, or comma-separated module names"
    ),
    force: bool = typer.Option(False, "--force", help="with --from: point an existing NAME at different content"),
    json_: bool = JSON,
) -> None:
    """Materialize base weights into the workspace (once; stored by content hash); with --from, a model of your own.

    `models import NAME --from SOURCE` makes SOURCE the workspace's catalog model NAME: usable as `model: NAME` in a
    job, `quickstart --model NAME` and the SDK. Its chat template, loss mask, LoRA targets, context length and sizes
    are derived and checked at import (`models show NAME`).
    """
    ws = Workspace.from_env()
    if source is None:
        options = {"--chat-template": chat_template, "--lora-target-modules": lora_target_modules, "--force": force}
        given = [flag for flag, value in options.items() if value]
        if given:
            raise UserError(
                f"{', '.join(given)} applies to a model of your own: give --from SOURCE",
                remedy=f"e.g. `chattune models import {name} --from ./my-model-folder`.",
            )
        imported = ws.catalog.import_model(name)
        doc = ModelImportPublic(
            name=imported.name, path=str(imported.path), content_hash=imported.content_hash, reused=imported.reused
        )
        emit(doc, json_, lambda d: out.print(f"{d.name}: {d.path} ({'already imported' if d.reused else 'imported'})"))
        return
    result = ws.catalog.import_from(
        name,
        source,
        chat_template=chat_template,
        lora_target_modules=lora_target_modules,
        force=force,
        progress=lambda line: progress(f"{name}: {line}"),
    )
    entry = result.entry
    assert entry.path is not None and entry.content_hash is not None
    user_doc = UserModelImportPublic(
        name=entry.name,
        version=entry.version,
        path=entry.path,
        content_hash=entry.content_hash,
        reused=result.reused,
        replaced=result.replaced,
        weights=entry.source.model_dump(exclude_defaults=True),
        derived=documents.derived_values(entry),
    )
    emit(user_doc, json_, _render_import)


def _render_import(doc: UserModelImportPublic) -> None:
    def line(text: str) -> None:  # sources hold [brackets]: printed as they are, not as rich markup
        out.print(text, markup=False, highlight=False)

    state = "already imported" if doc.reused else f"replaced {doc.replaced[:12]}" if doc.replaced else "imported"
    line(f"{doc.name} (version {doc.version}): {state} from {doc.weights.get('kind')} -> {doc.path}")
    d = doc.derived
    line(f"  architecture   {d['architecture'].value} ({d['model_type'].value})")
    line(f"  parameters     {d['parameters'].value:,}  [{d['parameters'].source}]")
    line(f"  context        {d['context_length'].value}  [{d['context_length'].source}]")
    line(f"  chat template  [{d['chat_template'].source}]; training: {d['training_chat_template'].value}")
    spans = " | ".join(repr(s) for s in d["assistant_mask"].value["trained_spans"])
    line(f"  loss mask      {spans}")
    line(f"  LoRA targets   {d['lora_target_modules'].value}  [{d['lora_target_modules'].source}]")
    line(f"Use it as `model: {doc.name}` in a job, or `chattune quickstart --model {doc.name}`.")


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


@app.command("export")
def export(
    ref: str = typer.Argument(..., help="NAME, NAME:VERSION or NAME@ALIAS"),
    format_: str = typer.Option(..., "--format", help="hf (a merged model folder) or gguf (llama.cpp, Ollama)"),
    out_dir: Path = typer.Option(..., "--out", help="the folder to write (new or empty)"),
    dtype: str = typer.Option(None, "--dtype", help="f32, f16 or bf16; default: the base's (hf), f16 (gguf)"),
    quant: str = typer.Option(None, "--quant", help="q8_0 (gguf only): 8-bit blocks for the weight matrices"),
    json_: bool = JSON,
) -> None:
    """Export a registered version; a LoRA version is merged into its base first.

    `--format hf` writes a folder `AutoModelForCausalLM.from_pretrained` loads; `--format gguf` writes a GGUF file
    (tokenizer and chat template in its metadata) and an Ollama Modelfile beside it (`ollama create NAME -f
    OUT/Modelfile`).
    """
    doc = documents.model_export(Workspace.from_env(), ref, format_, out_dir, dtype=dtype, quant=quant)

    def render(d: ModelExportPublic) -> None:
        merged = " (LoRA merged into its base)" if d.merged else ""
        out.print(f"exported {d.model}{merged} as {d.format} {d.quant or d.dtype} to {d.out}", markup=False)
        for f in d.files:
            out.print(f"  {f.path}  {f.bytes / 2**20:.1f} MiB", markup=False)
        if d.format == "gguf":
            name = d.model.partition(":")[0]
            out.print(f"Ollama: ollama create {name} -f {Path(d.out) / 'Modelfile'}", markup=False)

    emit(doc, json_, render)
