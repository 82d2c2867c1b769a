"""Serving throughput: chattune's batching instance vs two transformers servers, same run.

    python bench/serve_throughput.py [--clients 16] [--requests-per-client 6] [--max-tokens 64] [--repeats 3]
                                     [--turns 1] [--range-ratio 0] [--quick] [--json]

The servers are real processes on loopback serving SmolLM2-135M-Instruct (the embedded default, imported into
the workspace once) with greedy decoding in the same dtype:

- chattune: `python -m chattune.serving.instance` (the process a deployment runs; continuous batching);
- batched: the strong baseline, HF `generate` over dynamic batches: the requests that arrived while a batch
  generated are left-padded into the next `generate` call (up to 32, chattune's batch size here);
- baseline: a FastAPI app that answers each request with one `model.generate` call, one request at a time in one
  worker thread, the way MLflow's scoring server serves a transformers model.

- chattune_no_prefix_cache: chattune with its prefix cache off (`prefix_cache_mb: 0`), so the cache's worth is
  measured in the same run.
- chattune_plain_linear (with `--plain-linear`): chattune with transformers' own linear layers
  (`CHATTUNE_PACKED_LINEAR=0`), so what packing the weights for oneDNN is worth is measured in the same run.

With `--range-ratio R` (0 <= R < 1) answers vary in length, as in real chat traffic: each request asks for a
`max_tokens` drawn uniformly from [max_tokens * (1 - R), max_tokens * (1 + R)] (vLLM's `--random-range-ratio`),
seeded, so every server gets the same requests. With 0 (the default) every request asks for `--max-tokens` and the
clients move in lockstep. The lone requests always ask for `--max-tokens` (the middle of the range), so the lone p50
is that of an answer of the loaded requests' median length.

With `--turns N` (N > 1) the traffic is multi-turn chat: each client holds conversations of N turns and resends the
history (its questions and the server's answers) with each new question. Each repeat sends conversations of its own.

All the servers are started first; then each repeat drives each of them in turn (a different one first each time), so
machine noise hits all of them. Figures are min/median/max over the repeats; ratios are taken run by run.

Each is driven by the same closed loop of `--clients` concurrent clients sending OpenAI chat completions (prompts
from the demo data, so lengths vary) and, before that, by one client alone (the lone-request latency). Reported:
generated tokens/s, latency p50/p95, and for chattune the time from process start to ready (loaded and warmed).
`--json` prints one document with the commit, versions and machine, keys `chattune`, `batched`, `baseline`,
`ratio_tokens_per_s` (chattune / one-at-a-time tokens/s under load), `ratio_vs_batched` (chattune / batched) and
`p50_ratio` (chattune's p50 under load / its lone-request p50); chattune's `cached_prompt_share` (prompt tokens
whose keys and values came from its prefix cache) and `ratio_prefix_cache` (chattune / chattune with the cache
off); with `--plain-linear`, `ratio_packed_linear` (chattune / chattune_plain_linear).

What the machine allows, from chattune's own `/metrics` (`chattune_decode_step_seconds` by rows) in each run: its
1-row decoding steps during the lone requests and its `--clients`-row steps under load give `step_ratio` (the
`clients`-row step over the 1-row step: what `p50_ratio` would be from decoding alone) and `batching_bound` (clients
x the 1-row step over the clients-row step: the most tokens/s that batching can gain over answering one request at
a time, before any prompt is computed).
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when run with PYTHONSAFEPATH set
from runinfo import describe, run_info, spread

# The instance answers the bearer of its gateway's token only; here this script stands in for the gateway. The
# baseline server ignores the header.
TOKEN = secrets.token_urlsafe(32)
AUTH = {"Authorization": f"Bearer {TOKEN}"}

BASELINE_APP = """
import asyncio, sys
from concurrent.futures import ThreadPoolExecutor
import torch, uvicorn
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, sys.argv[3])).eval()
# One worker thread runs every request, one after the other. A lock over FastAPI's thread pool would let each of its
# threads call torch in turn, and each calling thread gets an OpenMP team of its own, whose idle threads spin on the
# same cores as the working one: under 16 clients that made this baseline 1.6x slower than a lone request.
worker = ThreadPoolExecutor(max_workers=1)
app = FastAPI()

