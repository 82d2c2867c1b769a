"""The Ray launcher's world of one: a 1-worker Ray Train run trains as the local runner does, without DDP.

Ray Train gives every worker a process group and ``LOCAL_RANK``; Accelerate (under the HF Trainer) then wraps the model
in ``DistributedDataParallel`` even for a world of one. Each case runs in a fresh interpreter, since Accelerate's
state is a process-wide singleton: the worker's environment as Ray Train leaves it (a gloo group of one on loopback,
its variables set), then the Trainer's arguments and Accelerate's ``prepare`` of a model, with and without
``_leave_world_of_one``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from chattune.compute.ray_cluster import free_port

SCRIPT = """
import json, os, sys
import torch
import torch.distributed as dist

port = sys.argv[1]
os.environ.update(LOCAL_RANK="0", RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", NODE_RANK="0")
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
if sys.argv[2] == "leave":
    from chattune.pipeline.ray_launch import _leave_world_of_one

    _leave_world_of_one()
from accelerate import Accelerator
from transformers import TrainingArguments

args = TrainingArguments(output_dir=sys.argv[3], use_cpu=True, report_to=[])
model = Accelerator(cpu=True).prepare(torch.nn.Linear(2, 2))
print(json.dumps({
    "parallel_mode": str(args.parallel_mode),
    "world_size": args.world_size,
    "wrapped": type(model).__name__,
    "group": dist.is_initialized(),
}))
"""


@pytest.mark.parametrize("mode", ["leave", "keep"])
def test_a_world_of_one_trains_without_a_process_group_or_ddp(mode: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(free_port()), mode, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["world_size"] == 1
    if mode == "leave":
        assert seen["parallel_mode"] == "ParallelMode.NOT_PARALLEL" and seen["wrapped"] == "Linear"
        assert seen["group"] is False
    else:  # what Ray Train's environment alone gives: the model in DDP over a group of one
        assert seen["parallel_mode"] == "ParallelMode.DISTRIBUTED" and seen["wrapped"] == "DistributedDataParallel"
