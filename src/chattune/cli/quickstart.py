"""`chattune quickstart`: the seed notebook in one command."""

from __future__ import annotations

import time

import typer

from chattune import catalog
from chattune import quickstart as quickstart_lib
from chattune.cli.output import emit, progress, table
from chattune.entities import Task
from chattune.schemas import QuickstartResult
from chattune.workspace import Workspace


def quickstart(
    model: str = typer.Option(catalog.DEFAULT_MODEL, "--model", help="catalog model name (built-in or imported)"),
    dataset: str = typer.Option(
        "demo", "--dataset", help="'demo', a directory with ultrachat split files, or a dataset to download"
    ),
    percent: int = typer.Option(5, "--percent", help="with a dataset to download: the first P% of each split"),
    max_train_rows: int = typer.Option(None, "--max-train-rows", min=10),
    keep_endpoint: bool = typer.Option(False, "--keep-endpoint", help="leave the endpoint running"),
    task: Task = typer.Option(
        Task.CHAT_COMPLETION,
        "--task",
        help="preference: DPO on preference pairs (the demo's, or train_prefs/test_prefs)",
    ),
    json_: bool = typer.Option(False, "--json", help="Print one JSON document on stdout."),
) -> None:
    """Catalog -> compute check -> data -> job -> evaluate -> register -> endpoint -> invoke -> delete."""
    started = time.perf_counter()
    result = quickstart_lib.run(
        Workspace.from_env(),
        model=model,
        dataset=dataset,
        percent=percent,
        max_train_rows=max_train_rows,
        keep_endpoint=keep_endpoint,
        task=task,
        progress=progress,
    )
    result["wall_time_s"] = round(time.perf_counter() - started, 1)
    emit(QuickstartResult.model_validate(result), json_, _render)


def _render(result: QuickstartResult) -> None:
    base, tuned = result.metrics.base, result.metrics.tuned
    rows = [
        [k, f"{base.get(k, float('nan')):.4g}", f"{tuned.get(k, float('nan')):.4g}"]
        for k in sorted(set(base) | set(tuned))
    ]
    table("base vs fine-tuned", ["metric", "base", "fine-tuned"], rows)
    table(
        "result",
        ["", ""],
        [
            ["job", f"{result.job.id} ({result.job.status})"],
            ["model version", f"{result.model.name}:{result.model.version}"],
            ["endpoint", f"{result.endpoint.name} ({'deleted' if result.endpoint.deleted else 'running'})"],
            ["sample request", result.request.question],
            ["answer", result.response[0]["output"]],
            ["wall time", f"{result.wall_time_s} s"],
        ],
    )
