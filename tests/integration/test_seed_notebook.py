"""The seed notebook, ported by changing its imports (examples/seed_notebook.py), runs to the end on tiny-test;
the CLI sees the same job, model and (deleted) endpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "seed_notebook.py"


def test_the_seed_notebook_runs_with_only_its_imports_changed(cli, home: Path, tmp_path: Path) -> None:
    work = tmp_path / "notebook"
    work.mkdir()
    env = {**os.environ, "CHATTUNE_HOME": str(home), "SEED_MODEL": "tiny-test", "SEED_ROWS": "40"}
    run = subprocess.run([sys.executable, str(EXAMPLE)], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = run.stdout
    assert "Using model name: tiny-test, version: 1, id: azureml://registries/azureml/models/tiny-test" in out
    assert "Number of GPU's in compute local-" in out
    # the endpoint answered (the raw response text, as Azure returns it) ...
    raw = out.split("raw response: \n", 1)[1].strip().splitlines()[0]
    answer = json.loads(raw)
    assert answer[0]["usage"]["completion_tokens"] > 0 and answer[0]["finish_reason"] in ("stop", "length")
    # ... the cloud-only names were explained once ...
    assert run.stderr.count("LocalOnlyWarning") == 1
    # ... and the CLI sees what the SDK did: the job, the registered model, no endpoint left
    jobs = parse_json(cli("jobs", "list", "--json"))["data"]
    assert len(jobs) == 1 and jobs[0]["status"] == "succeeded"
    assert jobs[0]["display_name"].startswith("tiny-test-ultrachat-bs0-cosine-ds2-lora")  # the seed's formula
    job = parse_json(cli("jobs", "show", jobs[0]["id"], "--json"))
    assert job["resolved_config"]["num_train_epochs"] == {"value": 3, "source": "user"}
    assert job["resolved_config"]["apply_deepspeed"]["source"].startswith("downgraded")
    registered = parse_json(cli("models", "list", "--json"))["registered"]
    assert [m["name"] for m in registered] == ["tiny-test-ultrachat-200k"]
    assert registered[0]["job_id"] == jobs[0]["id"]
    assert parse_json(cli("endpoints", "list", "--json")) == []


def test_sdk_errors_name_what_is_wrong(home: Path, tmp_path: Path) -> None:
    from chattune.aml import Input, MLClient
    from chattune.aml.dsl import pipeline
    from chattune.errors import ConfigError, NotFoundError, UserError

    registry = MLClient(None, registry_name="azureml")
    workspace = MLClient(None, subscription_id="s", resource_group_name="r", workspace_name="w")
    with pytest.raises(NotFoundError):
        registry.components.get(name="no_such_pipeline")
    with pytest.raises(NotFoundError) as missing:
        registry.models.get("Phi-3-mini-4k-instruc", label="latest")
    assert "phi-3-mini-4k-instruct" in str(missing.value.message)
    with pytest.raises(UserError):
        MLClient.from_config(path=tmp_path)  # no config.json: the seed falls back to explicit names

    # a config.json as Azure writes it is found from a subfolder
    (tmp_path / "config.json").write_text(
        json.dumps({"subscription_id": "s", "resource_group": "r", "workspace_name": "w"})
    )
    (tmp_path / "sub").mkdir()
    assert MLClient.from_config(path=tmp_path / "sub").workspace_name == "w"

    component = registry.components.get(name="chat_completion_pipeline", label="latest")
    model = registry.models.get("tiny-test", label="latest")

    @pipeline(name="bad")
    def bad():
        node = component(
            mlflow_model_path=model.id,
            train_file_path=Input(type="uri_file", path=str(tmp_path / "train.jsonl")),
            lerning_rate=1e-3,
        )
        return {"trained_model": node.outputs.mlflow_model_folder}

    with pytest.raises(ConfigError) as exc:
        workspace.jobs.create_or_update(bad(), experiment_name="x")
    assert any("did you mean `learning_rate`" in p.message for p in exc.value.problems)


def test_sdk_endpoint_keys_regenerate_and_delete(home: Path) -> None:
    import httpx

    from chattune.aml import MLClient
    from chattune.aml.entities import ManagedOnlineEndpoint

    client = MLClient(None, subscription_id="s", resource_group_name="r", workspace_name="w")
    created = client.begin_create_or_update(ManagedOnlineEndpoint(name="sdk-keys", auth_mode="key")).result()
    assert created.provisioning_state == "Succeeded" and created.scoring_uri.endswith("/score")
    keys = client.online_endpoints.get_keys("sdk-keys")
    assert keys.primary_key and keys.secondary_key and keys.primary_key != keys.secondary_key

    def status(key: str) -> int:
        return httpx.get(created.openai_base_url + "/models", headers={"Authorization": f"Bearer {key}"}).status_code

    assert status(keys.primary_key) == 503  # authenticated; no deployment takes traffic yet
    client.online_endpoints.begin_regenerate_keys("sdk-keys", key_type="primary").wait()
    new = client.online_endpoints.get_keys("sdk-keys")
    assert new.primary_key != keys.primary_key and new.secondary_key == keys.secondary_key
    assert status(keys.primary_key) == 401 and status(new.primary_key) == 503
    client.online_endpoints.begin_delete(name="sdk-keys").wait()
    assert client.online_endpoints.list() == []


def test_a_gpu_only_model_stops_at_the_seeds_own_compute_check_without_a_gpu(home: Path, tmp_path: Path) -> None:
    """Phi-3 allow-lists GPU sizes only: on a machine without one, the seed's allow-list check raises its
    ValueError before anything is downloaded or trained."""
    from chattune.compute import detect

    if detect().gpus:
        pytest.skip("this machine has a GPU")
    env = {**os.environ, "CHATTUNE_HOME": str(home), "SEED_MODEL": "Phi-3-mini-4k-instruct"}
    run = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1
    assert "ValueError: VM size local-cpu is not in the allow-listed computes for finetuning" in run.stderr
    assert not (home / "jobs").exists() or not any((home / "jobs").iterdir())
