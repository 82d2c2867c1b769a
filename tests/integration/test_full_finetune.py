"""Azure's default is full fine-tuning (apply_lora false): job -> register -> deploy -> score, via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def test_full_finetune_registers_a_whole_model_and_serves_it(cli, tmp_path: Path) -> None:
    parse_json(cli("data", "demo", "--out", str(tmp_path / "data"), "--rows", "12", "--json"))
    job_file = tmp_path / "job.yaml"
    job_file.write_text(
        "model: tiny-test\ndata:\n  train: data/train_sft.jsonl\n  test: data/test_sft.jsonl\n"
        "training:\n  per_device_train_batch_size: 4\n  max_seq_length: 128\nevaluation:\n  max_rows: 4\n"
    )
    job = parse_json(cli("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=240))
    assert job["status"] == "succeeded" and "nolora" in job["display_name"]
    mv = parse_json(cli("models", "register", "--job", job["id"], "--name", "tiny-full", "--version", "1", "--json"))
    assert mv["kind"] == "full" and (Path(mv["path"]) / "model.safetensors").exists()
    assert mv["lineage"]["parameters"]["apply_lora"] is False
    # the same version twice is a conflict, reported as a user error
    again = cli("models", "register", "--job", job["id"], "--name", "tiny-full", "--version", "1")
    assert again.returncode == 2 and "already exists" in again.stderr
    shown = parse_json(cli("models", "show", "tiny-full:1", "--json"))
    assert shown["job_id"] == job["id"]

    ep = parse_json(cli("endpoints", "create", "full-ep", "--json"))
    try:
        parse_json(
            cli(
                "deployments",
                "create",
                "--endpoint",
                "full-ep",
                "--name",
                "blue",
                "--model",
                "tiny-full:1",
                "--json",
                timeout=240,
            )
        )
        # no traffic yet: the gateway says so, and the header still reaches the deployment
        body = {
            "input_data": {"input_string": [[{"role": "user", "content": "Hi"}]], "parameters": {"max_new_tokens": 3}}
        }
        auth = {"Authorization": f"Bearer {ep['keys']['primary_key']}"}
        r = httpx.post(ep["scoring_uri"], json=body, headers=auth, timeout=60)
        assert r.status_code == 503 and r.json()["error"]["code"] == "no_traffic"
        r = httpx.post(ep["scoring_uri"], json=body, headers={**auth, "azureml-model-deployment": "blue"}, timeout=60)
        assert r.status_code == 200, r.text
        bad = cli("endpoints", "traffic", "full-ep", "blue=60")
        assert bad.returncode == 2 and "sum to 0 or 100" in bad.stderr
        parse_json(cli("endpoints", "traffic", "full-ep", "blue=100", "--json"))
        r = httpx.post(ep["scoring_uri"], json=body, headers=auth, timeout=60)
        assert r.status_code == 200 and json.loads(r.text)[0]["usage"]["completion_tokens"] <= 3
        # a deployment that still takes traffic cannot be deleted
        busy = cli("deployments", "delete", "--endpoint", "full-ep", "--name", "blue")
        assert busy.returncode == 2 and "traffic" in busy.stderr
    finally:
        assert cli("endpoints", "delete", "full-ep").returncode == 0
