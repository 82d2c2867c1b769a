"""A pipeline job from a YAML file: real runner process, step logs, MLflow runs, a failing data file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chattune.schemas import JobSummary
from tests.conftest import exact, parse_json

pytestmark = pytest.mark.integration


def _write_job(tmp_path: Path, data_dir: Path, extra: str = "") -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(
        f"""model: tiny-test
experiment_name: it_jobs
data:
  train: {data_dir}/train_sft.jsonl
  test: {data_dir}/test_sft.jsonl
  generation_test: {data_dir}/test_gen.jsonl
training:
  per_device_train_batch_size: 8
  learning_rate: 1.0e-3
  max_seq_length: 128
  logging_steps: 2
optimization:
  apply_lora: true
  lora_r: 4
  merge_lora_weights: false
evaluation:
  max_rows: 6
  max_new_tokens: 4
{extra}""",
        encoding="utf-8",
    )
    return path


def test_job_from_yaml_streams_and_tracks(cli, home: Path, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    parse_json(cli("data", "demo", "--out", str(data_dir), "--rows", "30", "--json"))
    # a row with one message: Azure drops it silently; here validate warns and preprocess counts it
    train = data_dir / "train_sft.jsonl"
    train.write_text(json.dumps({"messages": [{"role": "user", "content": "alone"}]}) + "\n" + train.read_text())
    result = cli("jobs", "create", "-f", str(_write_job(tmp_path, data_dir)), "--stream", "--json", timeout=240)
    job = exact(JobSummary, parse_json(result))
    assert job["status"] == "succeeded"
    assert "step finetune: succeeded" in result.stderr and "step evaluate: succeeded" in result.stderr

    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    preprocess = next(s for s in shown["steps"] if s["name"] == "preprocess")
    assert preprocess["outputs"]["splits"]["train"]["too_few_messages"] == 1
    assert "1 with fewer than 2 messages" in result.stderr
    assert shown["resolved_config"]["learning_rate"] == {"value": 0.001, "source": "user"}
    assert shown["resolved_config"]["lora_alpha"] == {"value": 128, "source": "default"}
    assert Path(shown["outputs"]["trained_model"], "adapter_config.json").exists()
    assert shown["resolved_config"]["merge_lora_weights"] == {"value": False, "source": "user"}
    listed = parse_json(cli("jobs", "list", "--json"))
    assert [j["id"] for j in listed["data"]] == [job["id"]]

    # MLflow: one run for the job, a nested run per step, params and metrics logged
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{home / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["it_jobs"], output_format="list")
    parent = [r for r in runs if r.info.run_id == shown["mlflow_run_id"]]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == shown["mlflow_run_id"]]
    assert len(parent) == 1 and len(runs) == 6
    assert sorted(r.info.run_name for r in children) == sorted(
        ["validate", "model_import", "preprocess", "finetune", "evaluate"]
    )
    assert parent[0].data.params["learning_rate"] == "0.001"
    assert "tuned_test_loss" in parent[0].data.metrics and "train_loss" in parent[0].data.metrics
    client = mlflow.MlflowClient()
    assert "resolved_config.json" in [a.path for a in client.list_artifacts(shown["mlflow_run_id"])]
    evaluate_run = next(r for r in children if r.info.run_name == "evaluate")
    artifacts = {a.path for a in client.list_artifacts(evaluate_run.info.run_id)}
    assert {"step.log", "predictions.jsonl", "metrics.json", "metrics.md"} <= artifacts
    finetune_run = next(r for r in children if r.info.run_name == "finetune")
    assert "loss_curve.png" in {a.path for a in client.list_artifacts(finetune_run.info.run_id)}
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "bleu1", "bleu4", "exact_match"} <= set(
        shown["metrics"]["tuned"]
    )
    assert Path(home, "mlartifacts").is_dir()

    # merge_lora_weights: false - the registered MLflow model is the adapter alone over the referenced base.
    registered = parse_json(cli("models", "register", "--job", job["id"], "--name", "unmerged", "--json"))
    assert registered["lineage"]["mlflow_model"] == "lora"
    pyfunc = mlflow.pyfunc.load_model("models:/unmerged/1")
    imported = next(s for s in shown["steps"] if s["name"] == "model_import")["outputs"]
    assert pyfunc.model_config["base_model_path"] == imported["path"]
    answer = pyfunc.predict([{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}])[0]
    assert answer.usage.completion_tokens > 0
    local = Path(mlflow.artifacts.download_artifacts("models:/unmerged/1"))
    assert [p.name for p in local.rglob("*.safetensors")] == ["adapter_model.safetensors"]


@pytest.mark.parametrize("keep_going", [False, True])
def test_invalid_training_file_fails_validate_and_trains_nothing(cli, tmp_path: Path, keep_going: bool) -> None:
    data_dir = tmp_path / "data"
    parse_json(cli("data", "demo", "--out", str(data_dir), "--rows", "12", "--json"))
    train = data_dir / "train_sft.jsonl"
    lines = train.read_text().splitlines()
    lines[3] = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "a"}]})
    train.write_text("\n".join(lines) + "\n")
    settings = f"settings:\n  continue_on_step_failure: {str(keep_going).lower()}\n"
    job_file = _write_job(tmp_path, data_dir, settings)
    result = cli("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=240)
    assert result.returncode == 1
    job = json.loads(result.stdout)
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    steps = {s["name"]: s for s in shown["steps"]}
    assert shown["status"] == "failed" and steps["validate"]["status"] == "failed"
    assert f"{train}:4" in steps["validate"]["error"]
    assert steps["finetune"]["status"] == "skipped"
    assert shown["error"]["details"]["errors"][0]["line"] == 4
    if keep_going:  # continue_on_step_failure: steps that do not need the failed one still run
        assert steps["model_import"]["status"] == "succeeded"
        assert "needs validate" in steps["preprocess"]["error"]
    else:
        assert steps["model_import"]["status"] == "skipped" and steps["model_import"]["error"] == "not reached"


def _python_spec(tmp_path: Path, name: str, rows: int, **training: int) -> dict:
    """A tiny-test job as the SDK takes it (a mapping shaped like the job YAML), on demo data of `rows` rows."""
    from chattune.data import demo

    demo.write(tmp_path / "data", rows=rows)
    return {
        "model": "tiny-test",
        "experiment_name": name,
        "data": {"train": str(tmp_path / "data" / "train_sft.jsonl")},
        "training": training,
        "optimization": {"apply_lora": True, "lora_r": 4},
        "evaluation": {"max_rows": 4},
    }


def test_a_job_from_python_runs_the_same_checks_and_pipeline(home: Path, tmp_path: Path) -> None:
    """The SDK path: a mapping shaped like the job YAML, through the same validation, runner and job record."""
    from chattune import JobSpec, Workspace
    from chattune.errors import ConfigError

    spec = _python_spec(tmp_path, "sdk", 24, num_train_epochs=2, per_device_train_batch_size=4, max_seq_length=128)
    ws = Workspace()
    with pytest.raises(ConfigError) as exc:
        ws.jobs.create({**spec, "training": {"lerning_rate": 1e-3, "learning_rate": -1}}, start=False)
    messages = [f"{p.where}: {p.message}" for p in exc.value.problems]
    assert any("training.lerning_rate" in m and "did you mean `learning_rate`" in m for m in messages), messages
    assert any("training.learning_rate" in m and "must be > 0" in m for m in messages), messages
    # A JobSpec built in Python with a misspelt key is held to the same rule (nothing silently dropped).
    with pytest.raises(ConfigError):
        ws.jobs.create(JobSpec.model_validate({**spec, "optimization": {"lora_rank": 4}}), start=False)

    job, warnings = ws.jobs.create(spec)
    assert warnings == []
    assert job.resolved_config["num_train_epochs"] == {"value": 2, "source": "user"}
    lines: list[str] = []
    final = ws.jobs.stream(job.id, lines.append, timeout_s=240)
    assert final.status == "succeeded", "\n".join(lines)
    assert any("packing: off (default for this model" in line for line in lines)  # no varlen kernel on a CPU
    assert any("attention: per conversation" in line for line in lines)  # padding-free batches on SDPA
    assert final.outputs["trained_model"]


def test_a_job_whose_rows_all_lose_their_answers_fails_at_preprocess(home: Path, tmp_path: Path) -> None:
    """Truncation that leaves no assistant token in any row: a clear failure that names the limit, nothing trained."""
    from chattune import Workspace

    spec = _python_spec(tmp_path, "no_rows", 12, max_seq_length=8)
    ws = Workspace()
    job, _ = ws.jobs.create(spec)
    final = ws.jobs.stream(job.id, lambda line: None, timeout_s=240)
    steps = {s.name: s for s in final.steps}
    assert final.status == "failed" and steps["preprocess"].status == "failed"
    assert "no row keeps an assistant token after truncation to 8 tokens" in (steps["preprocess"].error or "")
    assert steps["finetune"].status == "skipped"