@app.get("/health/ready")
def ready():
    return {"status": "ready"}

def answer(body):
    ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:]
    text = tok.decode(new, skip_special_tokens=True)
    n = int((new != tok.eos_token_id).sum())
    return {"choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": n}}

@app.post("/v1/chat/completions")
async def chat(body: dict):
    return await asyncio.get_running_loop().run_in_executor(worker, answer, body)

uvicorn.run(app, fd=int(sys.argv[2]), log_level="warning")
"""

# The strong baseline: HF `generate` over dynamic batches. Requests that arrive while a batch generates wait; when it
# ends, every waiting request (up to 32, chattune's batch size here) is left-padded into the next `generate` call.
BATCHED_APP = """
import asyncio, sys
import torch, uvicorn
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path, padding_side="left")
tok.pad_token = tok.pad_token or tok.eos_token
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, sys.argv[3])).eval()
eos = set(model.generation_config.eos_token_id if isinstance(model.generation_config.eos_token_id, list)
          else [model.generation_config.eos_token_id, tok.eos_token_id])
app = FastAPI()
waiting = []
wake = asyncio.Event()

def generate(batch):
    texts = [tok.apply_chat_template(b["messages"], add_generation_prompt=True, tokenize=False) for b, _ in batch]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max(b["max_tokens"] for b, _ in batch), do_sample=False,
                             pad_token_id=tok.pad_token_id)
    answers = []
    for row, (body, _) in zip(out[:, enc["input_ids"].shape[1]:].tolist(), batch):
        row = row[:body["max_tokens"]]
        n = next((i for i, t in enumerate(row) if t in eos), len(row))
        prompt = int(enc["attention_mask"][len(answers)].sum())
        answers.append((tok.decode(row[:n], skip_special_tokens=True), n, prompt))
    return answers

async def scheduler():
    loop = asyncio.get_running_loop()
    while True:
        while not waiting:
            wake.clear()
            await wake.wait()
        batch, waiting[:] = waiting[:32], waiting[32:]
        for (_, fut), answer in zip(batch, await loop.run_in_executor(None, generate, batch)):
            fut.set_result(answer)

@app.on_event("startup")
async def start():
    asyncio.get_running_loop().create_task(scheduler())

@app.get("/health/ready")
def ready():
    return {"status": "ready"}

