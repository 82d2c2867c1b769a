"""A `task: preference` job (DPO) through the whole pipeline on the tiny model: real runner process, TRL's DPO
trainer, preference metrics for base and tuned, the registry; bad pairs and options refused at `jobs create`."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from chattune.schemas import JobSummary, ModelVersionPublic
from tests.conftest import exact, parse_json
from tests.integration.test_job_lifecycle import _wait

pytestmark = pytest.mark.integration


def _job(tmp_path: Path, data: Path, extra: str = "", lora: bool = True) -> Path:
    path = tmp_path / f"job-{'lora' if lora else 'full'}.yaml"
    path.write_text(
        f"""model: tiny-test
task: preference
experiment_name: it_preference
data:
  train: {data}/train_prefs.jsonl
  test: {data}/test_prefs.jsonl
training:
  max_steps: 3
  per_device_train_batch_size: 4
  learning_rate: 1.0e-3
  max_seq_length: 128
  logging_steps: 1
optimization:
  apply_lora: {str(lora).lower()}
preference:
  beta: 0.2
evaluation:
  max_rows: 8
{extra}""",
        encoding="utf-8",
    )
    return path


def test_a_dpo_job_trains_evaluates_and_registers(cli: Any, home: Path, tmp_path: Path) -> None:
    data = tmp_path / "prefs"
    written = parse_json(cli("data", "demo", "--task", "preference", "--out", str(data), "--rows", "40", "--json"))
    assert sorted(written) == ["test_prefs", "train_prefs"]
    # A 41st pair whose prompt alone is longer than max_seq_length (128): left out, named by file and line.
    train = data / "train_prefs.jsonl"
    with train.open("a") as fh:
        fh.write(json.dumps({"prompt": "date " * 200, "chosen": "a", "rejected": "b"}) + "\n")
    result = cli("jobs", "create", "-f", str(_job(tmp_path, data)), "--stream", "--json", timeout=300)
    job = exact(JobSummary, parse_json(result))
    assert job["status"] == "succeeded", result.stderr
    assert "DPO: beta 0.2, LoRA" in result.stderr
    assert "-dpo-bs4-" in job["display_name"]

    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    steps = {s["name"]: s for s in shown["steps"]}
    splits = steps["preprocess"]["outputs"]["splits"]
    # 41 pairs: the last 8 are the validation split; the test file's first evaluation.max_rows (8)
    assert [splits[n]["rows"] for n in ("train", "validation", "test")] == [33, 8, 8]
    assert [splits[n]["kept"] for n in ("train", "validation", "test")] == [33, 7, 8]
    assert splits["validation"]["no_assistant_tokens"] == 1
    assert f"{train}:41" in result.stderr and "prompt alone is 128 tokens or more left out" in result.stderr
    assert steps["validate"]["outputs"]["files"]["train"]["format"] == "preference"
    trained = steps["finetune"]["outputs"]["metrics"]
    assert trained["global_steps"] == 3 and 0 <= trained["valid_rewards_accuracies"] <= 1
    assert "valid_rewards_margins" in trained
    metrics = steps["evaluate"]["outputs"]["metrics"]
    assert set(metrics["base"]) == {"preference_accuracy", "logp_margin"}
    assert set(metrics["tuned"]) == {"preference_accuracy", "logp_margin", "reward_accuracy", "reward_margin"}
    # The tuned model moved toward the preferred answers: its log-likelihood margin grew over the base's.
    assert metrics["tuned"]["logp_margin"] > metrics["base"]["logp_margin"]
    assert Path(shown["outputs"]["trained_model"], "adapter_config.json").exists()

    mv = exact(ModelVersionPublic, parse_json(cli("models", "register", "--job", job["id"], "--json")))
    assert mv["kind"] == "lora" and mv["tags"] == {"task": "chat-completion", "tuning": "dpo"}
    assert mv["lineage"]["datasets"]["train"]["format"] == "preference"

    # The same job again: validate and preprocess come from the cache.
    again = cli("jobs", "create", "-f", str(_job(tmp_path, data)), "--stream", "--json", timeout=300)
    assert parse_json(again)["status"] == "succeeded"
    assert "step validate: reused" in again.stderr and "step preprocess: reused" in again.stderr


def test_a_full_dpo_job_killed_mid_training_resumes_from_its_checkpoint(cli: Any, home: Path, tmp_path: Path) -> None:
    """All weights (TRL keeps a frozen reference copy); the runner killed with SIGKILL after a checkpoint; `jobs
    resume` continues from it to the last step."""
    data = tmp_path / "prefs"
    parse_json(cli("data", "demo", "--task", "preference", "--out", str(data), "--rows", "20", "--json"))
    path = _job(tmp_path, data, lora=False)
    path.write_text(
        path.read_text().replace(
            "  max_steps: 3\n",
            '  max_steps: 30\n  save_strategy: steps\n  save_steps: 4\n  evaluation_strategy: "no"\n',
        )
    )
    job = parse_json(cli("jobs", "create", "-f", str(path), "--json"))
    checkpoints = home / "jobs" / job["id"] / "steps" / "finetune" / "checkpoints"
    _wait(
        lambda: any((c / "trainer_state.json").exists() for c in checkpoints.glob("checkpoint-*")), what="a checkpoint"
    )
    os.kill(parse_json(cli("jobs", "show", job["id"], "--json"))["pid"], signal.SIGKILL)
    _wait(lambda: parse_json(cli("jobs", "show", job["id"], "--json"))["status"] == "failed", what="failed status")
    killed_at = max(c["step_number"] for c in parse_json(cli("jobs", "show", job["id"], "--json"))["checkpoints"])
    assert 0 < killed_at < 30

    result = cli("jobs", "resume", job["id"], "--stream", "--json", timeout=300)
    assert parse_json(result)["status"] == "succeeded", result.stderr
    assert f"resuming from checkpoint-{killed_at} " in result.stderr and "DPO: beta 0.2, all weights" in result.stderr
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    assert next(s for s in shown["steps"] if s["name"] == "finetune")["outputs"]["metrics"]["global_steps"] == 30
    assert Path(shown["outputs"]["trained_model"], "model.safetensors").exists()


def test_bad_pairs_fail_validation_and_bad_options_are_refused_at_create(cli: Any, home: Path, tmp_path: Path) -> None:
    data = tmp_path / "prefs"
    parse_json(cli("data", "demo", "--task", "preference", "--out", str(data), "--rows", "20", "--json"))
    train = data / "train_prefs.jsonl"
    rows = train.read_text().splitlines()
    same = json.loads(rows[2])
    same["rejected"] = same["chosen"]
    rows[2] = json.dumps(same)
    rows[4] = json.dumps({"prompt": "q", "chosen": "a"})
    train.write_text("\n".join(rows) + "\n")
    failed = cli("jobs", "create", "-f", str(_job(tmp_path, data)), "--stream", "--json", timeout=120)
    assert failed.returncode == 1  # the job failed at its validate step, as a chat job's bad rows do
    shown = parse_json(cli("jobs", "show", json.loads(failed.stdout)["id"], "--json"))
    steps = {s["name"]: s["status"] for s in shown["steps"]}
    assert steps["validate"] == "failed" and steps["finetune"] == "skipped"
    assert f"{train}:3: chosen:" in failed.stderr and "[identical_sides]" in failed.stderr
    assert f"{train}:5: rejected:" in failed.stderr and "[missing_side]" in failed.stderr

    generation = _job(tmp_path, data, extra="")
    generation.write_text(
        generation.read_text().replace("  test:", f"  generation_test: {data}/test_prefs.jsonl\n  test:")
    )
    refused = cli("jobs", "create", "-f", str(generation))
    assert refused.returncode == 2 and "data.generation_test" in refused.stderr


def test_a_registered_sft_version_is_tuned_further_and_its_lineage_shows_both_jobs(
    cli: Any, trained_workspace: dict[str, Any], tmp_path: Path
) -> None:
    """The session's quickstart version (SFT, LoRA), named by an alias, is the starting model of a DPO job: its
    adapter is merged into its base once, and the new version's lineage names the version and the job that made it."""
    sft = trained_workspace["model"]  # NAME:VERSION
    name, version = sft.split(":")
    parse_json(cli("models", "alias", f"{name}@sft", version, "--json"))
    data = tmp_path / "prefs"
    parse_json(cli("data", "demo", "--task", "preference", "--out", str(data), "--rows", "20", "--json"))
    job_file = _job(tmp_path, data)
    job_file.write_text(job_file.read_text().replace("model: tiny-test", f"model: {name}@sft"))
    result = cli("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=300)
    job = parse_json(result)
    assert job["status"] == "succeeded", result.stderr
    assert job["display_name"].startswith(f"{name}-dpo-")
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    imported = next(s for s in shown["steps"] if s["name"] == "model_import")["outputs"]
    assert imported["name"] == sft and "/models/" in imported["path"]  # merged once, stored by content hash

    mv = parse_json(cli("models", "register", "--job", job["id"], "--name", "sft-then-dpo", "--json"))
    lineage = mv["lineage"]
    assert lineage["job_id"] == job["id"] and lineage["task"] == "preference"
    assert lineage["parent_model"] == {
        "model": sft,
        "job_id": trained_workspace["quickstart"]["job"]["id"],
        "task": "chat_completion",
        "base_model": "tiny-test",
    }
    assert mv["base_model"] == sft
