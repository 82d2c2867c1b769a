"""Job lifecycle on the tiny model: step cache, kill -9 and resume from a checkpoint, cancel, provenance."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import parse_json

pytestmark = pytest.mark.integration


def _job(tmp_path: Path, name: str, training: str = "", settings: str = "") -> Path:
    data = tmp_path / "data"
    if not data.exists():
        from chattune.data import demo

        demo.write(data, rows=24)
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        f"""model: tiny-test
experiment_name: lifecycle
data:
  train: data/train_sft.jsonl
  test: data/test_sft.jsonl
training:
  per_device_train_batch_size: 4
  max_seq_length: 128
  logging_steps: 1
{training}
optimization:
  apply_lora: true
  lora_r: 4
evaluation:
  max_rows: 4
settings:
{settings or "  force_rerun: false"}
"""
    )
    return path


def _wait(predicate, timeout: float = 120.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_rerun_reuses_steps_and_force_rerun_does_not(cli, tmp_path: Path) -> None:
    first = parse_json(cli("jobs", "create", "-f", str(_job(tmp_path, "a")), "--stream", "--json", timeout=240))
    second = parse_json(cli("jobs", "create", "-f", str(_job(tmp_path, "a")), "--stream", "--json", timeout=240))
    steps = {s["name"]: s for s in parse_json(cli("jobs", "show", second["id"], "--json"))["steps"]}
    assert second["status"] == "succeeded"
    for name in ("validate", "preprocess", "finetune", "evaluate"):
        assert steps[name]["reused_from"] == first["id"], name
    # a changed training value misses the cache from finetune on (preprocess inputs are unchanged)
    changed = _job(tmp_path, "b", training="  learning_rate: 0.001")
    third = parse_json(cli("jobs", "create", "-f", str(changed), "--stream", "--json", timeout=240))
    steps = {s["name"]: s for s in parse_json(cli("jobs", "show", third["id"], "--json"))["steps"]}
    assert steps["preprocess"]["reused_from"] == first["id"]
    assert steps["finetune"]["reused_from"] is None and steps["evaluate"]["reused_from"] is None
    forced = _job(tmp_path, "c", settings="  force_rerun: true")
    fourth = parse_json(cli("jobs", "create", "-f", str(forced), "--stream", "--json", timeout=240))
    shown = parse_json(cli("jobs", "show", fourth["id"], "--json"))
    assert all(s["reused_from"] is None and s["status"] == "succeeded" for s in shown["steps"])


def _test_loss(cli, job_id: str) -> float:
    shown = parse_json(cli("jobs", "show", job_id, "--json"))
    return float(next(s for s in shown["steps"] if s["name"] == "evaluate")["outputs"]["metrics"]["tuned"]["test_loss"])


def test_kill_9_during_finetune_then_resume_continues_from_the_checkpoint_and_matches_a_whole_run(
    cli, home: Path, tmp_path: Path
) -> None:
    path = _job(
        tmp_path,
        "long",
        training="  max_steps: 80\n  save_strategy: steps\n  save_steps: 10\n"
        '  save_total_limit: 2\n  evaluation_strategy: "no"',
        settings="  force_rerun: true",
    )
    whole = parse_json(cli("jobs", "create", "-f", str(path), "--stream", "--json", timeout=300))
    assert whole["status"] == "succeeded"

    job = parse_json(cli("jobs", "create", "-f", str(path), "--json"))
    ckpt_root = home / "jobs" / job["id"] / "steps" / "finetune" / "checkpoints"

    def has_checkpoint() -> bool:
        return any((p / "trainer_state.json").exists() for p in ckpt_root.glob("checkpoint-*"))

    _wait(has_checkpoint, what="a first checkpoint")
    pid = parse_json(cli("jobs", "show", job["id"], "--json"))["pid"]
    os.kill(pid, signal.SIGKILL)
    _wait(lambda: parse_json(cli("jobs", "show", job["id"], "--json"))["status"] == "failed", what="failed status")
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    assert shown["error"]["code"] == "runner_died"
    killed_at = max(c["step_number"] for c in shown["checkpoints"])
    assert 0 < killed_at < 80 and len(shown["checkpoints"]) <= 2  # save_total_limit honoured
    assert shown["checkpoints"][-1]["metrics"]["train_loss"] is not None
    # What a kill during the next save leaves: the weights written, the trainer state (written last) not. It is
    # neither listed nor resumed from, and the resume removes it.
    partial = ckpt_root / f"checkpoint-{killed_at + 10}"
    partial.mkdir(exist_ok=True)
    shutil.copy(ckpt_root / f"checkpoint-{killed_at}" / "adapter_model.safetensors", partial)
    listed = parse_json(cli("jobs", "show", job["id"], "--json"))["checkpoints"]
    assert max(c["step_number"] for c in listed) == killed_at

    result = cli("jobs", "resume", job["id"], "--stream", "--json", timeout=300)
    assert parse_json(result)["status"] == "succeeded", result.stderr
    assert f"removed {partial.name}: its save was interrupted" in result.stderr
    assert f"resuming from checkpoint-{killed_at} " in result.stderr
    assert "kept from the interrupted attempt" in result.stderr
    final = parse_json(cli("jobs", "show", job["id"], "--json"))
    assert final["steps"][3]["outputs"]["metrics"]["global_steps"] == 80
    states = [json.loads((p / "trainer_state.json").read_text()) for p in ckpt_root.glob("checkpoint-*")]
    assert max(s["global_step"] for s in states) == 80
    # the global step continues: the first metrics after the resume are for the step after the checkpoint
    events = final["events"]
    resumed_at = next(i for i, e in enumerate(events) if e["message"].startswith("resume requested"))
    after = [e["data"]["step"] for e in events[resumed_at:] if e["type"] == "metrics"]
    assert after[0] == killed_at + 1 and after[-1] == 80
    # and the resumed job ends where the uninterrupted one did
    uninterrupted, interrupted = _test_loss(cli, whole["id"]), _test_loss(cli, job["id"])
    print(f"training kill at step {killed_at}: test loss {interrupted:.5f} resumed vs {uninterrupted:.5f} whole")
    assert interrupted == pytest.approx(uninterrupted, rel=0.01)


def test_cancel_stops_a_running_job(cli, home: Path, tmp_path: Path) -> None:
    path = _job(tmp_path, "cancel", training='  max_steps: 5000\n  save_strategy: "no"\n  evaluation_strategy: "no"')
    job = parse_json(cli("jobs", "create", "-f", str(path), "--json"))
    log = home / "jobs" / job["id"] / "job.log"
    _wait(lambda: log.exists() and "step finetune: running" in log.read_text(), what="finetune to start")
    assert cli("jobs", "cancel", job["id"]).returncode == 0
    _wait(lambda: parse_json(cli("jobs", "show", job["id"], "--json"))["status"] == "cancelled", what="cancelled")
    steps = {s["name"]: s for s in parse_json(cli("jobs", "show", job["id"], "--json"))["steps"]}
    assert steps["finetune"]["status"] == "cancelled" and steps["evaluate"]["status"] == "skipped"
    again = cli("jobs", "cancel", job["id"])
    assert again.returncode == 2 and "already cancelled" in again.stderr


def test_user_values_beat_model_defaults_with_their_source(cli, tmp_path: Path) -> None:
    """Phi-3's catalog defaults set epochs 1 and lr 5e-6; the user's values win and say so (no run needed)."""
    from chattune.catalog import get_entry
    from chattune.pipeline.config import parse_spec
    from chattune.pipeline.resolved import resolve

    spec = parse_spec(
        {"model": "phi-3-mini-4k-instruct", "data": {"train": "t.jsonl"}, "training": {"num_train_epochs": 3}}
    )
    config, warnings = resolve(spec, get_entry("phi-3-mini-4k-instruct").model_specific_defaults, has_cuda=False)
    resolved = config.to_record()
    assert resolved["num_train_epochs"] == {"value": 3, "source": "user"}
    assert resolved["learning_rate"] == {"value": 5e-6, "source": "model_specific_defaults"}
    assert resolved["apply_deepspeed"]["value"] is False and resolved["apply_deepspeed"]["source"].startswith(
        "downgraded"
    )
    assert any("apply_deepspeed" in w for w in warnings)


def test_the_best_checkpoint_by_metric_is_the_output(cli, tmp_path: Path) -> None:
    """Evaluations and checkpoints every 3 steps: the checkpoint with the lowest eval loss becomes the trained model,
    and the checkpoints list their metrics (OpenAI's checkpoint objects)."""
    training = (
        "  max_steps: 12\n  learning_rate: 0.05\n  evaluation_strategy: steps\n  eval_steps: 3\n"
        "  save_strategy: steps\n  save_steps: 3\n  metric_for_best_model: loss"
    )
    job = parse_json(cli("jobs", "create", "-f", str(_job(tmp_path, "best", training)), "--stream", "--json"))
    assert job["status"] == "succeeded"
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    checkpoints = shown["checkpoints"]
    assert [c["step_number"] for c in checkpoints] == [3, 6, 9, 12]
    for c in checkpoints:
        metrics = c["metrics"]
        assert metrics["step"] == c["step_number"] and c["object"] == "fine_tuning.job.checkpoint"
        assert all(isinstance(metrics[k], float) for k in ("train_loss", "valid_loss", "valid_mean_token_accuracy"))
    best = min(checkpoints, key=lambda c: c["metrics"]["valid_loss"])
    finetune = next(s for s in shown["steps"] if s["name"] == "finetune")
    assert finetune["outputs"]["metrics"]["best_checkpoint"] == f"checkpoint-{best['step_number']}"
    assert finetune["outputs"]["metrics"]["peak_rss_mb"] > 100  # the training process's peak memory so far
    from safetensors.torch import load_file

    trained = load_file(Path(finetune["outputs"]["trained_model"]) / "adapter_model.safetensors")
    kept = load_file(Path(best["path"]) / "adapter_model.safetensors")
    assert trained.keys() == kept.keys() and all(trained[k].equal(kept[k]) for k in kept)
