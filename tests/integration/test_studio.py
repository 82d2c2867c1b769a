"""The studio's REST control plane as a user runs it: `chattune studio` in its own process on loopback, a job
started through `/api/v1/jobs` from the same JSON a job file holds, its events followed live over server-sent events
until it ends, and the answers equal to what the CLI prints with --json. The token: made and shown once on first
start, stored hashed; a non-loopback bind is refused until a token exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from chattune.processes import child_env
from chattune.studio.token import TOKEN_ENV, TOKEN_FILE
from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def _start(home: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], list[str]]:
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
    proc, lines = _start(home, env={TOKEN_ENV: token})
    url = lines[-1].split()[1].removesuffix("/api/v1/")
    try:
        yield {"url": url, "auth": {"Authorization": f"Bearer {token}"}, "lines": lines}
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_job_started_over_rest_streams_its_events_live_and_reads_as_the_cli_does(
    cli: Any, studio: dict[str, Any], tmp_path: Path
) -> None:
    from chattune.data import demo

    url, auth = studio["url"], studio["auth"]
    assert not any("token" in line for line in studio["lines"])  # set by the environment: nothing to show
    paths = demo.write(tmp_path / "data", rows=24)
    spec = {
        "model": "tiny-test",
        "experiment_name": "studio",
        "data": {"train": str(paths["train_sft"]), "test": str(paths["test_sft"])},
        "training": {"per_device_train_batch_size": 4, "max_seq_length": 96, "logging_steps": 1},
        "optimization": {"apply_lora": True, "lora_r": 4},
        "evaluation": {"max_rows": 2, "max_new_tokens": 4},
    }
    created = httpx.post(f"{url}/api/v1/jobs", json=spec, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    events = []
    with httpx.stream("GET", f"{url}/api/v1/jobs/{job_id}/events", headers=auth, timeout=300) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert {e["object"] for e in events} == {"fine_tuning.job.event"}
    assert len({e["id"] for e in events}) == len(events)  # each event once
    assert any(e["type"] == "metrics" and "loss" in e["data"] for e in events)  # the live training curve

    shown = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()
    assert shown["status"] == "succeeded"
    assert shown == parse_json(cli("jobs", "show", job_id, "--json"))  # one shape: the CLI's
    assert [e["id"] for e in shown["events"]] == [e["id"] for e in events]
    listed = httpx.get(f"{url}/api/v1/jobs", headers=auth, timeout=30).json()
    assert listed == parse_json(cli("jobs", "list", "--json"))
    assert httpx.get(f"{url}/api/v1/jobs", timeout=30).status_code == 401


def test_the_token_is_made_once_stored_hashed_and_guards_a_non_loopback_bind(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    refused = subprocess.run(
        [sys.executable, "-m", "chattune.cli.main", "studio", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**env, "CHATTUNE_HOME": str(home)},
    )  # fmt: skip
    assert refused.returncode == 2 and "no studio token is set up" in refused.stderr

    proc, lines = _start(home)
    try:
        shown = [line for line in lines if "studio token" in line]
        assert len(shown) == 1
        token = shown[0].rsplit(" ", 1)[1]
        url = lines[-1].split()[1].removesuffix("/api/v1/")
        assert token not in (home / TOKEN_FILE).read_text()
        assert httpx.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
    again, lines = _start(home)  # the second start shows no token
    again.terminate()
    again.wait(10)
    assert not any("studio token" in line for line in lines)
