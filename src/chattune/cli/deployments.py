"""`chattune deployments`: serve a registered model version behind an endpoint."""

from __future__ import annotations

import typer

from chattune.cli.output import emit_json, out, table
from chattune.workspace import Workspace

app = typer.Typer(help="Deployments of registered models behind an endpoint.", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("create")
def create(
    endpoint: str = typer.Option(..., "--endpoint"),
    name: str = typer.Option(..., "--name"),
    model: str = typer.Option(..., "--model", help="registered NAME:VERSION"),
    instances: int = typer.Option(1, "--instances"),
    request_timeout_ms: int = typer.Option(5000, "--request-timeout-ms"),
    max_concurrent: int = typer.Option(1, "--max-concurrent"),
    json_: bool = JSON,
) -> None:
    """Start an instance serving the model; returns when it is loaded and ready."""
    dep = Workspace().endpoints.deploy(
        endpoint,
        name,
        model,
        instance_count=instances,
        request_timeout_ms=request_timeout_ms,
        max_concurrent=max_concurrent,
    )
    if json_:
        emit_json(dep.to_dict())
    else:
        out.print(f"deployment {name} on {endpoint}: {dep.state} ({dep.model_name}:{dep.model_version})")


@app.command("list")
def list_(endpoint: str = typer.Option(..., "--endpoint"), json_: bool = JSON) -> None:
    deps = Workspace().endpoints.list_deployments(endpoint)
    if json_:
        emit_json([d.to_dict() for d in deps])
    else:
        table(
            "deployments",
            ["name", "state", "model", "port"],
            [[d.name, d.state, f"{d.model_name}:{d.model_version}", d.port] for d in deps],
        )


@app.command("logs")
def logs(
    endpoint: str = typer.Option(..., "--endpoint"),
    name: str = typer.Option(..., "--name"),
    lines: int = typer.Option(50, "--lines"),
) -> None:
    out.print(Workspace().endpoints.logs(endpoint, name, lines), markup=False, highlight=False)


@app.command("delete")
def delete(endpoint: str = typer.Option(..., "--endpoint"), name: str = typer.Option(..., "--name")) -> None:
    Workspace().endpoints.delete_deployment(endpoint, name)
    out.print(f"deleted deployment {name} from {endpoint}")
