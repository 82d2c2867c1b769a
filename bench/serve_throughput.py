"""Serving throughput: chattune's batching instance vs a one-request-at-a-time transformers server, same run.

    python bench/serve_throughput.py [--clients 16] [--requests-per-client 6] [--max-tokens 64] [--quick] [--json]

Both servers are real processes on loopback serving SmolLM2-135M-Instruct (the embedded default, imported into
the workspace once) with greedy decoding, so they generate the same tokens:

- chattune: `python -m chattune.serving.instance` (the process a deployment runs; dynamic batching);
- baseline: a FastAPI app that answers each request with one `model.generate` call under a lock, the way MLflow's
  scoring server serves a transformers model (one request at a time).

Each is driven by the same closed loop of `--clients` concurrent clients sending OpenAI chat completions (prompts
from the demo data, so lengths vary) and, before that, by one client alone (the lone-request latency). Reported:
generated tokens/s, latency p50/p95, and for chattune the time from process start to ready (loaded and warmed).
`--json` prints one document with keys `chattune`, `baseline`, `ratio_tokens_per_s` (chattune / baseline tokens/s
under load) and `p50_ratio` (chattune's p50 under load / its lone-request p50).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

# The instance answers the bearer of its gateway's token only; here this script stands in for the gateway. The
# baseline server ignores the header.
TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}

BASELINE_APP = """
import sys, threading, time
import torch, uvicorn
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, sys.argv[3])).eval()
lock = threading.Lock()
app = FastAPI()

@app.get("/health/ready")
def ready():
    return {"status": "ready"}

@app.post("/v1/chat/completions")
def chat(body: dict):
    ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with lock, torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:]
    text = tok.decode(new, skip_special_tokens=True)
    n = int((new != tok.eos_token_id).sum())
    return {"choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": n}}

uvicorn.run(app, fd=int(sys.argv[2]), log_level="warning")
"""


def prompts(n: int) -> list[list[dict[str, str]]]:
    from chattune.data import demo

    rows = demo.generate(rows=max(n, 8))["test_gen"]
    return [[m for m in row["messages"] if m["role"] != "assistant"][:2] for row in rows][:n]


async def drive(
    url: str, clients: int, per_client: int, max_tokens: int, convs: list[Any], headers: dict[str, str] = AUTH
) -> dict[str, Any]:
    """``clients`` concurrent clients, ``per_client`` chat completions each at ``url``: tokens/s and latency."""
    latencies: list[float] = []
    tokens = 0
    errors = 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        for j in range(per_client):
            messages = convs[(index * per_client + j) % len(convs)]
            started = time.perf_counter()
            r = await http.post(
                f"{url}/v1/chat/completions",
                json={"messages": messages, "max_tokens": max_tokens, "temperature": 0},
                timeout=600,
            )
            if r.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            tokens += r.json()["usage"]["completion_tokens"]

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=clients + 4), headers=headers) as http:
        started = time.perf_counter()
        await asyncio.gather(*(client(i, http) for i in range(clients)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "generated_tokens": tokens,
        "wall_s": round(wall, 2),
        "tokens_per_s": round(tokens / wall, 1),
        "p50_s": round(statistics.median(latencies), 3),
        "p95_s": round(latencies[int(0.95 * (len(latencies) - 1))], 3),
    }


def start(kind: str, model_path: str, log: Path, dtype: str) -> tuple[int, str, float]:
    from chattune import processes
    from chattune.entities import DeploymentSettings
    from chattune.serving.instance import SETTINGS_ENV
    from chattune.serving.keys import INSTANCE_TOKEN_ENV

    started = time.perf_counter()
    if kind == "chattune":
        args = ["--base", model_path, "--name", "smollm2", "--base-name", "smollm2"]
        settings = DeploymentSettings(max_new_tokens_cap=4096, max_batch_size=32)
        env = {INSTANCE_TOKEN_ENV: TOKEN, SETTINGS_ENV: settings.model_dump_json()}
        pid, port = processes.spawn("chattune.serving.instance", args, log, env=env)
    else:
        script = log.parent / "baseline_app.py"
        script.write_text(BASELINE_APP)
        pid, port = _spawn_script(script, model_path, log, dtype)
    url = f"http://127.0.0.1:{port}"
    processes.wait_until_ready(f"{url}/health/ready", pid, log, 300)
    return pid, url, time.perf_counter() - started


def _mean_batch(url: str) -> float:
    """Sequences per batch over the whole run, from the instance's own /metrics."""
    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("chattune_batch_size_"))
    return round(float(values["chattune_batch_size_sum"]) / max(1.0, float(values["chattune_batch_size_count"])), 2)


def _spawn_script(script: Path, model_path: str, log: Path, dtype: str) -> tuple[int, int]:
    import socket
    import subprocess

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, str(script), model_path, str(sock.fileno()), dtype],
            pass_fds=(sock.fileno(),),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    sock.close()
    return proc.pid, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--lone-requests", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="fewer requests and tokens: under 3 minutes")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests_per_client, args.max_tokens, args.lone_requests = 2, 32, 3

    from chattune import processes
    from chattune.catalog.importer import import_model
    from chattune.workspace import Workspace

    ws = Workspace()
    model_path = import_model(ws.settings, ws.store, "smollm2-135m-instruct").path
    convs = prompts(args.clients * args.requests_per_client)
    from chattune.inference import inference_dtype, pick_device

    # The baseline gets the dtype chattune picks here (bf16 on CPUs with native bf16), so the ratio is batching's.
    dtype = str(inference_dtype(pick_device())).removeprefix("torch.")
    result: dict[str, Any] = {"model": "smollm2-135m-instruct", "max_tokens": args.max_tokens, "dtype": dtype}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("chattune", "baseline"):
            pid, url, ready_s = start(kind, model_path, Path(tmp) / f"{kind}.log", dtype)
            try:
                lone = asyncio.run(drive(url, 1, args.lone_requests, args.max_tokens, convs))
                loaded = asyncio.run(drive(url, args.clients, args.requests_per_client, args.max_tokens, convs))
                if kind == "chattune":
                    loaded["mean_batch_size"] = _mean_batch(url)
            finally:
                processes.stop(pid)
            result[kind] = {"ready_s": round(ready_s, 1), "lone": lone, "load": loaded}
    chattune, baseline = result["chattune"], result["baseline"]
    result["ratio_tokens_per_s"] = round(chattune["load"]["tokens_per_s"] / baseline["load"]["tokens_per_s"], 2)
    result["p50_ratio"] = round(chattune["load"]["p50_s"] / chattune["lone"]["p50_s"], 2)
    if args.json:
        print(json.dumps(result))
        return
    for kind in ("chattune", "baseline"):
        r = result[kind]
        print(
            f"{kind:9} ready {r['ready_s']:5.1f}s | lone p50 {r['lone']['p50_s']:.2f}s | "
            f"{args.clients} clients: {r['load']['tokens_per_s']:7.1f} tok/s, p50 {r['load']['p50_s']:.2f}s, "
            f"p95 {r['load']['p95_s']:.2f}s, errors {r['load']['errors']}"
        )
    print(f"tokens/s ratio {result['ratio_tokens_per_s']}x; p50 under load / lone p50 {result['p50_ratio']}x")


if __name__ == "__main__":
    main()