@app.post("/v1/chat/completions")
async def chat(body: dict):
    fut = asyncio.get_running_loop().create_future()
    waiting.append((body, fut))
    wake.set()
    text, n, prompt = await fut
    return {"choices": [{"message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": n}}

uvicorn.run(app, fd=int(sys.argv[2]), log_level="warning")
"""


def prompts(n: int) -> list[list[dict[str, str]]]:
    from chattune.data import demo

    rows = demo.generate(rows=max(5 * n, 50))["test_gen"]  # the held-out split is a fifth of the size asked for
    convs = [[m for m in row["messages"] if m["role"] != "assistant"][:2] for row in rows][:n]
    assert len(convs) == n, f"the demo data gave {len(convs)} prompts, not {n}"
    return convs


def lengths(n: int, max_tokens: int, range_ratio: float, seed: int = 0) -> list[int]:
    """``n`` answer lengths to ask for: ``max_tokens`` each, or drawn from max_tokens * [1 - r, 1 + r], seeded."""
    import random

    draw = random.Random(seed)
    low, high = round(max_tokens * (1 - range_ratio)), round(max_tokens * (1 + range_ratio))
    return [draw.randint(max(1, low), max(1, high)) for _ in range(n)]


async def drive(
    url: str,
    clients: int,
    per_client: int,
    max_tokens: list[int],
    convs: list[Any],
    headers: dict[str, str] = AUTH,
    turns: int = 1,
) -> dict[str, Any]:
    """``clients`` concurrent clients, ``per_client`` chat completions each at ``url``: tokens/s and latency.

    Request ``k`` (client ``k // per_client``) sends ``convs[k]`` asking for ``max_tokens[k]`` tokens.

    With ``turns`` > 1 each client holds conversations of that many turns: a request sends the conversation so far
    (earlier questions and the server's own answers) and the next question, as a chat client does.
    """
    latencies: list[float] = []
    tokens = 0
    errors = 0

    async def client(index: int, http: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        history: list[dict[str, str]] = []
        for j in range(per_client):
            k = index * per_client + j
            messages = convs[k % len(convs)]
            if turns > 1:
                history = [*(history if j % turns else []), messages[-1]]
                messages = history
            started = time.perf_counter()
            r = await http.post(
                f"{url}/v1/chat/completions",
                json={"messages": messages, "max_tokens": max_tokens[k % len(max_tokens)], "temperature": 0},
                timeout=600,
            )
            if r.status_code != 200:
                errors += 1
                history = []
                continue
            latencies.append(time.perf_counter() - started)
            body = r.json()
            tokens += body["usage"]["completion_tokens"]
            history = [*history, {"role": "assistant", "content": body["choices"][0]["message"]["content"]}]

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
    if kind.startswith("chattune"):
        args = ["--base", model_path, "--name", "smollm2", "--base-name", "smollm2"]
        settings = DeploymentSettings(max_new_tokens_cap=4096, max_batch_size=32)
        if kind == NO_CACHE:
            settings.prefix_cache_mb = 0
        env = {INSTANCE_TOKEN_ENV: TOKEN, SETTINGS_ENV: settings.model_dump_json()}
        if kind == PLAIN_LINEAR:
            env["CHATTUNE_PACKED_LINEAR"] = "0"
        pid, port = processes.spawn("chattune.serving.instance", args, log, env=env)
    else:
        script = log.parent / f"{kind}_app.py"
        script.write_text(BATCHED_APP if kind == "batched" else BASELINE_APP)
        pid, port = _spawn_script(script, model_path, log, dtype)
    url = f"http://127.0.0.1:{port}"
    processes.wait_until_ready(f"{url}/health/ready", pid, log, 300)
    return pid, url, time.perf_counter() - started


def _samples(url: str) -> list[Any]:
    """The instance's own /metrics as samples (name, labels, value), read by prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", headers=AUTH, timeout=10).text
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def _metrics(url: str) -> dict[str, float]:
    """The instance's own /metrics, sample name -> value (unlabelled samples)."""
    return {s.name: s.value for s in _samples(url) if s.name.startswith("chattune_") and not s.labels}


def _steps(url: str) -> dict[int, tuple[float, float]]:
    """The instance's decoding steps so far (no prompt in them): rows -> (seconds in all, steps), from /metrics."""
    found: dict[int, dict[str, float]] = {}
    for s in _samples(url):
        if s.name in ("chattune_decode_step_seconds_sum", "chattune_decode_step_seconds_count"):
            found.setdefault(int(s.labels["rows"]), {})[s.name.rsplit("_", 1)[1]] = s.value
    return {rows: (parts["sum"], parts["count"]) for rows, parts in found.items()}


def step_times(before: dict[int, tuple[float, float]], after: dict[int, tuple[float, float]]) -> dict[int, float]:
    """Mean decoding-step seconds by rows, over the steps taken between two ``_steps`` readings."""
    means = {}
    for rows, (total, count) in after.items():
        earlier_total, earlier_count = before.get(rows, (0.0, 0.0))
        if count > earlier_count:
            means[rows] = (total - earlier_total) / (count - earlier_count)
    return means


def step_bounds(lone: dict[int, float], load: dict[int, float], clients: int) -> dict[str, Any] | None:
    """What this machine's step costs allow batching, from one run's lone and loaded decoding steps.

    ``step_ratio``: a step of ``rows`` rows (``clients``, else the most seen under load) over a 1-row step, what the
    p50 ratio would be from decoding alone; ``batching_bound``: ``rows`` x the 1-row step over the ``rows``-row step,
    the most tokens/s batching can gain over answering one request at a time, before any prompt is computed.
    """
    if 1 not in lone or not load:
        return None
    rows = clients if clients in load else max(load)
    return {
        "rows": rows,
        "step_1_ms": round(1000 * lone[1], 1),
        "step_rows_ms": round(1000 * load[rows], 1),
        "step_ratio": round(load[rows] / lone[1], 3),
        "batching_bound": round(rows * lone[1] / load[rows], 2),
    }


def _mean_batch(url: str) -> float:
    """Sequences per batch over the whole run, from the instance's own /metrics."""
    values = _metrics(url)
    return round(values["chattune_batch_size_sum"] / max(1.0, values["chattune_batch_size_count"]), 2)


def _cached_share(url: str) -> float:
    """The share of prompt tokens whose keys and values came from the prefix cache, over the whole run."""
    values = _metrics(url)
    return round(values["chattune_cached_prompt_tokens_total"] / max(1.0, values["chattune_prompt_tokens_total"]), 3)


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


NO_CACHE = "chattune_no_prefix_cache"  # chattune with its prefix cache off: what the cache is worth, same run
PLAIN_LINEAR = "chattune_plain_linear"  # chattune with transformers' own linear layers (--plain-linear)
KINDS = ("chattune", "batched", "baseline", NO_CACHE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--lone-requests", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, interleaved")
    parser.add_argument("--quick", action="store_true", help="fewer requests and tokens: about 5 minutes")
    parser.add_argument(
        "--turns",
        type=int,
        default=1,
        help="conversations of this many turns per client (each request resends the history); > 1 also runs "
        "chattune with its prefix cache off",
    )
    parser.add_argument(
        "--model",
        choices=["smollm2-135m-instruct", "tiny-test"],
        default="smollm2-135m-instruct",
        help="tiny-test: the catalog's tiny random model, a dry run of the benchmark's code (not a measurement)",
    )
    parser.add_argument(
        "--range-ratio",
        type=float,
        default=0.0,
        help="answers of varied lengths: each request's max_tokens drawn from max_tokens * [1 - R, 1 + R]",
    )
    parser.add_argument(
        "--plain-linear",
        action="store_true",
        help="also run chattune with transformers' own linear layers (CHATTUNE_PACKED_LINEAR=0)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.requests_per_client, args.max_tokens, args.lone_requests = 2, 32, 3
    if args.turns < 1:
        parser.error("--turns: at least 1")
    if not 0 <= args.range_ratio < 1:
        parser.error(f"--range-ratio: from 0 up to (not including) 1, not {args.range_ratio}")
    args.requests_per_client = max(args.requests_per_client, args.turns)

    from chattune import processes
    from chattune.catalog.importer import import_model
    from chattune.inference import inference_dtype, pick_device
    from chattune.workspace import Workspace

    ws = Workspace()
    model_path = import_model(ws.settings, ws.store, args.model).path
    # Each repeat sends conversations of its own (and the lone requests others again), so that no server answers
    # a prompt it has seen: a prefix cache would otherwise hold whole prompts from the previous repeat.
    per_run = args.clients * args.requests_per_client
    convs = prompts((per_run + args.lone_requests) * args.repeats)
    asks = lengths(len(convs), args.max_tokens, args.range_ratio)
    # The baselines get the dtype chattune picks here (bf16 on CPUs with native bf16), so the ratios are batching's.
    dtype = str(inference_dtype(pick_device())).removeprefix("torch.")
    result: dict[str, Any] = {
        **run_info(),
        "model": args.model,
        "clients": args.clients,
        "requests_per_client": args.requests_per_client,
        "max_tokens": args.max_tokens,
        "turns": args.turns,
        "range_ratio": args.range_ratio,
        "dtype": dtype,
        "repeats": args.repeats,
    }
    kinds = (*KINDS, PLAIN_LINEAR) if args.plain_linear else KINDS
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        servers = {kind: start(kind, model_path, Path(tmp) / f"{kind}.log", dtype) for kind in kinds}
        try:
            for repeat in range(args.repeats):
                order = kinds[repeat % len(kinds) :] + kinds[: repeat % len(kinds)]  # each goes first in turn
                for kind in order:
                    url = servers[kind][1]
                    first = repeat * (per_run + args.lone_requests)
                    mine = convs[first:][: per_run + args.lone_requests]
                    ask = asks[first:][:per_run]
                    ours = kind.startswith("chattune")
                    before = _steps(url) if ours else {}
                    lone = asyncio.run(drive(url, 1, args.lone_requests, [args.max_tokens], mine[per_run:]))
                    between = _steps(url) if ours else {}
                    loaded = asyncio.run(
                        drive(url, args.clients, args.requests_per_client, ask, mine, turns=args.turns)
                    )
                    run: dict[str, Any] = {"lone": lone, "load": loaded}
                    if ours:
                        lone_steps, load_steps = step_times(before, between), step_times(between, _steps(url))
                        run["steps"] = step_bounds(lone_steps, load_steps, args.clients)
                    runs[kind].append(run)
            mean_batch = _mean_batch(servers["chattune"][1])
            cached = _cached_share(servers["chattune"][1])
        finally:
            for pid, _, _ in servers.values():
                processes.stop(pid)
    for kind in kinds:
        rs = runs[kind]
        result[kind] = {
            "ready_s": round(servers[kind][2], 1),
            "tokens_per_s": spread([r["load"]["tokens_per_s"] for r in rs], 1),
            "p50_s": spread([r["load"]["p50_s"] for r in rs], 3),
            "p95_s": spread([r["load"]["p95_s"] for r in rs], 3),
            "lone_p50_s": spread([r["lone"]["p50_s"] for r in rs], 3),
            "errors": sum(r["load"]["errors"] + r["lone"]["errors"] for r in rs),
            "runs": rs,
        }
    result["chattune"]["mean_batch_size"] = mean_batch
    bounds = [r["steps"] for r in runs["chattune"] if r.get("steps")]
    if bounds:
        result["step_ratio"] = spread([b["step_ratio"] for b in bounds], 3)
        result["batching_bound"] = spread([b["batching_bound"] for b in bounds])
    result["chattune"]["cached_prompt_share"] = cached

    def ratio(a: str, b: str) -> dict[str, float]:
        """a's tokens/s over b's, run by run (the same repeat: the same machine state)."""
        pairs = zip(runs[a], runs[b], strict=True)
        return spread([x["load"]["tokens_per_s"] / max(y["load"]["tokens_per_s"], 1e-9) for x, y in pairs])

    result["ratio_tokens_per_s"] = ratio("chattune", "baseline")
    result["ratio_vs_batched"] = ratio("chattune", "batched")
    result["p50_ratio"] = spread([r["load"]["p50_s"] / r["lone"]["p50_s"] for r in runs["chattune"]])
    result["ratio_prefix_cache"] = ratio("chattune", NO_CACHE)
    if args.plain_linear:
        result["ratio_packed_linear"] = ratio("chattune", PLAIN_LINEAR)
    if args.json:
        print(json.dumps(result))
        return
    print(describe(result))
    varied = f" x [{1 - args.range_ratio:g}, {1 + args.range_ratio:g}]" if args.range_ratio else ""
    print(f"{args.clients} clients x {args.requests_per_client} requests, max_tokens {args.max_tokens}{varied}, "
          f"{dtype}, {args.repeats} interleaved runs (median [min-max])")  # fmt: skip
    for kind in kinds:
        r = result[kind]
        tps, p50 = r["tokens_per_s"], r["p50_s"]
        print(
            f"{kind:9} ready {r['ready_s']:5.1f}s | lone p50 {r['lone_p50_s']['median']:.2f}s | "
            f"{tps['median']:7.1f} tok/s [{tps['min']}-{tps['max']}], p50 {p50['median']:.2f}s, "
            f"p95 {r['p95_s']['median']:.2f}s, errors {r['errors']}"
        )
    print(
        f"tokens/s: {result['ratio_tokens_per_s']['median']}x one-at-a-time, {result['ratio_vs_batched']['median']}x "
        f"batched generate; p50 under load / lone p50 {result['p50_ratio']['median']}x"
    )
    if bounds:
        print(
            f"decoding steps: {bounds[0]['rows']} rows / 1 row {result['step_ratio']['median']}x (the p50 ratio "
            f"from decoding alone); batching can gain at most {result['batching_bound']['median']}x"
        )
    if args.plain_linear:
        print(f"packed linear layers / transformers' own: {result['ratio_packed_linear']['median']}x tokens/s")


if __name__ == "__main__":
    main()
