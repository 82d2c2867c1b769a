"""The 2-process run: torchrun launches two gloo workers on the CPU (number_of_gpu_to_use_finetuning: 2).

kill -9 of the job's runner takes its training processes down with it; `jobs resume` continues with two processes
from the last checkpoint; the LoRA adapter written under DDP is non-empty and loads onto the base model.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest

from chattune.schemas import JobSummary
from tests.conftest import exact, parse_json
from tests.integration.test_job_lifecycle import _job, _wait

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two training processes need two CPU cores"),
]


def _workers(job_id: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if job_id in cmdline and ("torch.distributed.run" in cmdline or "chattune.pipeline.worker" in cmdline):
            found.append(proc)
    return found


def test_two_process_run_survives_kill_9_and_resumes(cli, home: Path, tmp_path: Path) -> None:
    path = _job(
        tmp_path,
        "ddp",
        training="  max_steps: 120\n  save_strategy: steps\n  save_steps: 10\n  save_total_limit: 2\n"
        '  evaluation_strategy: "no"\n  packing: true',  # packed rows under DDP too
    )
    path.write_text(path.read_text().replace("  lora_r: 4\n", "  lora_r: 4\n  number_of_gpu_to_use_finetuning: 2\n"))
    job = exact(JobSummary, parse_json(cli("jobs", "create", "-f", str(path), "--json")))
    job = {**job, **parse_json(cli("jobs", "show", job["id"], "--json"))}
    assert job["resolved_config"]["number_of_gpu_to_use_finetuning"] == {"value": 2, "source": "user"}
    assert "-bs8-" in job["display_name"]  # the seed's formula: 4 per device x 2 processes
    ckpt_root = home / "jobs" / job["id"] / "steps" / "finetune" / "checkpoints"
    _wait(
        lambda: any((p / "trainer_state.json").exists() for p in ckpt_root.glob("checkpoint-*")),
        timeout=180,
        what="a first checkpoint",
    )
    assert len(_workers(job["id"])) == 3  # torchrun and its two workers
    os.kill(parse_json(cli("jobs", "show", job["id"], "--json"))["pid"], signal.SIGKILL)
    _wait(lambda: not _workers(job["id"]), timeout=60, what="the training processes to stop with their runner")
    shown = parse_json(cli("jobs", "show", job["id"], "--json"))
    assert shown["status"] == "failed" and shown["error"]["code"] == "runner_died"
    killed_at = max(c["step_number"] for c in shown["checkpoints"])
    assert 0 < killed_at < 120

    result = cli("jobs", "resume", job["id"], "--stream", "--json", timeout=300)
    assert exact(JobSummary, parse_json(result))["status"] == "succeeded", result.stderr
    assert "launching 2 training processes" in result.stderr and "packing: on (job config" in result.stderr
    final = parse_json(cli("jobs", "show", job["id"], "--json"))
    finetune = next(s for s in final["steps"] if s["name"] == "finetune")
    assert finetune["outputs"]["metrics"]["processes"] == 2
    assert finetune["outputs"]["metrics"]["global_steps"] == 120
    events = final["events"]
    resumed_at = next(i for i, e in enumerate(events) if e["message"].startswith("resume requested"))
    after = [e["data"]["step"] for e in events[resumed_at:] if e["type"] == "metrics"]
    assert after[0] == killed_at + 1 and after[-1] == 120

    # The adapter saved under DDP: present, trained (LoRA B starts at zero), and loadable onto the base.
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    adapter = Path(final["outputs"]["trained_model"])
    tensors = load_file(adapter / "adapter_model.safetensors")
    lora_b = [t for name, t in tensors.items() if "lora_B" in name]
    assert lora_b and all(t.numel() > 0 for t in tensors.values())
    assert any(bool(torch.any(t != 0)) for t in lora_b)
    base = next(s for s in final["steps"] if s["name"] == "model_import")["outputs"]["path"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter))
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert len(loaded) == len(lora_b)
    assert not _workers(job["id"])
