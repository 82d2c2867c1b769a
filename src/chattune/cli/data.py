"""`chattune data`: download, import, demo, validate, show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel

from chattune.cli.output import emit, out, table
from chattune.data.chat_formats import ChatFormat
from chattune.entities import Task
from chattune.errors import DataError, UserError
from chattune.schemas import (
    DataDemo,
    DataDownload,
    DataFileReport,
    DataImport,
    DataImported,
    DataPreview,
    DataValidation,
)
from chattune.workspace import Workspace, documents

app = typer.Typer(help="Chat datasets: download, import, demo, validate, show.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")
FORMAT = typer.Option(
    None,
    "--format",
    case_sensitive=False,
    help="the chat format of the rows (default: detected from their keys): openai (messages), ultrachat (prompt, "
    "prompt_id, messages), sharegpt (conversations), alpaca (instruction, input, output), dolly (instruction, "
    "context, response), prompt_completion (prompt, completion)",
)


@app.command("download")
def download(
    dataset: str = typer.Argument(..., help="hub id (e.g. HuggingFaceH4/ultrachat_200k) or a local dataset directory"),
    out_dir: Path = typer.Option(..., "--out", help="directory for SPLIT.jsonl files"),
    percent: int = typer.Option(5, "--percent", help="the FIRST P percent of each split (the seed's semantics)"),
    split: list[str] = typer.Option(None, "--split", help="only these splits (repeat the flag)"),
    json_: bool = JSON,
) -> None:
    """Download the first P% of every split with Hugging Face datasets."""
    result = Workspace.from_env().data.download(dataset, out_dir, percent=percent, splits=split or None)
    doc = DataDownload.model_validate({"dataset": dataset, "percent": percent, "splits": result})
    emit(doc, json_, _render_download)


def _render_download(doc: DataDownload) -> None:
    for name, info in doc.splits.items():
        out.print(f"{name}: {info.rows} rows -> {info.path}", markup=False)


@app.command("import")
def import_(
    files: list[Path] = typer.Argument(..., help="jsonl, json (array), parquet or csv (list columns as JSON)"),
    out_dir: Path = typer.Option(..., "--out", help="directory for the canonical STEM.jsonl files"),
    fmt: ChatFormat = FORMAT,
    json_: bool = JSON,
) -> None:
    """Validate local files and write them as canonical JSON Lines (messages), keeping every other column."""
    ws = Workspace.from_env()
    done = []
    for f in files:
        target, report = ws.data.import_file(f, out_dir, fmt)
        done.append(
            DataImported(
                source=str(f), path=str(target), format=report.format, rows=report.rows, warnings=len(report.warnings)
            )
        )
    emit(DataImport(files=done), json_, _render_import)


def _render_import(doc: DataImport) -> None:
    for d in doc.files:
        out.print(f"{d.source} ({d.format}) -> {d.path} ({d.rows} rows, {d.warnings} warnings)", markup=False)


@app.command("demo")
def demo_(
    out_dir: Path = typer.Option(..., "--out", help="directory for the four split files"),
    rows: int = typer.Option(400, "--rows", min=10, help="rows in train_sft (the other splits scale with it)"),
    seed: int = typer.Option(0, "--seed"),
    task: Task = typer.Option(
        Task.CHAT_COMPLETION, "--task", help="preference: the same task as pairs (train_prefs, test_prefs)"
    ),
    json_: bool = JSON,
) -> None:
    """Write the built-in demo dataset (ultrachat_200k schema and split names; UltraFeedback's for preference)."""
    paths = Workspace.from_env().data.demo(out_dir, rows=rows, seed=seed, task=task)
    emit(DataDemo({split: str(p) for split, p in paths.items()}), json_, _render_demo)


def _render_demo(doc: DataDemo) -> None:
    for split, path in doc.root.items():
        out.print(f"{split}: {path}", markup=False)


def _stats_rows(stats: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key in ("turns", "characters", "tokens"):
        d = stats.get(key)
        if d:
            rows.append([key, d["min"], d["median"], d["p95"], d["max"]])
    return rows


@app.command("validate")
def validate(
    files: list[Path] = typer.Argument(..., help="jsonl, json, parquet or csv files"),
    model: str = typer.Option(None, "--model", help="count tokens with this model's chat template"),
    max_seq_length: int = typer.Option(None, "--max-seq-length", help="with --model: the truncation length"),
    min_rows: int = typer.Option(1, "--min-rows", help="least number of usable rows (a training file needs 10)"),
    fmt: ChatFormat = FORMAT,
    generation: bool = typer.Option(
        False, "--generation", help="generation test files: rows are prompts, a reference answer is optional"
    ),
    task: Task = typer.Option(
        Task.CHAT_COMPLETION, "--task", help="preference: rows are prompt, chosen, rejected (or OpenAI's DPO rows)"
    ),
    json_: bool = JSON,
) -> None:
    """Check files and report every error at once (file:line, field, code); exit 2 on any error."""
    if task == Task.PREFERENCE and (fmt is not None or generation):
        raise UserError(
            "--format and --generation apply to chat data; --task preference reads preference pairs",
            remedy="Drop them: each pair's format is detected from its keys.",
        )
    doc = documents.data_validation(
        Workspace.from_env(), files, model=model, max_seq_length=max_seq_length, min_rows=min_rows, fmt=fmt,
        generation=generation, task=task.value,
    )  # fmt: skip
    valid = doc.valid
    reports = doc.files
    emit(doc, json_, _render_validation)
    if not valid:
        raise DataError(
            f"{sum(len(r.errors) for r in reports)} error(s) in {sum(not r.valid for r in reports)} file(s)"
        )


def _render_validation(doc: DataValidation) -> None:
    for r in doc.files:
        _print_report(r)


def _print_report(r: DataFileReport) -> None:
    status = "valid" if r.valid else f"{len(r.errors)} error(s)"
    out.print(
        f"{r.path}: {r.format} ({r.format_source}), {r.rows} rows, {status}, {len(r.warnings)} warning(s)",
        markup=False,
    )
    for e in r.errors:
        out.print(f"  {r.path}:{e.line}: {e.field or '-'}: {e.message} [{e.code}]", markup=False)
    for w in r.warnings:
        out.print(f"  warning {r.path}:{w.line}: {w.field or '-'}: {w.message} [{w.code}]", markup=False)


@app.command("show")
def show(
    file: Path = typer.Argument(..., help="a data file"),
    rows: int = typer.Option(3, "--rows", min=0, help="conversations to render"),
    model: str = typer.Option(None, "--model", help="also count tokens with this model's chat template"),
    fmt: ChatFormat = FORMAT,
    json_: bool = JSON,
) -> None:
    """Render a few conversations, as messages, and the file's statistics (the same numbers with --json)."""
    doc = documents.data_preview(Workspace.from_env(), file, rows=rows, model=model, fmt=fmt)
    emit(doc, json_, _render_preview)


def _render_preview(doc: DataPreview) -> None:
    for item in doc.rows:
        messages = item.messages
        if messages is None:
            out.print(Panel(str(item.error or item.row)[:500], title=f"line {item.line} (unreadable)"))
            continue
        body = "\n\n".join(
            f"[bold]{m.get('role', '?')}[/]: {_clip(str(m.get('content', '')))}" if isinstance(m, dict) else str(m)
            for m in messages
        )
        out.print(Panel(body, title=f"line {item.line}", title_align="left"))
    s = doc.stats
    out.print(
        f"{doc.path}: {doc.format} ({doc.format_source}), {s['rows']} rows, {s['usable_rows']} usable, "
        f"{s['dropped_rows']} to drop, "
        f"{doc.errors} error(s), {doc.warnings} warning(s); roles {s['roles']}",
        markup=False,
    )
    table("per row", ["", "min", "median", "p95", "max"], _stats_rows(s))


def _clip(text: str, limit: int = 600) -> str:
    from rich.markup import escape

    return escape(text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)")
