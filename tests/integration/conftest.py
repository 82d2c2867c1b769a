"""Fixtures for the tests that need a served model.

`trained_workspace` runs the tiny model's quickstart once per session (import, job, registration, an endpoint it
keeps); test_quickstart.py checks that run and owns its kept endpoint. Each test that asks for `served` works in
that workspace (see `home`) on an endpoint of its own, created with deployment "demo" at 100% as the quickstart
deploys it, and deleted after the test. The workspace's job and registered model are only read by these tests; what
each test breaks or changes belongs to its own endpoint (or model name).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chattune.processes import child_env
from chattune.schemas import DeploymentPublic, EndpointCreated, QuickstartResult
from chattune.studio.token import TOKEN_ENV
from tests.conftest import _stop_leftovers, exact, parse_json


@pytest.fixture(scope="session")
def trained_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("trained")
    home = root / "home"
    env = {**os.environ, "CHATTUNE_HOME": str(home), "CHATTUNE_CREDENTIALS_PATH": str(root / "credentials.json")}
    result = subprocess.run(
        [sys.executable, "-m", "chattune.cli.main", "quickstart", "--model", "tiny-test", "--keep-endpoint", "--json"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
    )
    doc = exact(QuickstartResult, parse_json(result))
    try:
        yield {
            "home": home,
            "credentials": root / "credentials.json",
            "model": f"{doc['model']['name']}:{doc['model']['version']}",
            "quickstart": doc,  # the run's --json answer; its endpoint is kept for test_quickstart.py
            "quickstart_run": result,
        }
    finally:
        _stop_leftovers(home)


@pytest.fixture
def served(cli: Any, trained_workspace: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """An endpoint of this test's own serving the trained model (deployment "demo" at 100%, the quickstart's
    request timeout), in the trained workspace; deleted after the test."""
    endpoint = f"served-{secrets.token_hex(4)}"
    keys = exact(EndpointCreated, parse_json(cli("endpoints", "create", endpoint, "--json")))["keys"]
    model = trained_workspace["model"]
    deploy = ("deployments", "create", "--endpoint", endpoint, "--name", "demo", "--model", model)
    exact(DeploymentPublic, parse_json(cli(*deploy, "--request-timeout-ms", "90000", "--json")))
    shown = parse_json(cli("endpoints", "traffic", endpoint, "demo=100", "--json"))
    yield {
        "endpoint": endpoint,
        "model": model,
        "uri": shown["scoring_uri"],
        "base": shown["scoring_uri"].removesuffix("/score"),
        "headers": {"Authorization": f"Bearer {keys['primary_key']}"},
    }
    cli("endpoints", "delete", endpoint)  # what it leaves running, the home fixture stops


def start_studio(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
    """`chattune studio ARGS` on workspace ``home``; the process and the lines it printed up to its URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "chattune.cli.main", "studio", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(CHATTUNE_HOME=str(home), **(env or {})),
    )
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.strip())
        if line.startswith("studio: http://"):
            return proc, lines
    raise AssertionError(f"studio did not start: {lines} {proc.stderr.read() if proc.stderr else ''}")


@pytest.fixture
def studio(home: Path) -> Iterator[dict[str, Any]]:
    token = "studio-test-token-" + os.urandom(8).hex()
    proc, lines = start_studio(home, env={TOKEN_ENV: token})
    url = lines[-1].split()[1].removesuffix("/api/v1/")
    try:
        yield {"url": url, "auth": {"Authorization": f"Bearer {token}"}, "lines": lines}
    finally:
        proc.terminate()
        proc.wait(10)
