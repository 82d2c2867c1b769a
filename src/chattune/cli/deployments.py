"""`chattune deployments`: serve a registered model version behind an endpoint."""

from __future__ import annotations

from typing import Any

import typer
from pydantic import BaseModel

from chattune.cli.output import emit, out, table
from chattune.endpoints.config import deployment_settings, parse_probe_option
from chattune.entities import LOCAL_COMPUTE, AutoscaleSettings, DeploymentSettings
from chattune.errors import UserError
from chattune.schemas import DeploymentList, DeploymentPublic
from chattune.workspace import Workspace, documents

app = typer.Typer(help="Deployments of registered models behind an endpoint.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


def _help(setting: str, model: type[BaseModel] = DeploymentSettings) -> str:
    """A flag's help: the setting's own description and default, as DeploymentSettings declares them."""
    info = model.model_fields[setting]
    default = "" if info.is_required() else f" [{info.default}]"
    return f"{setting}: {info.description}{default}"


@app.command("create")
def create(
    endpoint: str = typer.Option(..., "--endpoint"),
    name: str = typer.Option(..., "--name"),
    model: str = typer.Option(..., "--model", help="registered NAME:VERSION or NAME@ALIAS"),
    instances: int = typer.Option(None, "--instances", help=_help("instance_count")),
    request_timeout_ms: int = typer.Option(None, "--request-timeout-ms", help=_help("request_timeout_ms")),
    max_concurrent_requests_per_instance: int = typer.Option(
        None,
        "--max-concurrent-requests-per-instance",
        "--max-concurrent",
        help=_help("max_concurrent_requests_per_instance"),
    ),
    max_queue_wait_ms: int = typer.Option(None, "--max-queue-wait-ms", help=_help("max_queue_wait_ms")),
    max_queue_length: int = typer.Option(None, "--max-queue-length", help=_help("max_queue_length")),
    liveness: str = typer.Option(None, "--liveness-probe", help="e.g. period=2,failure_threshold=3 (Azure's fields)"),
    readiness: str = typer.Option(None, "--readiness-probe", help="e.g. period=2,failure_threshold=3"),
    max_batch_size: int = typer.Option(None, "--max-batch-size", help=_help("max_batch_size")),
    max_new_tokens_cap: int = typer.Option(None, "--max-new-tokens-cap", help=_help("max_new_tokens_cap")),
    prefix_cache_mb: int = typer.Option(None, "--prefix-cache-mb", help=_help("prefix_cache_mb")),
    extra_model: list[str] = typer.Option(
        [], "--extra-model", help="another LoRA version of the same base, served from the same loaded base"
    ),
    compute: str = typer.Option(
        LOCAL_COMPUTE, "--compute", help="where instances run: local, or a Ray target (replicas of a Ray Serve app)"
    ),
    share_base_with: str = typer.Option(
        None,
        "--share-base-with",
        metavar="DEPLOYMENT",
        help="serve this LoRA model from DEPLOYMENT's instances, over the base they have loaded (no instances of "
        "its own; one batch serves both)",
    ),
    min_instances: int = typer.Option(None, "--min-instances", help=_help("min_instances", AutoscaleSettings)),
    max_instances: int = typer.Option(
        None, "--max-instances", help=_help("max_instances", AutoscaleSettings) + " (turns autoscaling on)"
    ),
    target_requests: float = typer.Option(
        None, "--target-requests-per-instance", help=_help("target_requests_per_instance", AutoscaleSettings)
    ),
    cpus_per_instance: float = typer.Option(None, "--cpus-per-instance", help=_help("cpus_per_instance")),
    json_: bool = JSON,
) -> None:
    """Start the deployment's instances behind the endpoint's gateway; returns when they are loaded and ready.

    With --compute NAME (a Ray target) the instances are Ray Serve replicas, and --min-instances/--max-instances
    let Serve scale them with the load (aiming at --target-requests-per-instance requests in flight per replica).
    With --share-base-with DEPLOYMENT, a LoRA version of the same base is served from that deployment's instances:
    they load its adapter while serving, and N such deployments cost one base and N adapters of memory.
    """
    scale: dict[str, float | None] = {"min_instances": min_instances, "max_instances": max_instances}
    scale["target_requests_per_instance"] = target_requests
    if any(v is not None for v in scale.values()) and max_instances is None:
        raise UserError(
            "--min-instances and --target-requests-per-instance need --max-instances (the autoscaling ceiling)",
            remedy="e.g. --min-instances 1 --max-instances 4.",
        )
    settings = deployment_settings(
        {
            "instance_count": instances,
            "request_timeout_ms": request_timeout_ms,
            "max_concurrent_requests_per_instance": max_concurrent_requests_per_instance,
            "max_queue_wait_ms": max_queue_wait_ms,
            "max_queue_length": max_queue_length,
            "liveness_probe": parse_probe_option("--liveness-probe", liveness),
            "readiness_probe": parse_probe_option("--readiness-probe", readiness),
            "max_batch_size": max_batch_size,
            "max_new_tokens_cap": max_new_tokens_cap,
            "prefix_cache_mb": prefix_cache_mb,
            "autoscale": {k: v for k, v in scale.items() if v is not None} if max_instances is not None else None,
            "cpus_per_instance": cpus_per_instance,
        }
    )
    dep = Workspace.from_env().endpoints.deploy(
        endpoint, name, model, settings, extra_models=extra_model, compute=compute, share_base_with=share_base_with
    )
    emit(
        DeploymentPublic.from_deployment(dep),
        json_,
        lambda d: out.print(
            f"deployment {name} on {endpoint}: {d.state} ({d.model_name}:{d.model_version}, "
            f"{d.instance_count} instance(s))"
        ),
    )


@app.command("update")
def update(
    endpoint: str = typer.Option(..., "--endpoint"),
    name: str = typer.Option(..., "--name"),
    instances: int = typer.Option(..., "--instances", help="the new instance_count"),
    json_: bool = JSON,
) -> None:
    """Scale a deployment; returns when every instance is ready."""
    dep = Workspace.from_env().endpoints.scale(endpoint, name, instances)
    emit(
        DeploymentPublic.from_deployment(dep),
        json_,
        lambda d: out.print(f"deployment {name} on {endpoint}: {d.state}, {d.instance_count} instance(s)"),
    )


@app.command("list")
def list_(endpoint: str = typer.Option(..., "--endpoint"), json_: bool = JSON) -> None:
    """An endpoint's deployments with their instances."""
    emit(documents.deployment_list(Workspace.from_env(), endpoint), json_, _render_deployments)


def _instance(record: dict[str, Any]) -> str:
    if "on" in record:  # an instance of the deployment it shares (--share-base-with)
        return f"{record['state']}/on {record['on']}"
    return f"{record['state']}/{record.get('port')}/{record.get('restarts', 0)}"


def _render_deployments(deps: DeploymentList) -> None:
    table(
        "deployments",
        ["name", "state", "model", "instances (state/port/restarts)"],
        [
            [
                d.name,
                d.state,
                f"{d.model_name}:{d.model_version}",
                " ".join(_instance(i) for i in d.instances),
            ]
            for d in deps.root
        ],
    )


@app.command("logs")
def logs(
    endpoint: str = typer.Option(..., "--endpoint"),
    name: str = typer.Option(..., "--name"),
    lines: int = typer.Option(50, "--lines"),
) -> None:
    """Print the last lines of a deployment's log."""
    out.print(Workspace.from_env().endpoints.logs(endpoint, name, lines), markup=False, highlight=False)


@app.command("delete")
def delete(endpoint: str = typer.Option(..., "--endpoint"), name: str = typer.Option(..., "--name")) -> None:
    """Delete a deployment (it must receive no traffic)."""
    Workspace.from_env().endpoints.delete_deployment(endpoint, name)
    out.print(f"deleted deployment {name} from {endpoint}")
