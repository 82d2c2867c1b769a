"""Key auth and key hygiene on a live endpoint (the tiny model as the quickstart serves it, real gateway and instance
processes, in the session's trained workspace):

- every route of the gateway's route table, read from the app itself (so a route added later is walked too), with
  every method, answers 401 without a key and with a wrong one; only /health/live and /health/ready are public;
- instances listen on 127.0.0.1 only, and since every local user can reach loopback, every route of theirs but the
  probes needs the gateway's own token (a file of mode 0600 in the endpoint's folder, handed over in the
  instance's environment, never on a command line); the endpoint's keys do not open them;
- regenerating one key refuses its old value from the next request on, while the other key keeps working throughout;
- no key value (first, regenerated, revoked) is written anywhere under CHATTUNE_HOME (SQLite bytes, MLflow, job,
  gateway and instance logs) nor in any CLI stderr, after a run that creates, calls, regenerates and fails requests.
  The client's credentials file (CHATTUNE_CREDENTIALS_PATH, outside the workspace) is the one intended copy.

How keys are generated (secrets), stored (SHA-256) and compared (hmac.compare_digest over every hash) is checked at
unit level in tests/unit/test_endpoint_keys.py. 401 with no key or a wrong key on /score and through the OpenAI
client, and regeneration of the primary key (old 401, new and secondary 200), are in test_quickstart.py.

Reproduce: .venv/bin/python -m pytest -m integration tests/integration/test_security.py -s
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import psutil
import pytest

from chattune.serving.auth import PUBLIC_PATHS
from tests.conftest import parse_json

pytestmark = pytest.mark.integration

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# Paths no route has, some of them dressed up as a public one: refused as any other path without a key.
ODD_PATHS = (
    "/",
    "/nope",
    "/metrics/",
    "/METRICS",
    "//metrics",
    "/health",
    "/health/live/../../metrics",
    "/health/live/%2e%2e/%2e%2e/metrics",
    "/%68ealth/ready/../../score",
    "/v1/models/../../docs",
)
# Commands whose stdout shows keys on purpose (to the user who asked for them); their stderr is still checked.
SHOW_KEYS = {"quickstart", "create", "keys", "regenerate-keys"}


@pytest.fixture(scope="module")
def live(trained_workspace: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """An endpoint of this module's own in the session's trained workspace, serving its model as the quickstart
    deploys it ("demo" at 100%); every CLI call's output is recorded, the session's quickstart run among them."""
    home, credentials = trained_workspace["home"], tmp_path_factory.mktemp("security") / "credentials.json"
    quickstart = trained_workspace["quickstart_run"]
    calls: list[tuple[tuple[str, ...], subprocess.CompletedProcess[str]]] = [(tuple(quickstart.args[3:]), quickstart)]

    def cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "chattune.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )
        calls.append((args, result))
        return result

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CHATTUNE_HOME", str(home))
        mp.setenv("CHATTUNE_CREDENTIALS_PATH", str(credentials))
        endpoint = f"security-{secrets.token_hex(4)}"
        try:
            keys = parse_json(cli("endpoints", "create", endpoint, "--json"))["keys"]
            deploy = ("deployments", "create", "--endpoint", endpoint, "--name", "demo")
            parse_json(cli(*deploy, "--model", trained_workspace["model"], "--json"))
            shown = parse_json(cli("endpoints", "traffic", endpoint, "demo=100", "--json"))
            instance = parse_json(cli("deployments", "list", "--endpoint", endpoint, "--json"))[0]["instances"][0]
            with contextlib.closing(sqlite3.connect(home / "chattune.db")) as db:
                (gateway_pid,) = db.execute("SELECT pid FROM endpoints WHERE name = ?", (endpoint,)).fetchone()
            yield {
                "cli": cli,
                "calls": calls,
                "home": home,
                "credentials": credentials,
                "endpoint": endpoint,
                "gateway": shown["scoring_uri"].removesuffix("/score"),
                "gateway_pid": gateway_pid,
                "instance": f"http://127.0.0.1:{instance['port']}",
                "instance_pid": instance["pid"],
                # by key type ("primary"), as the database stores their hashes; --json says "primary_key"
                "keys": {t.removesuffix("_key"): k for t, k in keys.items()},
                "all_keys": {
                    **{f"first {t}": k for t, k in keys.items()},
                    **{f"quickstart {t}": k for t, k in trained_workspace["quickstart"]["endpoint"]["keys"].items()},
                },
            }
        finally:
            cli("endpoints", "delete", endpoint)


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _assert_401(r: httpx.Response, what: str) -> None:
    assert r.status_code == 401, f"{what}: {r.status_code} {r.text[:300]}"
    assert r.headers.get("www-authenticate") == "Bearer", what
    if r.request.method != "HEAD":
        assert r.json()["error"]["code"] == "invalid_api_key" and r.json()["error"]["type"] == "authentication_error"


def test_every_gateway_route_needs_a_key_but_the_health_probes(live: dict[str, Any]) -> None:
    from chattune.endpoints.gateway import create_gateway
    from chattune.settings import Settings

    # the route table of the gateway itself (built here only to be read; nothing is started)
    app = create_gateway(Settings(), live["endpoint"])
    table = {(route.path, method) for route in app.routes for method in getattr(route, "methods", None) or METHODS}
    paths = sorted({path for path, _ in table})
    assert {"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc", "/metrics", "/score", "/v1/models"} <= set(
        paths
    ) and {"/v1/chat/completions", *PUBLIC_PATHS} <= set(paths)
    assert {"/health/live", "/health/ready"} == PUBLIC_PATHS

    refused = 0
    wrong_keys: dict[str, dict[str, str]] = {"no key": {}, "wrong key": _bearer("wrong-key")}
    with httpx.Client(base_url=live["gateway"], timeout=30) as http:
        for path in [*paths, *ODD_PATHS]:
            for method in METHODS:
                for what, headers in wrong_keys.items():
                    r = http.request(method, path, headers=headers)
                    if path in PUBLIC_PATHS:  # GET answers; other methods are not allowed, but never 401
                        assert r.status_code == (200 if method == "GET" else 405), (path, method, what)
                    else:
                        _assert_401(r, f"{method} {path} with {what}")
                        refused += 1
        # the walk is not vacuous: with a key, every route of the table answers, and none with 401
        for path, method in sorted(table):
            r = http.request(method, path, headers=_bearer(live["keys"]["primary"]))
            assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code, r.text[:200])

        # keys presented the wrong way, on a route of the gateway's own and on a forwarded one
        primary = live["keys"]["primary"]
        presented = {
            "the stored hash of the key": _bearer(hashlib.sha256(primary.encode()).hexdigest()),
            "the key and one more character": _bearer(primary + "x"),
            "the key but its last character": _bearer(primary[:-1]),
            "the key under the Basic scheme": {"Authorization": f"Basic {primary}"},
            "the key without a scheme": {"Authorization": primary},
            "a bearer without a token": {"Authorization": "Bearer"},
            "the key in an api-key header": {"api-key": primary},
            "the key in a cookie": {"Cookie": f"key={primary}"},
        }
        for path in ("/metrics", "/v1/models"):
            for what, headers in presented.items():
                _assert_401(http.get(path, headers=headers), f"{path} with {what}")
            _assert_401(http.get(path, params={"api-key": primary, "key": primary}), f"{path} with the key in a query")
            assert http.get(path, headers={"Authorization": f"bearer {primary}"}).status_code == 200  # RFC 7235
    print(f"route table: {len(table)} (path, method) pairs on {len(paths)} paths; {refused} requests refused 401")


def walk_instance_routes(base: str, token: str, endpoint_key: str) -> int:
    """Every route of an instance's app (its route table, every method) at ``base``: 401 without the gateway's
    token (none, a wrong one, the endpoint's own key) but the health probes; with the token, none is 401 or 5xx.
    Returns the count of requests refused. Also walks a Ray-served deployment through Serve's proxy (test_ray.py).
    """
    import types

    from chattune.serving.app import create_app
    from chattune.serving.metrics import InstanceMetrics

    # Walked as the gateway's routes are, from the app's route table (an engine stand-in: the table is only read).
    stand_in = types.SimpleNamespace(metrics=InstanceMetrics())
    app = create_app(stand_in, token="unused")  # type: ignore[arg-type]
    table = {(route.path, method) for route in app.routes for method in getattr(route, "methods", None) or METHODS}
    paths = sorted({path for path, _ in table})
    assert {"/score", "/v1/chat/completions", "/v1/models", "/metrics", "/openapi.json", *PUBLIC_PATHS} <= set(paths)
    refused = 0
    with httpx.Client(base_url=base, timeout=30) as http:
        presented = {"no key": {}, "a wrong key": _bearer("wrong"), "the endpoint's own key": _bearer(endpoint_key)}
        for path in [*paths, *ODD_PATHS]:
            for method in METHODS:
                for what, headers in presented.items():
                    r = http.request(method, path, headers=headers)
                    if path in PUBLIC_PATHS:
                        assert r.status_code == (200 if method == "GET" else 405), (path, method, what)
                    else:
                        _assert_401(r, f"instance {method} {path} with {what}")
                        refused += 1
        for path, method in sorted(table):  # not vacuous: the gateway's token opens every route
            r = http.request(method, path, headers=_bearer(token))
            assert r.status_code != 401 and r.status_code < 500, (method, path, r.status_code, r.text[:200])
    return refused


def test_instances_listen_on_loopback_only_and_answer_only_their_gateway(live: dict[str, Any]) -> None:
    from chattune.serving.keys import INSTANCE_TOKEN_FILE

    # Loopback is open to every local user, so the instance's own routes need the gateway's token.
    token_file = live["home"] / "endpoints" / live["endpoint"] / INSTANCE_TOKEN_FILE
    token = token_file.read_text(encoding="utf-8")
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    refused = walk_instance_routes(live["instance"], token, live["keys"]["primary"])
    # the token reaches the instance in its environment (the owner's to read), never on a command line anyone can see
    for pid in (live["gateway_pid"], live["instance_pid"]):
        assert not any(token in arg for arg in psutil.Process(pid).cmdline())
    print(f"instance: {refused} requests without the gateway's token refused 401")

    for pid in (live["gateway_pid"], live["instance_pid"]):
        listening = [c for c in psutil.Process(pid).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}, listening
    port = int(live["instance"].rsplit(":", 1)[1])
    others = [
        a.address
        for addrs in psutil.net_if_addrs().values()
        for a in addrs
        if a.family == socket.AF_INET and not a.address.startswith("127.")
    ]
    for address in others:  # this machine's other addresses: nothing listens there
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((address, port)) != 0, f"instance port {port} open on {address}"
    print(f"listening on 127.0.0.1 only; instance port closed on {others or 'no other address'}")


def _hammer(url: str, key: str, stop: threading.Event, codes: list[int]) -> None:
    with httpx.Client(headers=_bearer(key), timeout=30) as http:
        while not stop.is_set():
            codes.append(http.get(url).status_code)


def _rotate(live: dict[str, Any], rotated: str, other: str) -> str:
    """Regenerate ``rotated`` while the ``other`` key is used without a pause; returns the new key."""
    metrics = f"{live['gateway']}/metrics"  # the gateway's own route: no instance capacity involved
    old = live["keys"][rotated]
    stop, codes = threading.Event(), []
    worker = threading.Thread(target=_hammer, args=(metrics, live["keys"][other], stop, codes))
    worker.start()
    try:
        result = live["cli"]("endpoints", "regenerate-keys", live["endpoint"], "--key", rotated, "--json")
        new = str(parse_json(result)[f"{rotated}_key"])
        # from the next request on, the old value is refused and the new one accepted
        _assert_401(httpx.get(metrics, headers=_bearer(old), timeout=30), f"the old {rotated} key")
        assert httpx.get(metrics, headers=_bearer(new), timeout=30).status_code == 200
    finally:
        stop.set()
        worker.join()
    assert len(codes) >= 5 and set(codes) == {200}, f"{other} key during the rotation: {codes}"
    print(f"regenerating {rotated}: {len(codes)} requests with the {other} key meanwhile, all 200")
    live["keys"][rotated] = new
    live["all_keys"][f"regenerated {rotated}"] = new
    return new


def test_regenerating_one_key_keeps_the_other_working_and_nothing_leaks(live: dict[str, Any]) -> None:
    cli, endpoint, gateway = live["cli"], live["endpoint"], live["gateway"]
    first = dict(live["keys"])
    _rotate(live, "primary", "secondary")
    _rotate(live, "secondary", "primary")
    for what, key in first.items():  # both first keys are now refused, on a forwarded route too
        _assert_401(httpx.get(f"{gateway}/v1/models", headers=_bearer(key), timeout=30), f"first {what}")
    for key in live["keys"].values():
        assert httpx.get(f"{gateway}/v1/models", headers=_bearer(key), timeout=60).status_code == 200

    # only hashes are stored: the workspace database has the SHA-256 of the current keys
    with contextlib.closing(sqlite3.connect(live["home"] / "chattune.db")) as db:
        stored = dict(db.execute("SELECT key_type, key_hash FROM endpoint_keys WHERE endpoint = ?", (endpoint,)))
    assert stored == {t: hashlib.sha256(k.encode()).hexdigest() for t, k in live["keys"].items()}

    # errors, with every key value in play: the CLI with a revoked key (by flag and by environment), an unknown
    # deployment, and requests the gateway and the instance refuse
    request = live["home"] / "request.json"
    messages = [[{"role": "user", "content": "Hi"}]]
    request.write_text(json.dumps({"input_data": {"input_string": messages, "parameters": {"max_new_tokens": 2}}}))
    invoke = ("endpoints", "invoke", endpoint, "--request-file", str(request))
    assert cli(*invoke, "--key", first["primary"]).returncode == 2
    assert cli(*invoke, env={"CHATTUNE_ENDPOINT_KEY": first["secondary"]}).returncode == 2
    assert cli(*invoke, "--deployment", "nope", "--key", live["keys"]["primary"]).returncode == 2
    parse_json(cli(*invoke, "--key", live["keys"]["secondary"], "--json"))
    for key in [*first.values(), *live["keys"].values()]:
        for path, body in (("/score", {"input_data": "x"}), ("/v1/chat/completions", {"messages": [], "x": key})):
            for base in (gateway, live["instance"]):
                r = httpx.post(f"{base}{path}", json=body, headers=_bearer(key), timeout=30)
                assert r.status_code in (401, 422) and key not in r.text, r.text
        r = httpx.get(f"{gateway}/metrics", headers={"Authorization": f"Basic {key}"}, timeout=30)
        assert r.status_code == 401 and key not in r.text
    assert parse_json(cli("endpoints", "keys", endpoint, "--json")) == {
        "primary_key": live["keys"]["primary"],
        "secondary_key": live["keys"]["secondary"],
    }

    # no key value anywhere in the workspace (every file, every byte) ...
    keys = live["all_keys"]  # this endpoint's first and regenerated keys, and the session quickstart's
    assert len(keys) == 6 and len(set(keys.values())) == 6
    credentials = live["credentials"]
    files = [p for p in live["home"].rglob("*") if p.is_file() and p.resolve() != credentials.resolve()]
    scanned = sum(p.stat().st_size for p in files)
    # Read by grep, in processes of their own: this process opening and closing the workspace's live SQLite files
    # would cancel the POSIX locks of any SQLite connection it holds on them (SQLite's "how to corrupt" list, 2.2).
    found = []
    for what, key in keys.items():
        hits = subprocess.run(["grep", "-rlaF", "-e", key, str(live["home"])], capture_output=True, text=True)
        assert hits.returncode in (0, 1), hits.stderr  # 1: no file holds it
        found += [f"{what} in {path}" for path in hits.stdout.split()]
    assert not found, found
    assert any(p.suffix == ".db" for p in files) and any("mlflow" in str(p) or "mlruns" in str(p) for p in files)
    assert any(p.name == "gateway.log" for p in files) and any(p.name == "demo.log" for p in files)
    # ... nor in any CLI stderr, nor in the stdout of a command that is not there to show keys
    outputs = 0
    for args, result in live["calls"]:
        streams = [result.stderr] if set(args) & SHOW_KEYS else [result.stderr, result.stdout]
        outputs += len(streams)
        found += [f"{what} in `chattune {' '.join(args)}`" for what, key in keys.items() for s in streams if key in s]
    assert not found, found

    # the one intended copy: the client's credentials file, outside the workspace, mode 0600, current keys only
    assert not credentials.resolve().is_relative_to(live["home"].resolve())
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    saved = credentials.read_text()
    assert all(k in saved for k in live["keys"].values()) and not any(k in saved for k in first.values())
    print(
        f"key scan: {len(keys)} key values, {len(files)} files ({scanned / 2**20:.1f} MiB) under CHATTUNE_HOME, "
        f"{outputs} CLI outputs of {len(live['calls'])} commands: none found"
    )
