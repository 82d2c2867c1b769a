"""`chattune compute`: this machine's devices and whether a model fits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from chattune import compute as compute_lib
from chattune.cli.output import emit, out, table
from chattune.schemas import ComputeCheckPublic, ComputePublic
from chattune.workspace import Workspace

app = typer.Typer(help="Devices on this machine and model fit checks.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("show")
def show(json_: bool = JSON) -> None:
    """GPUs (name, memory), CPU cores, RAM."""
    emit(ComputePublic.model_validate(compute_lib.detect().to_dict()), json_, _render_compute)


def _render_compute(info: ComputePublic) -> None:
    out.print(f"{info.size}: {info.cpu_cores} CPU cores, {info.ram_gb} GB RAM ({info.ram_available_gb} GB free)")
    table("GPUs", ["index", "name", "memory GB"], [[g.index, g.name, g.memory_gb] for g in info.gpus])


@app.command("check")
def check(
    model: str = typer.Option(..., "--model", help="catalog model name (built-in or imported)"),
    job_file: Path = typer.Option(None, "-f", "--file", help="job YAML: use its LoRA, precision, lengths"),
    json_: bool = JSON,
) -> None:
    """Allow lists from the catalog tags and a training memory estimate; exit 2 if it cannot run here."""
    entry = Workspace.from_env().catalog.get(model)
    info = compute_lib.detect()
    options: dict[str, Any] = dict(compute_lib.CHECK_DEFAULTS)
    if job_file:
        from chattune.pipeline.config import load_spec
        from chattune.pipeline.resolved import resolve

        resolved, _ = resolve(
            load_spec(job_file),
            entry.model_specific_defaults,
            has_cuda=info.has_cuda,
            devices=info.devices,
            cpu_bf16=compute_lib.cpu_has_bf16(),
        )
        options = resolved.memory_options()
    checked = compute_lib.check(entry, info, **options)
    result = ComputeCheckPublic.model_validate(checked.to_dict())
    emit(result, json_, _render_check)
    if not result.ok:
        raise compute_lib.unfit_error(checked)


def _render_check(result: ComputeCheckPublic) -> None:
    out.print(
        f"{result.model} on {result.compute}: {'OK' if result.ok else 'NOT OK'}; "
        f"~{result.estimated_memory_gb} GB needed, {result.available_memory_gb} GB available"
    )
    e = result.estimate
    if e is not None:
        zero = f"ZeRO-{e.zero_stage}" if e.zero_stage else "no ZeRO"
        out.print(
            f"  per process ({e.world_size} process(es), {zero}): weights {e.weights_gb}, gradients "
            f"{e.gradients_gb}, optimizer {e.optimizer_gb}, activations {e.activations_gb}, logits "
            f"{e.logits_gb} GB" + (f"; offloaded to RAM {e.offloaded_gb} GB" if e.offloaded_gb else "")
        )
    for m in result.messages:
        out.print(f"  - {m}")
