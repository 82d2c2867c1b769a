"""`chattune compute`: this machine's devices, whether a model fits, and the workspace's compute targets (Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from chattune import compute as compute_lib
from chattune.cli.output import emit, out, table
from chattune.schemas import (
    ComputeCheckPublic,
    ComputePublic,
    ComputeTargetList,
    ComputeTargetPublic,
    ComputeTargetStatus,
    ComputeTargetStopped,
)
from chattune.workspace import Workspace

app = typer.Typer(
    help="Devices on this machine, model fit checks, and compute targets (local, Ray clusters).", no_args_is_help=True
)
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
    load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="estimate QLoRA: 4-bit NF4 frozen weights"),
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
    options["load_in_4bit"] = options["load_in_4bit"] or load_in_4bit
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


@app.command("list")
def list_(json_: bool = JSON) -> None:
    """Compute targets (``local`` first) with their nodes, CPUs, GPUs and memory as Ray reports them now."""
    statuses = Workspace.from_env().compute.targets.statuses()
    emit(ComputeTargetList(data=[ComputeTargetStatus.model_validate(s.to_dict()) for s in statuses]), json_, _render)


def _render(doc: ComputeTargetList) -> None:
    table(
        "compute targets",
        ["name", "kind", "address", "nodes", "CPUs", "GPUs", "memory GB", "state"],
        [
            [
                t.name,
                t.kind,
                t.address or "this machine",
                sum(n.alive for n in t.nodes),
                f"{t.cpus:g}",
                f"{t.gpus:g}",
                t.memory_gb,
                ("started here" if t.managed else "up") if t.reachable else f"unreachable: {t.error}",
            ]
            for t in doc.data
        ],
    )
    for t in doc.data:
        if t.kind == "ray" and t.nodes:
            table(
                f"{t.name}: nodes (Ray {t.ray_version})",
                ["node", "address", "head", "alive", "CPUs", "GPUs", "memory GB", "object store GB"],
                [
                    [
                        n.node_id[:12],
                        n.address,
                        n.is_head,
                        n.alive,
                        f"{n.cpus:g}",
                        f"{n.gpus:g}",
                        n.memory_gb,
                        n.object_store_gb,
                    ]
                    for n in t.nodes
                ],
            )


@app.command("add")
def add(
    name: str,
    ray_address: str = typer.Option(
        ..., "--ray-address", help="auto, ray://HOST:PORT (Ray Client) or a head's GCS address HOST:PORT"
    ),
    serve_port: int = typer.Option(None, "--serve-port", help="its Ray Serve HTTP proxy's port on the head [8000]"),
    json_: bool = JSON,
) -> None:
    """Record an existing Ray cluster as compute target NAME (jobs use it with `compute: NAME`)."""
    target = Workspace.from_env().compute.targets.add(name, ray_address, serve_port)
    emit(ComputeTargetPublic.model_validate(target.to_dict()), json_, lambda t: out.print(f"{t.name}: {t.address}"))


@app.command("start-ray")
def start_ray(
    name: str,
    workers: int = typer.Option(1, "--workers", help="worker nodes beside the head, each its own raylet"),
    cpus_per_node: int = typer.Option(1, "--cpus-per-node", help="CPUs each node offers Ray (--num-cpus)"),
    object_store_mb: int = typer.Option(256, "--object-store-mb", help="each node's object store"),
    json_: bool = JSON,
) -> None:
    """Start a local Ray cluster (a head and N worker nodes on this machine) as compute target NAME."""
    targets = Workspace.from_env().compute.targets
    target = targets.start_ray(name, workers=workers, cpus_per_node=cpus_per_node, object_store_mb=object_store_mb)
    emit(
        ComputeTargetPublic.model_validate(target.to_dict()),
        json_,
        lambda t: out.print(
            f"{t.name}: Ray head at {t.address} with {workers} worker node(s); stop: chattune compute stop-ray {t.name}"
        ),
    )


@app.command("stop-ray")
def stop_ray(name: str, json_: bool = JSON) -> None:
    """Stop the local Ray cluster NAME (exactly the processes `start-ray` started) and forget the target."""
    targets = Workspace.from_env().compute.targets
    cluster = targets.get(name).local_cluster
    killed = targets.stop_ray(name)
    doc = ComputeTargetStopped(name=name, stopped_pids=cluster.pids if cluster else [], killed_pids=killed)
    emit(doc, json_, lambda d: out.print(f"{d.name}: stopped"))


@app.command("remove")
def remove(name: str) -> None:
    """Forget compute target NAME (a cluster added by address; `stop-ray` stops one started here)."""
    Workspace.from_env().compute.targets.remove(name)
    out.print(f"{name}: removed")
