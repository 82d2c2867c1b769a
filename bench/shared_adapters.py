"""Memory of N LoRA adapters of one base: one instance that shares the base vs one instance per adapter.

What `deployments create --share-base-with` does: the host deployment's instance loads each sharing deployment's
adapter while it serves (the instance's ``PUT /adapters/{name}``, as the gateway calls it), so N adapters cost one
base plus N adapters. Here, on SmolLM2-135M-Instruct (the embedded default) with random LoRA adapters of the shape
chattune's LoRA jobs train (r 8 on every linear layer of the blocks; weights do not change memory):

- shared: one real instance process (chattune.serving.instance) with adapter 1, then adapters 2..N added;
- separate: N instance processes, one adapter each (N deployments without sharing).

Memory is each process's proportional set size (PSS: pages that several processes map, shared libraries and the
base's weights mapped from the same safetensors file, are split between them, so the sum over processes is what they
cost together), read after each has answered one request per adapter; "1 adapter" is the shared instance before
the others are added, alone on the machine.
The shared instance's greedy answers are checked token for token against each adapter's own instance.

    .venv/bin/python bench/shared_adapters.py [--adapters 4] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when run with PYTHONSAFEPATH set
from runinfo import describe, run_info, spread

TOKEN = "bench-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROMPT = [{"role": "user", "content": "Convert this date to ISO 8601: May 1, 2020"}]


def make_adapters(base: str, root: Path, n: int) -> list[str]:
    """``n`` random LoRA adapters of ``base`` (PEFT's layout), r 8 on every linear layer of the blocks."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = []
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base)
        config = LoraConfig(
            r=8,
            lora_alpha=16,
            target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            init_lora_weights=False,
        )
        path = root / f"adapter-{i + 1}"
        get_peft_model(model, config).save_pretrained(str(path))
        paths.append(str(path))
    return paths


def start(base: str, adapter: str, name: str, log: Path) -> tuple[int, str]:
    from chattune import processes
    from chattune.serving.keys import INSTANCE_TOKEN_ENV

    args = ["--base", base, "--adapter", adapter, "--name", name, "--base-name", "smollm2"]
    pid, port = processes.spawn("chattune.serving.instance", args, log, env={INSTANCE_TOKEN_ENV: TOKEN})
    url = f"http://127.0.0.1:{port}"
    processes.wait_until_ready(f"{url}/health/ready", pid, log, 300)
    return pid, url


def answer(url: str, model: str) -> str:
    body = {"model": model, "messages": PROMPT, "max_tokens": 16, "temperature": 0}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=120)
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"])


def pss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_full_info().pss / 2**20


def one_run(base: str, adapters: list[str], tmp: Path) -> dict[str, Any]:
    from chattune import processes

    names = [f"adapter-{i + 1}:1" for i in range(len(adapters))]
    result: dict[str, Any] = {}
    pids: list[int] = []
    try:
        # separate: one instance per adapter, all running at once (N deployments)
        alone = {}
        urls = []
        for name, path in zip(names, adapters, strict=True):
            pid, url = start(base, path, name, tmp / f"{name}.log")
            pids.append(pid)
            urls.append(url)
            alone[name] = answer(url, name)
        result["separate_mb"] = sum(pss_mb(pid) for pid in pids)
        for pid in pids:
            processes.stop(pid)
        pids.clear()

        # shared: adapter 1's instance, then the others added while it serves
        pid, url = start(base, adapters[0], names[0], tmp / "shared.log")
        pids.append(pid)
        shared = {names[0]: answer(url, names[0])}
        result["one_adapter_mb"] = pss_mb(pid)  # alone on the machine: its PSS is all it costs
        for name, path in zip(names[1:], adapters[1:], strict=True):
            started = time.perf_counter()
            r = httpx.put(f"{url}/adapters/{name}", json={"path": path}, headers=AUTH, timeout=120)
            r.raise_for_status()
            result.setdefault("add_s", []).append(time.perf_counter() - started)
            shared[name] = answer(url, name)
        result["shared_mb"] = pss_mb(pid)
        result["same_answers"] = shared == alone
        result["distinct_answers"] = len(set(alone.values()))
    finally:
        for pid in pids:
            processes.stop(pid)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from chattune.catalog.importer import import_model
    from chattune.workspace import Workspace

    ws = Workspace()
    base = import_model(ws.settings, ws.store, "smollm2-135m-instruct").path
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(base, Path(tmp), args.adapters)
        for _ in range(args.repeats):
            runs.append(one_run(base, adapters, Path(tmp)))

    def stats(key: str) -> dict[str, float]:
        return spread([r[key] for r in runs], 1)

    result = {
        **run_info(),
        "model": "smollm2-135m-instruct",
        "adapters": args.adapters,
        "repeats": args.repeats,
        "one_adapter_mb": stats("one_adapter_mb"),
        "shared_mb": stats("shared_mb"),
        "separate_mb": stats("separate_mb"),
        "add_adapter_s": spread([s for r in runs for s in r["add_s"]]),
        "same_answers": all(r["same_answers"] for r in runs),
        "distinct_answers": min(r["distinct_answers"] for r in runs),
    }
    result["shared_vs_separate"] = round(result["shared_mb"]["median"] / result["separate_mb"]["median"], 3)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    n = args.adapters
    print(describe(result))
    print(f"{n} LoRA adapters of SmolLM2-135M-Instruct, {args.repeats} runs (PSS, MB, median)")
    print(f"  one instance, 1 adapter:        {result['one_adapter_mb']['median']:8.1f}")
    print(f"  one instance, {n} adapters:       {result['shared_mb']['median']:8.1f}  (shared base)")
    print(f"  {n} instances, 1 adapter each:    {result['separate_mb']['median']:8.1f}")
    print(
        f"  shared / separate: {result['shared_vs_separate']}; adding an adapter: {result['add_adapter_s']['median']} s"
    )
    print(f"  shared answers equal each adapter's own instance: {result['same_answers']} "
          f"({result['distinct_answers']} distinct answers)")  # fmt: skip


if __name__ == "__main__":
    main()
