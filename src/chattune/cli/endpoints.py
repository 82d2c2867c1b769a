"""`chattune endpoints`: create, list, show, keys, traffic, mirror, invoke, up, delete."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from chattune.cli.output import emit_json, out, table
from chattune.errors import UserError
from chattune.workspace import Workspace

app = typer.Typer(help="Online endpoints (key auth, traffic split).", no_args_is_help=True)
JSON = typer.Option(False, "--json", help="Print one JSON document on stdout.")


@app.command("create")
def create(name: str, description: str = typer.Option("", "--description"), json_: bool = JSON) -> None:
    """Create an endpoint and start its gateway. Its two keys are printed once: only their hashes are stored."""
    ws = Workspace()
    ep, keys = ws.endpoints.create(name, description)
    doc = {**ws.endpoints.describe(ep), "keys": keys}
    if json_:
        emit_json(doc)
    else:
        out.print(f"endpoint {name}: {doc['scoring_uri']}")
        out.print(f"primary key:   {keys['primary']}\nsecondary key: {keys['secondary']}")
        out.print(
            "The endpoint stores only their hashes; this client keeps a copy for `chattune endpoints keys` "
            "(CHATTUNE_CREDENTIALS_PATH)."
        )


@app.command("keys")
def keys(name: str, json_: bool = JSON) -> None:
    """The primary and secondary key, as this client received them (the server keeps only hashes)."""
    found = Workspace().endpoints.keys(name)
    if json_:
        emit_json({"primary_key": found.get("primary"), "secondary_key": found.get("secondary")})
    else:
        for key_type, value in found.items():
            out.print(f"{key_type} key: {value}")


@app.command("list")
def list_(json_: bool = JSON) -> None:
    ws = Workspace()
    docs = [ws.endpoints.describe(e) for e in ws.endpoints.list_endpoints()]
    if json_:
        emit_json(docs)
    else:
        table(
            "endpoints",
            ["name", "state", "scoring uri", "traffic"],
            [[d["name"], d["state"], d["scoring_uri"], d["traffic"]] for d in docs],
        )


@app.command("show")
def show(name: str, json_: bool = JSON) -> None:
    ws = Workspace()
    doc = ws.endpoints.describe(ws.endpoints.get(name))
    if json_:
        emit_json(doc)
    else:
        out.print_json(data=doc)


@app.command("regenerate-keys")
def regenerate_keys(
    name: str, key: str = typer.Option(..., "--key", help="primary or secondary"), json_: bool = JSON
) -> None:
    """Replace one key; the old value is refused from the next request on."""
    new = Workspace().endpoints.regenerate_key(name, key)
    if json_:
        emit_json({key: new})
    else:
        out.print(f"{key} key: {new}")


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
    ws = Workspace()
    doc = ws.endpoints.describe(ws.endpoints.set_traffic(name, _split("traffic", split)))
    if json_:
        emit_json(doc)
    else:
        out.print(f"{name} traffic: {doc['traffic']}")


@app.command("mirror")
def mirror(
    name: str, split: list[str] = typer.Argument(..., help="DEPLOYMENT=PERCENT (0 stops it)"), json_: bool = JSON
) -> None:
    """Copy a share (at most 50%) of live traffic to a deployment at 0% traffic; its answers are discarded."""
    ws = Workspace()
    doc = ws.endpoints.describe(ws.endpoints.set_mirror(name, _split("mirror", split)))
    if json_:
        emit_json(doc)
    else:
        out.print(f"{name} mirror traffic: {doc['mirror_traffic'] or 'none'}")


@app.command("up")
def up(json_: bool = JSON) -> None:
    """Start every endpoint whose gateway is not running (after a reboot or a crash), with its keys and routing."""
    ws = Workspace()
    started = ws.endpoints.up()
    docs = [ws.endpoints.describe(e) for e in started]
    if json_:
        emit_json(docs)
    else:
        for d in docs:
            out.print(f"started {d['name']}: {d['scoring_uri']}")
        if not docs:
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
    result = Workspace().endpoints.invoke(name, request_file, given, deployment)
    if json_:
        emit_json(result)
    else:
        out.print_json(data=result)


@app.command("delete")
def delete(name: str) -> None:
    """Stop every process of the endpoint and remove it."""
    Workspace().endpoints.delete(name)
    out.print(f"deleted endpoint {name}")
