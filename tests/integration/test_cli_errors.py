"""Bad input at the CLI: a clear message, exit code 2, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _job_yaml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(body, encoding="utf-8")
    return path


def _assert_user_error(result, *needles: str) -> None:
    assert result.returncode == 2, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in result.stderr, result.stderr


def test_unknown_model_names_the_closest(cli) -> None:
    _assert_user_error(cli("models", "show", "smollm2-135m-instruc"), "smollm2-135m-instruct", "hint:")
    _assert_user_error(cli("compute", "check", "--model", "nope"), "not in the catalog")


def test_job_file_problems_are_all_reported(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text("")
    path = _job_yaml(
        tmp_path,
        "model: tiny-test\ndata:\n  train: train.jsonl\ntraining:\n  learning_rat: 0.1\n"
        "  num_train_epochs: 1\n  lr_scheduler_type: wavy\noptimisation:\n  apply_lora: true\n",
    )
    result = cli("jobs", "create", "-f", str(path))
    _assert_user_error(result, "learning_rate", "job.yaml:5", "lr_scheduler_type", "optimization", "3 problem")


def test_unknown_model_in_job_file(cli, tmp_path: Path) -> None:
    (tmp_path / "train.jsonl").write_text('{"messages": []}\n')
    path = _job_yaml(tmp_path, "model: no-such-model\ndata:\n  train: train.jsonl\n")
    _assert_user_error(cli("jobs", "create", "-f", str(path)), "no-such-model", "tiny-test")


def test_malformed_yaml(cli, tmp_path: Path) -> None:
    path = _job_yaml(tmp_path, "model: tiny-test\ndata: [train: x\n")
    _assert_user_error(cli("jobs", "create", "-f", str(path)), "malformed YAML", "job.yaml:")


def test_missing_job_file_and_data_file(cli, tmp_path: Path) -> None:
    _assert_user_error(cli("jobs", "create", "-f", str(tmp_path / "absent.yaml")), "file not found")
    _assert_user_error(cli("data", "validate", str(tmp_path / "absent.jsonl")), "absent.jsonl", "not found")


def test_invalid_data_lists_every_error(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"messages": [{"role": "user", "content": "hi"}]}\nnot json\n'
        '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}\n'
    )
    result = cli("data", "validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}:1" in result.stdout and f"{bad}:2" in result.stdout and f"{bad}:3" in result.stdout
    assert "messages[0].role" in result.stdout


def test_unknown_flag_is_a_usage_error(cli) -> None:
    result = cli("jobs", "list", "--no-such-flag")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_traffic_must_sum_to_0_or_100(cli) -> None:
    # validated before any endpoint lookup needs a running process
    _assert_user_error(cli("endpoints", "traffic", "missing-ep", "demo=50"), "not found")
    _assert_user_error(cli("endpoints", "traffic", "missing-ep", "demo"), "DEPLOYMENT=PERCENT")


def test_ray_only_deployment_flags_are_refused_on_local(cli) -> None:
    deploy = ("deployments", "create", "--endpoint", "my-ep", "--name", "blue", "--model", "m:1")
    _assert_user_error(cli(*deploy, "--max-instances", "2"), "need a Ray compute target", "--compute NAME")
    _assert_user_error(cli(*deploy, "--cpus-per-instance", "2"), "--cpus-per-instance", "Ray compute target")
    _assert_user_error(cli(*deploy, "--min-instances", "2"), "need --max-instances")
    _assert_user_error(
        cli(*deploy, "--min-instances", "3", "--max-instances", "2"), "min_instances (3) is above max_instances (2)"
    )
    missing = cli(*deploy, "--compute", "nowhere")
    assert missing.returncode != 0 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
