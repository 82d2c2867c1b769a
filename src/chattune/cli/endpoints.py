"""`chattune endpoints`: create, list, show, keys, traffic, mirror, invoke, up, delete."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from chattune.cli.output import emit, out, table
from chattune.errors import UserError
from chattune.schemas import EndpointCreated, EndpointKeys, EndpointList, EndpointPublic, ScoreAnswer
from chattune.workspace import Workspace, documents

app = typer.Typer(help="Online endpoints (key auth, traffic split).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("create")
def create(name: str, description: str = typer.Option("", "--description"), json_: bool = JSON) -> None:
    """Create an endpoint and start its gateway. Its two keys are printed once: only their hashes are stored."""
    ws = Workspace.from_env()
    ep, keys = ws.endpoints.create(name, description)
    doc = EndpointCreated.model_validate({**ws.endpoints.describe(ep), "keys": EndpointKeys.from_key_types(keys)})
    emit(doc, json_, _render_created)


def _render_created(doc: EndpointCreated) -> None:
    out.print(f"endpoint {doc.name}: {doc.scoring_uri}")
    out.print(f"primary key:   {doc.keys.primary_key}\nsecondary key: {doc.keys.secondary_key}")
    out.print(
        "The endpoint stores only their hashes; this client keeps a copy for `chattune endpoints keys` "
        "(CHATTUNE_CREDENTIALS_PATH)."
    )


def _render_keys(doc: EndpointKeys) -> None:
    for key_type, value in (("primary", doc.primary_key), ("secondary", doc.secondary_key)):
        if value is not None:
            out.print(f"{key_type} key: {value}")


@app.command("keys")
def keys(name: str, json_: bool = JSON) -> None:
    """The primary and secondary key, as this client received them (the server keeps only hashes)."""
    emit(EndpointKeys.from_key_types(Workspace.from_env().endpoints.keys(name)), json_, _render_keys)


@app.command("list")
def list_(json_: bool = JSON) -> None:
    """Endpoints, oldest first."""
    docs = documents.endpoint_list(Workspace.from_env())
    emit(
        docs,
        json_,
        lambda d: table(
            "endpoints",
            ["name", "state", "scoring uri", "traffic"],
            [[e.name, e.state, e.scoring_uri, e.traffic] for e in d.root],
        ),
    )


@app.command("show")
def show(name: str, json_: bool = JSON) -> None:
    """An endpoint: state, URIs, traffic and deployments."""
    emit(documents.endpoint(Workspace.from_env(), name), json_)


@app.command("regenerate-keys")
def regenerate_keys(
    name: str, key: str = typer.Option(..., "--key", help="primary or secondary"), json_: bool = JSON
) -> None:
    """Replace one key; the old value is refused from the next request on. Prints the pair as this client holds it."""
    ws = Workspace.from_env()
    ws.endpoints.regenerate_key(name, key)
    doc = EndpointKeys.from_key_types(ws.endpoints.keys(name))
    emit(doc, json_, lambda d: out.print(f"{key} key: {d.primary_key if key == 'primary' else d.secondary_key}"))


def _split(what: str, items: list[str]) -> dict[str, int]:
    parsed: dict[str, int] = {}
    for item in items:
        dep, sep, pct = item.partition("=")
        if not sep or not pct.strip().isdigit():
            raise UserError(f"{what} {item!r}: expected DEPLOYMENT=PERCENT, e.g. demo=100")
        parsed[dep] = int(pct)
    return parsed


@app.command("traffic")
def traffic(
    name: str, split: list[str] = typer.Argument(..., help="DEPLOYMENT=PERCENT ..."), json_: bool = JSON
) -> None:
    """Set the traffic split; it must sum to 0 or 100."""
    ws = Workspace.from_env()
    doc = EndpointPublic.model_validate(ws.endpoints.describe(ws.endpoints.set_traffic(name, _split("traffic", split))))
    emit(doc, json_, lambda d: out.print(f"{name} traffic: {d.traffic}"))


@app.command("mirror")
def mirror(
    name: str, split: list[str] = typer.Argument(..., help="DEPLOYMENT=PERCENT (0 stops it)"), json_: bool = JSON
) -> None:
    """Copy a share (at most 50%) of live traffic to a deployment at 0% traffic; its answers are discarded."""
    ws = Workspace.from_env()
    doc = EndpointPublic.model_validate(ws.endpoints.describe(ws.endpoints.set_mirror(name, _split("mirror", split))))
    emit(doc, json_, lambda d: out.print(f"{name} mirror traffic: {d.mirror_traffic or 'none'}"))


@app.command("up")
def up(json_: bool = JSON) -> None:
    """Start every endpoint whose gateway is not running (after a reboot or a crash), with its keys and routing."""
    ws = Workspace.from_env()
    docs = EndpointList([EndpointPublic.model_validate(ws.endpoints.describe(e)) for e in ws.endpoints.up()])
    emit(docs, json_, _render_started)


def _render_started(docs: EndpointList) -> None:
    for d in docs.root:
        out.print(f"started {d.name}: {d.scoring_uri}")
    if not docs.root:
        out.print("every endpoint's gateway is already running")


@app.command("invoke")
def invoke(
    name: str,
    request_file: Path = typer.Option(..., "--request-file", help="JSON body in Azure's /score shape"),
    deployment: str = typer.Option(None, "--deployment", help="target one deployment, bypassing traffic"),
    key: str = typer.Option(
        None, "--key", help="endpoint key (default: $CHATTUNE_ENDPOINT_KEY, else the primary key this client saved)"
    ),
    json_: bool = JSON,
) -> None:
    """POST the request file to the endpoint's /score and print the answer."""
    given = key or os.environ.get("CHATTUNE_ENDPOINT_KEY") or None
    emit(ScoreAnswer(Workspace.from_env().endpoints.invoke(name, request_file, given, deployment)), json_)


@app.command("delete")
def delete(name: str) -> None:
    """Stop every process of the endpoint and remove it."""
    Workspace.from_env().endpoints.delete(name)
    out.print(f"deleted endpoint {name}")
