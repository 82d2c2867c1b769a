"""The registry: versions numbered as MLflow numbers them, aliases and tags mirrored into MLflow, a pyfunc that
answers as the endpoint does, deletion refused while served, and the chat-template check at deploy time."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def test_registry_versions_aliases_mlflow_pyfunc_and_guards(
    cli, home: Path, served: dict, trained_workspace: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the session's trained workspace: its quickstart job registered again under a name of this test's own, and
    served on this test's endpoint beside its "demo" deployment."""
    # The merged MLflow model and the served base + adapter differ by float rounding only; compared in fp32, where
    # that rounding cannot flip a greedy token (bf16 could).
    monkeypatch.setenv("CHATTUNE_INFERENCE_DTYPE", "float32")
    job_id, endpoint = trained_workspace["quickstart"]["job"]["id"], served["endpoint"]

    first = parse_json(cli("models", "register", "--job", job_id, "--name", "tiny-chat", "--json"))
    second = parse_json(cli("models", "register", "--job", job_id, "--name", "tiny-chat", "--json"))
    assert (first["version"], second["version"]) == ("1", "2")  # MLflow's numbers: models:/tiny-chat/1
    assert parse_json(cli("models", "alias", "tiny-chat@champion", "1", "--json")) == {
        "name": "tiny-chat",
        "alias": "champion",
        "version": "1",
    }
    shown = parse_json(cli("models", "show", "tiny-chat@champion", "--json"))
    assert shown["version"] == "1" and shown["aliases"] == ["champion"] and shown["versions"] == ["1", "2"]
    assert shown["lineage"]["job_id"] == job_id and shown["lineage"]["chat_template_sha256"]
    assert shown["lineage"]["parameters"]["merge_lora_weights"] is True  # Azure's default
    assert shown["lineage"]["mlflow_model"] == "merged"
    parse_json(cli("models", "tag", "tiny-chat:1", "stage=prod", "--json"))
    listed = {(m["name"], m["version"]): m for m in parse_json(cli("models", "list", "--json"))["registered"]}
    assert listed["tiny-chat", "1"]["aliases"] == ["champion"] and listed["tiny-chat", "1"]["tags"]["stage"] == "prod"
    bad = cli("models", "alias", "tiny-chat@latest", "1")
    assert bad.returncode == 2 and "reserved" in bad.stderr

    # Serve the alias; MLflow loads the same version and answers with the same greedy text.
    create = ("deployments", "create", "--endpoint", endpoint, "--name", "champ", "--model", "tiny-chat@champion")
    parse_json(cli(*create, "--json"))
    key = parse_json(cli("endpoints", "keys", endpoint, "--json"))["primary_key"]
    base_url = parse_json(cli("endpoints", "show", endpoint, "--json"))["openai_base_url"]
    client = openai.OpenAI(base_url=base_url, api_key=key, default_headers={"azureml-model-deployment": "champ"})
    messages = [{"role": "user", "content": "Normalize the date: 3 March 2021"}]
    served = client.chat.completions.create(model="tiny-chat:1", messages=messages, max_tokens=8, temperature=0)

    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    version = MlflowClient().get_model_version_by_alias("tiny-chat", "champion")
    assert str(version.version) == "1" and version.tags["stage"] == "prod"
    # merge_lora_weights: MLflow's copy is a standalone model (no adapter, no reference to the workspace's base).
    local = Path(mlflow.artifacts.download_artifacts("models:/tiny-chat@champion"))
    assert (local / "artifacts" / "model" / "config.json").exists()
    assert not list(local.rglob("adapter_config.json"))
    model = mlflow.pyfunc.load_model("models:/tiny-chat@champion")
    assert "base_model_path" not in model.model_config
    answer = model.predict([{"messages": messages, "max_tokens": 8}])[0]
    assert answer.choices[0].message.content == served.choices[0].message.content
    assert answer.usage.completion_tokens == served.usage.completion_tokens

    # A version a deployment serves cannot be deleted; an unused one can, in MLflow too.
    refused = cli("models", "delete", "tiny-chat:1")
    assert refused.returncode == 2 and f"{endpoint}/champ" in refused.stderr
    assert cli("models", "delete", "tiny-chat:2").returncode == 0
    assert [str(v.version) for v in MlflowClient().search_model_versions("name='tiny-chat'")] == ["1"]

    # A version whose stored chat template differs from the one it was trained with is refused at deploy time.
    (Path(shown["path"]) / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    mismatch = cli("deployments", "create", "--endpoint", endpoint, "--name", "other", "--model", "tiny-chat:1")
    assert mismatch.returncode == 2 and "not the one it was trained with" in mismatch.stderr
    assert cli("deployments", "delete", "--endpoint", endpoint, "--name", "champ").returncode == 0
