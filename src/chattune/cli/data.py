"""`chattune data`: the demo dataset and validation."""

from __future__ import annotations

from pathlib import Path

import typer

from chattune.cli.output import emit_json, out
from chattune.data import demo
from chattune.data.validate import validate_file
from chattune.errors import DataError

app = typer.Typer(help="Chat datasets: demo, validate.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("demo")
def demo_(
    out_dir: Path = typer.Option(..., "--out", help="directory for the four split files"),
    rows: int = typer.Option(400, "--rows", min=10, help="rows in train_sft (the other splits scale with it)"),
    seed: int = typer.Option(0, "--seed"),
    json_: bool = JSON,
) -> None:
    """Write the built-in demo dataset (ultrachat_200k schema and split names)."""
    paths = demo.write(out_dir, rows=rows, seed=seed)
    if json_:
        emit_json({split: str(p) for split, p in paths.items()})
    else:
        for split, p in paths.items():
            out.print(f"{split}: {p}")


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="jsonl, json, parquet or csv files"),
    min_rows: int = typer.Option(1, "--min-rows", help="least number of usable rows (a training file needs 10)"),
    json_: bool = JSON,
) -> None:
    """Check files and report every error at once (file:line, field, code); exit 2 on any error."""
    reports = [validate_file(f, min_rows=min_rows) for f in files]
    valid = all(r.valid for r in reports)
    if json_:
        emit_json({"files": [r.to_dict() for r in reports], "valid": valid})
    else:
        for r in reports:
            status = "valid" if r.valid else f"{len(r.errors)} error(s)"
            out.print(f"{r.path}: {r.rows} rows, {status}, {len(r.warnings)} warning(s)", markup=False)
            for e in r.errors:
                out.print(f"  {r.path}:{e.line}: {e.field or '-'}: {e.message} [{e.code}]", markup=False)
            for w in r.warnings:
                out.print(f"  warning {r.path}:{w.line}: {w.field or '-'}: {w.message} [{w.code}]", markup=False)
    if not valid:
        raise DataError(
            f"{sum(len(r.errors) for r in reports)} error(s) in {sum(not r.valid for r in reports)} file(s)"
        )
