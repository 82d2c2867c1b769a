"""What Ray costs: the same SmolLM2 job locally and on a 1-worker Ray target, and serving through Ray Serve vs local.

    python bench/ray_overhead.py [--steps N] [--repeats 2] [--clients 16] [--quick] [--json]

Everything runs through the real CLI in a throwaway workspace (``CHATTUNE_HOME`` in a temp dir; the embedded
SmolLM2-135M-Instruct comes from the user cache, fetched once):

1. ``chattune compute start-ray bench --workers 0 --cpus-per-node C`` (C: this machine's cores): one Ray node with
   every core, so that the one Ray Train worker (``resources.cpus_per_process: C``) and the Ray Serve replica
   (``--cpus-per-instance C``) get as many torch threads as the local process does (Ray sets ``OMP_NUM_THREADS``
   from the CPUs it reserves).
2. Training: the SmolLM2 job that ``chattune quickstart`` (``make demo``) runs (its recipe: the demo dataset's 400
   rows, LoRA, one epoch at batch 8 = 50 steps), with seed 7, no checkpoints and ``force_rerun``, or only its first
   ``--steps`` steps, with ``compute: local`` (one process) and with ``compute: bench`` (one Ray Train worker),
   alternated, ``--repeats`` times each. Per run: the finetune step's wall time (model load, Ray Train start-up,
   training, saving) and the Trainer's own ``train_runtime_s``. ``train_overhead`` = (median Ray finetune - median
   local finetune) / median local ``train_runtime_s``: the wall time Ray adds, as a fraction of the training time
   (goal <= 0.10).
3. Serving: the local job's adapter registered, one endpoint, two deployments of it with the same settings
   (1 instance, ``--clients`` max concurrent requests, the same engine batch): ``local`` (an instance process) and
   ``ray`` (a Ray Serve replica, ``--compute bench``). ``--clients`` concurrent clients send OpenAI chat
   completions (greedy, ``--max-tokens``) through the endpoint's gateway with its key, to one deployment then the
   other by the ``azureml-model-deployment`` header, ``--repeats`` times each, alternated. ``serve_ratio`` = median
   Ray tokens/s / median local tokens/s (goal >= 0.8).

Then the endpoint is deleted (the Serve application with it), the cluster stopped, the temp dir removed.
``--quick``: 12 steps, 1 repeat, 2 requests per client (a smoke run: the figures are noisy).
``--json`` prints one document with ``train_overhead``, ``serve_ratio`` and the runs they come from.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import run_info
from serve_throughput import drive, prompts

MODEL = "smollm2-135m-instruct"
# What the benchmark changes in the quickstart job: a fixed seed, no checkpoints, a token evaluation (not measured),
# and a rerun every time.
OVERRIDES: dict[str, Any] = {
    "experiment_name": "ray-overhead",
    "training": {"seed": 7, "save_strategy": "no", "evaluation_strategy": "no"},
    "evaluation": {"max_rows": 2, "max_new_tokens": 2},
    "settings": {"force_rerun": True},
}


def job_yaml(steps: int | None, compute: dict[str, Any]) -> str:
    """The quickstart job for SmolLM2 (``chattune quickstart``'s recipe), or its first ``steps`` steps."""
    from chattune.quickstart import load_recipe

    job = load_recipe(MODEL).job
    for section, values in OVERRIDES.items():
        job[section] = {**job.get(section, {}), **values} if isinstance(values, dict) else values
    if steps:
        job["training"]["max_steps"] = steps
    data = {"train": "data/train_sft.jsonl", "test": "data/test_sft.jsonl"}
    return yaml.safe_dump({"model": MODEL, "data": data, **job, **compute}, sort_keys=False)


class Cli:
    """The real `chattune` CLI in child processes, against one throwaway workspace."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "CHATTUNE_HOME": str(home), "CHATTUNE_CREDENTIALS_PATH": str(home / "keys.json")}

    def __call__(self, *args: str, timeout: float = 1800, json_doc: bool = True) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "chattune.cli.main", *args, *(["--json"] if json_doc else [])],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise SystemExit(f"chattune {' '.join(args)}: exit {done.returncode}\n{done.stderr[-3000:]}")
        return json.loads(done.stdout) if json_doc else done.stdout


def train(cli: Cli, job_file: Path) -> dict[str, Any]:
    """One job; its finetune step's wall time and the Trainer's training time."""
    started = time.perf_counter()
    job = cli("jobs", "create", "-f", str(job_file), "--stream")
    wall = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise SystemExit(f"job {job['id']} {job['status']}")
    shown = cli("jobs", "show", job["id"])
    finetune = next(s for s in shown["steps"] if s["name"] == "finetune")
    return {
        "job": job["id"],
        "job_wall_s": round(wall, 1),
        "finetune_s": round(finetune["duration_s"], 1),
        "train_runtime_s": finetune["outputs"]["metrics"]["train_runtime_s"],
        "train_loss": finetune["outputs"]["metrics"]["train_loss"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=None, help="only the first N steps (default: the whole job)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="12 steps, 1 repeat, 2 requests per client")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.steps, args.repeats, args.requests_per_client = 12, 1, 2
    cpus = os.cpu_count() or 1
    home = Path(tempfile.mkdtemp(prefix="chattune-ray-bench-"))
    cli = Cli(home)
    from chattune.data import demo
    from chattune.quickstart import load_recipe

    rows = load_recipe(MODEL).rows
    result: dict[str, Any] = {"model": MODEL, "rows": rows, "steps": args.steps, "cpus": cpus} | run_info()
    demo.write(home / "data", rows=rows)
    started = endpoint = False
    try:
        cli("compute", "start-ray", "bench", "--workers", "0", "--cpus-per-node", str(cpus))
        started = True
        local, on_ray = home / "local.yaml", home / "ray.yaml"
        local.write_text(job_yaml(args.steps, {"compute": "local"}))
        ray_resources = {"instance_count": 1, "cpus_per_process": cpus}
        on_ray.write_text(job_yaml(args.steps, {"compute": "bench", "resources": ray_resources}))
        runs: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            runs["local"].append(train(cli, local))
            runs["ray"].append(train(cli, on_ray))
        median = {
            k: {m: statistics.median(r[m] for r in v) for m in ("finetune_s", "train_runtime_s")}
            for k, v in runs.items()
        }
        result["train"] = {"runs": runs, "median": median}
        result["train_overhead"] = round(
            (median["ray"]["finetune_s"] - median["local"]["finetune_s"]) / median["local"]["train_runtime_s"], 3
        )

        model = cli("models", "register", "--job", runs["local"][0]["job"], "--name", "bench-model")
        keys = cli("endpoints", "create", "bench-ep")["keys"]
        endpoint = True
        ref = f"bench-model:{model['version']}"
        same = ["--instances", "1", "--max-concurrent", str(args.clients), "--request-timeout-ms", "180000"]
        deploy = ["deployments", "create", "--endpoint", "bench-ep", "--model", ref, *same]
        cli(*deploy, "--name", "local")
        cli(*deploy, "--name", "ray", "--compute", "bench", "--cpus-per-instance", str(cpus))
        base = cli("endpoints", "show", "bench-ep")["scoring_uri"].removesuffix("/score")
        convs = prompts(args.clients * args.requests_per_client)
        serving: dict[str, list[dict[str, Any]]] = {"local": [], "ray": []}
        for _ in range(args.repeats):
            for name in ("local", "ray"):
                headers = {"Authorization": f"Bearer {keys['primary_key']}", "azureml-model-deployment": name}
                load = drive(base, args.clients, args.requests_per_client, [args.max_tokens], convs, headers)
                serving[name].append(asyncio.run(load))
        tokens = {k: statistics.median(r["tokens_per_s"] for r in v) for k, v in serving.items()}
        result["serve"] = {"runs": serving, "median_tokens_per_s": tokens, "clients": args.clients}
        result["serve_ratio"] = round(tokens["ray"] / tokens["local"], 3)
    finally:
        if endpoint:  # its gateway and instances, the Serve application with them, also after a failure
            with contextlib.suppress(SystemExit):
                cli("endpoints", "delete", "bench-ep", json_doc=False)
        if started:
            subprocess.run(
                [sys.executable, "-m", "chattune.cli.main", "compute", "stop-ray", "bench"],
                env=cli.env,
                check=False,
                stdout=sys.stderr,  # stdout carries the --json document only
            )
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    for kind in ("local", "ray"):
        m = result["train"]["median"][kind]
        print(f"train {kind:5}: finetune {m['finetune_s']:.1f}s (training {m['train_runtime_s']:.1f}s)")
    print(f"train_overhead {result['train_overhead']:.3f} of the training time (goal <= 0.10)")
    for kind, value in result["serve"]["median_tokens_per_s"].items():
        print(f"serve {kind:5}: {value:.1f} tokens/s at {args.clients} clients")
    print(f"serve_ratio {result['serve_ratio']:.3f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
