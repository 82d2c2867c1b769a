"""The data formats people have, through the real CLI: an alpaca file (LLaMA-Factory's demo) and a ShareGPT file are
validated and trained on, a `weight: 0` turn is not trained, and generation_test rows that end on the question are
answered."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TEST_DATA, parse_json, shared_fixture

pytestmark = pytest.mark.integration

JOB = """model: tiny-test
experiment_name: formats
data:
{data}
training:
  per_device_train_batch_size: 8
  learning_rate: 1.0e-3
  max_seq_length: 192
  max_steps: 2
  logging_steps: 1
optimization:
  apply_lora: true
  lora_r: 4
evaluation:
  max_rows: 3
  max_new_tokens: 4
"""

WEIGHTED = {
    "conversations": [
        {"from": "human", "value": "What is 7 times 8?"},
        {"from": "gpt", "value": "Fifty-four, I think.", "weight": 0},
        {"from": "human", "value": "Check again."},
        {"from": "gpt", "value": "Sorry: 56.", "weight": 1},
    ]
}


def _job(tmp_path: Path, name: str, data: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(JOB.format(data=data), encoding="utf-8")
    return path


def _steps(job_id: str) -> dict[str, dict]:
    """The job's steps as `jobs show --json` has them, read in this process (one CLI start less on a busy machine)."""
    from chattune import Workspace
    from chattune.schemas import JobPublic

    job = JobPublic.from_job(Workspace().jobs.get(job_id)).model_dump(mode="json")
    return {s["name"]: s for s in job["steps"]} | {"job": job}


def test_alpaca_and_sharegpt_files_validate_and_train_and_weight_zero_is_not_trained(
    cli, home: Path, tmp_path: Path
) -> None:
    fixture = shared_fixture("alpaca_en_demo_llamafactory", "alpaca_en_demo.json")
    # A slice of LLaMA-Factory's alpaca demo, as a .json array: its shortest rows, which the tiny model's 512-token
    # vocabulary keeps whole in 192 tokens.
    alpaca = tmp_path / "alpaca.json"
    rows = [r for r in json.loads(fixture.read_text(encoding="utf-8")) if sum(map(len, r.values())) < 120][:16]
    alpaca.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    # ShareGPT in LLaMA-Factory's shape, with a first row whose wrong answer is context (weight 0, OpenAI's rule).
    sharegpt = tmp_path / "sharegpt.json"
    sharegpt.write_text(
        json.dumps([WEIGHTED, *json.loads(TEST_DATA.joinpath("sharegpt_chat.json").read_text())], indent=2)
    )
    # ultrachat_200k's test_gen: rows end on the user's question, there is no reference answer.
    test_gen = tmp_path / "test_gen.jsonl"
    questions = ["Name a prime number.", "What colour is the sky?", "Spell 'cat' backwards."]
    test_gen.write_text(
        "".join(
            json.dumps({"prompt": q, "prompt_id": f"q{i}", "messages": [{"role": "user", "content": q}]}) + "\n"
            for i, q in enumerate(questions)
        )
    )

    checked = parse_json(cli("data", "validate", str(alpaca), str(sharegpt), "--min-rows", "10", "--json"))
    assert [(f["format"], f["format_source"], f["rows"], f["valid"]) for f in checked["files"]] == [
        ("alpaca", "detected from line 2", 16, True),
        ("sharegpt", "detected from line 2", 13, True),
    ]

    data = f"  train: {alpaca}\n  generation_test: {test_gen}"
    result = cli("jobs", "create", "-f", str(_job(tmp_path, "alpaca", data)), "--stream", "--json", timeout=240)
    job = parse_json(result)
    assert job["status"] == "succeeded", result.stderr
    assert f"train: {alpaca} (alpaca, detected from line 2; 16 rows, 0 errors" in result.stderr
    note = "generation_test: generated 3/3 rows, reference metrics on 0 (3 without a reference answer"
    assert note in result.stderr
    steps = _steps(job["id"])
    split = steps["preprocess"]["outputs"]["splits"]["train"]
    assert split["kept"] == split["rows"] == 13 and split["no_assistant_tokens"] == 0  # 3 rows went to validation
    evaluate = steps["evaluate"]["outputs"]
    assert (evaluate["generation_rows"], evaluate["reference_rows"]) == (3, 0)
    assert "rouge1" not in steps["job"]["metrics"]["tuned"]  # nothing to score against: not computed, not zero
    step_dir = Path(steps["evaluate"]["log_path"]).parent
    predictions = [json.loads(line) for line in (step_dir / "predictions.jsonl").read_text().splitlines()]
    assert [(p["prompt"][-1]["content"], p["reference"]) for p in predictions] == [(q, None) for q in questions]
    assert all(isinstance(p["tuned"], str) for p in predictions)
    assert note in (step_dir / "metrics.md").read_text()

    data = f"  train: {sharegpt}"
    result = cli("jobs", "create", "-f", str(_job(tmp_path, "sharegpt", data)), "--stream", "--json", timeout=240)
    job = parse_json(result)
    assert job["status"] == "succeeded", result.stderr
    assert f"train: {sharegpt} (sharegpt, detected from line 2; 13 rows, 0 errors" in result.stderr
    steps = _steps(job["id"])
    assert steps["validate"]["outputs"]["files"]["train"]["format"] == "sharegpt"

    # The first training row, as preprocess saved it for the trainer: the weight-0 answer is in the input, not in
    # the tokens the loss is computed on; the weight-1 answer is.
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(steps["model_import"]["outputs"]["path"])
    first = load_from_disk(steps["preprocess"]["outputs"]["splits"]["train"]["path"])[0]
    ids, mask = first["input_ids"], first["assistant_masks"]
    trained = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert "Fifty-four, I think." in tokenizer.decode(ids)
    assert "Fifty-four" not in trained
    assert trained == "Sorry: 56.<|im_end|>"
