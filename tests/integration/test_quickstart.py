"""The seed notebook end to end on the tiny model: real job process, real gateway and instance, real HTTP.

The quickstart run checked here is the session's (`trained_workspace`, run with --keep-endpoint); this test owns the
endpoint it kept, and deletes it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_quickstart_tiny_end_to_end(cli, home: Path, trained_workspace: dict) -> None:
    doc = trained_workspace["quickstart"]
    assert home == trained_workspace["home"]

    # the job and its steps
    assert doc["job"]["status"] == "succeeded"
    job = parse_json(cli("jobs", "show", doc["job"]["id"], "--json"))
    assert [s["name"] for s in job["steps"]] == ["validate", "model_import", "preprocess", "finetune", "evaluate"]
    assert all(s["status"] == "succeeded" and s["duration_s"] is not None for s in job["steps"])
    assert all(Path(s["log_path"]).stat().st_size > 0 for s in job["steps"])
    for which in ("base", "tuned"):
        assert {"test_loss", "test_perplexity", "exact_match", "rougeL"} <= set(doc["metrics"][which])

    # the registry row, with lineage and the adapter only (no copy of the base weights)
    with contextlib.closing(sqlite3.connect(home / "chattune.db")) as db:
        row = db.execute(
            "SELECT kind, path, base_model, base_model_hash, job_id, lineage FROM model_versions "
            "WHERE name=? AND version=?",
            (doc["model"]["name"], doc["model"]["version"]),
        ).fetchone()
    assert row is not None
    kind, path, base, base_hash, job_id, lineage = row
    assert (kind, base, job_id) == ("lora", "tiny-test", doc["job"]["id"])
    assert (Path(path) / "adapter_model.safetensors").exists()
    assert not (Path(path) / "model.safetensors").exists()
    assert json.loads(lineage)["base_model"]["content_hash"] == base_hash
    assert set(json.loads(lineage)["datasets"]) == {"train", "test", "generation_test"}

    # the /score answer came back through the endpoint
    assert isinstance(doc["response"], list) and len(doc["response"]) == 1
    assert doc["response"][0]["finish_reason"] in ("stop", "length")
    assert doc["response"][0]["usage"]["completion_tokens"] > 0

    endpoint = doc["endpoint"]["name"]
    keys = doc["endpoint"]["keys"]
    shown = parse_json(cli("endpoints", "show", endpoint, "--json"))
    scoring_uri, base_url = shown["scoring_uri"], shown["openai_base_url"]
    body = {"input_data": {"input_string": [[{"role": "user", "content": "Hi"}]], "parameters": {"max_new_tokens": 4}}}

    # key auth: no key and a wrong key are refused with 401; both real keys work
    assert httpx.post(scoring_uri, json=body, timeout=30).status_code == 401
    bad = httpx.post(scoring_uri, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
    assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
    for key in keys.values():
        r = httpx.post(scoring_uri, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.headers["azureml-model-deployment"] == "demo"
    # Azure's vLLM container shape: one flat conversation
    flat = {"input_data": {"input_string": [{"role": "user", "content": "Hi"}], "parameters": {"max_new_tokens": 3}}}
    r = httpx.post(scoring_uri, json=flat, headers={"Authorization": f"Bearer {keys['primary_key']}"}, timeout=60)
    assert r.status_code == 200 and len(r.json()) == 1

    # the official OpenAI client against /v1
    client = openai.OpenAI(base_url=base_url, api_key=keys["secondary_key"])
    completion = client.chat.completions.create(
        model=f"{doc['model']['name']}:{doc['model']['version']}",
        messages=[{"role": "user", "content": "Convert this date to ISO 8601: May 1, 2020"}],
        max_tokens=5,
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 5
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=base_url, api_key="wrong").chat.completions.create(
            model="x", messages=[{"role": "user", "content": "hi"}]
        )
    # a bad request gets a 4xx in OpenAI's shape, and the next request is served
    r = httpx.post(
        f"{base_url}/chat/completions",
        json={"messages": "nope"},
        headers={"Authorization": f"Bearer {keys['primary_key']}"},
        timeout=30,
    )
    assert r.status_code == 422 and "error" in r.json()
    assert client.chat.completions.create(
        model=None or completion.model, messages=[{"role": "user", "content": "a"}], max_tokens=2
    ).choices

    # the CLI's invoke with the seed's request file; deployments list and logs
    request_file = home / "datasets" / "sample_score.json"
    assert json.loads(request_file.read_text())["input_data"]["parameters"]["max_new_tokens"] == 200
    small = home / "small_score.json"
    small.write_text(json.dumps(body))
    invoked = parse_json(
        cli(
            "endpoints",
            "invoke",
            endpoint,
            "--request-file",
            str(small),
            "--key",
            keys["primary_key"],
            "--deployment",
            "demo",
            "--json",
        )
    )
    assert invoked[0]["usage"]["completion_tokens"] <= 4
    result = cli("endpoints", "invoke", endpoint, "--request-file", str(small), "--key", "wrong")
    assert result.returncode == 2 and "401" in result.stderr
    assert [d["name"] for d in parse_json(cli("deployments", "list", "--endpoint", endpoint, "--json"))] == ["demo"]
    assert "POST /score" in cli("deployments", "logs", "--endpoint", endpoint, "--name", "demo").stdout

    # regenerating a key refuses the old value at once; the other key keeps working
    new_primary = parse_json(cli("endpoints", "regenerate-keys", endpoint, "--key", "primary", "--json"))["primary_key"]
    auth = {"primary_old": keys["primary_key"], "primary_new": new_primary, "secondary": keys["secondary_key"]}
    codes = {
        k: httpx.post(scoring_uri, json=body, headers={"Authorization": f"Bearer {v}"}, timeout=60).status_code
        for k, v in auth.items()
    }
    assert codes == {"primary_old": 401, "primary_new": 200, "secondary": 200}

    # delete stops every process it started and frees the ports
    with contextlib.closing(sqlite3.connect(home / "chattune.db")) as db:
        pids_ports = db.execute("SELECT pid, port FROM endpoints WHERE name=?", (endpoint,)).fetchall()
        for (instances,) in db.execute("SELECT instances FROM deployments WHERE endpoint=?", (endpoint,)):
            pids_ports += [(i["pid"], i["port"]) for i in json.loads(instances)]
    assert len(pids_ports) == 2 and all(psutil.pid_exists(pid) for pid, _ in pids_ports)
    token_file = home / "endpoints" / endpoint / "instance.token"
    assert token_file.exists()
    result = cli("endpoints", "delete", endpoint)
    assert result.returncode == 0, result.stderr
    for pid, port in pids_ports:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert not _port_open(port)
    assert cli("endpoints", "show", endpoint, "--json").returncode == 2
    assert not token_file.exists()  # its instances' token goes with it; the logs stay
