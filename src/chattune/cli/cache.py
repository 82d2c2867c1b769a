"""`chattune cache`: the user-level model cache shared by every workspace (where it is, what it holds, clear it)."""

from __future__ import annotations

from dataclasses import asdict

import typer

from chattune.catalog import model_cache
from chattune.cli.output import emit, out, table
from chattune.schemas import CachePublic
from chattune.settings import Settings

app = typer.Typer(help="The user-level model cache, shared by every workspace.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("show")
def show(json_: bool = JSON) -> None:
    """Where the cache is ($CHATTUNE_CACHE_DIR, default ~/.cache/chattune) and what it holds."""
    emit(CachePublic.model_validate(asdict(model_cache.usage(Settings()))), json_, _render)


@app.command("clear")
def clear(json_: bool = JSON) -> None:
    """Empty the cache. Workspaces keep their own copies; the next import of a cached model fetches it again."""
    held = CachePublic.model_validate(asdict(model_cache.clear(Settings())))
    emit(held, json_, lambda doc: out.print(f"cleared {doc.path}: {len(doc.entries)} entries, {_mb(doc.bytes)}"))


def _render(doc: CachePublic) -> None:
    out.print(f"{doc.path}: {_mb(doc.bytes)}")
    table("cache", ["kind", "name", "size"], [[e.kind, e.name, _mb(e.bytes)] for e in doc.entries])


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"
