"""What mixed steps are worth: the batch scheduler with new requests' prompts in the running rows' decoding step
(chattune.serving.mixed) against the same scheduler prefilling them in a forward pass of their own, in one process.

SmolLM2-135M-Instruct in the dtype chattune picks here, the engine's defaults (prefix cache 64 MB), 16 closed-loop
clients. Each client sends its own short question and asks for a length drawn from ``--min-tokens``..``--max-tokens``
(greedy), so answers end at different steps and requests join a running batch one or a few at a time, as traffic
does that is not in lockstep. The two variants alternate (which goes first changes every round) and get the same
requests in the same round. Reported per variant: generated tokens/s and p50 latency (min/median/max over rounds),
the joins and the time in forward passes of each kind.

With ``--join-only``, the mechanism alone: one join of a 40-token prompt into 16 running rows at 80 tokens of
context, as one mixed forward pass against the decoding step plus the prompt's own forward pass, alternated.

    python bench/serve_mixed_ab.py [--rounds 4] [--requests-per-client 2] [--join-only] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import describe, run_info, spread

WORDS = (  # noqa: SIM905  # a list literal of 60 words would take 60 lines
    "the time people water day number word way sound part place year work back thing name sentence man line "
    "end hand house picture air animal point page letter mother answer country plant school food sun state eye "
    "city tree farm story sea night life paper group music color river car feet book science room friend idea"
).split()
FORWARDS = ("_mixed", "_prefill", "step")


def requests(seed: int, count: int, min_tokens: int, max_tokens: int) -> list[tuple[str, int]]:
    rng = random.Random(seed)
    return [
        (
            "Tell me about " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 10))) + ".",
            rng.randint(min_tokens, max_tokens),
        )
        for _ in range(count)
    ]


def timed(totals: dict[str, list[float]]) -> None:
    """Count and time the running batch's forward passes of each kind."""
    from chattune.serving import batching

    for name in FORWARDS:
        original = getattr(batching._Running, name)

        def wrapper(self: Any, *args: Any, _name: str = name, _fn: Any = original) -> Any:
            start = time.perf_counter()
            try:
                return _fn(self, *args)
            finally:
                totals[_name][0] += 1
                totals[_name][1] += time.perf_counter() - start

        setattr(batching._Running, name, wrapper)


async def drive(scheduler: Any, tokenizer: Any, work: list[tuple[str, int]], clients: int) -> dict[str, Any]:
    from chattune.inference import GenerationParams
    from chattune.serving.batching import Pending

    loop = asyncio.get_running_loop()
    queue = collections.deque(work)
    latencies: list[float] = []

    async def client() -> int:
        tokens = 0
        while queue:
            question, budget = queue.popleft()
            ids = tokenizer.apply_chat_template(
                [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=True
            )
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            pending = Pending(list(ids), GenerationParams(max_new_tokens=budget), None, loop)
            start = time.perf_counter()
            scheduler.submit(pending)
            while (event := await pending.events.get())[0] != "done":
                if event[0] == "error":
                    raise event[1]
            latencies.append(time.perf_counter() - start)
            tokens += event[1].completion_tokens
        return tokens

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(client() for _ in range(clients))))
    wall = time.perf_counter() - start
    return {"tokens_per_s": tokens / wall, "p50_s": statistics.median(latencies), "tokens": tokens, "wall_s": wall}


def one_join(model: Any, rounds: int, running: int = 16, context: int = 80, prompt: int = 40) -> dict[str, Any]:
    """Milliseconds of one join into a running batch: a mixed forward pass vs a decoding step plus a prefill."""
    import copy

    import torch

    from chattune.serving import kv_cache, mixed

    if not mixed.use_mixed_steps(model):
        raise SystemExit(f"mixed steps need SDPA attention; this model runs {model.config._attn_implementation}")
    torch.manual_seed(0)
    vocab = int(model.config.vocab_size)
    ids, new = torch.randint(0, vocab, (running, context)), torch.randint(0, vocab, (1, prompt))
    last, positions = torch.randint(0, vocab, (running, 1)), torch.full((running, 1), context)
    mask = torch.ones(running, context + 1, dtype=torch.long)

    def separate(cache: Any) -> None:
        model(input_ids=last, attention_mask=mask, position_ids=positions, cache=cache, logits_to_keep=1)
        model(input_ids=new, cache=kv_cache.new_cache(model.config), logits_to_keep=1)

    def together(cache: Any) -> None:
        layout = mixed.Layout(running, cache, mask.bool()[:, None, None, :], [prompt], [None])
        flat = torch.cat([last[:, 0], new[0]])[None]
        where = torch.cat([positions[:, 0], torch.arange(prompt)])[None]
        keep = torch.tensor([*range(running), running + prompt - 1])
        with mixed.active(layout):
            model(
                input_ids=flat,
                attention_mask=layout.running_mask,
                position_ids=where,
                cache=mixed.cache(layout),
                logits_to_keep=keep,
            )

    times: dict[str, list[float]] = {"mixed_ms": [], "separate_ms": []}
    with torch.inference_mode():
        base = kv_cache.new_cache(model.config)
        model(input_ids=ids, cache=base, logits_to_keep=1)
        for r in range(2 * rounds + 1):  # the first pair warms up
            pair = (("mixed_ms", together), ("separate_ms", separate))
            for name, fn in pair if r % 2 == 0 else pair[::-1]:
                cache = copy.deepcopy(base)
                start = time.perf_counter()
                fn(cache)
                if r:
                    times[name].append((time.perf_counter() - start) * 1000)
    ratio = statistics.median(times["mixed_ms"]) / statistics.median(times["separate_ms"])
    return {
        "running_rows": running,
        "context": context,
        "prompt": prompt,
        **{k: spread(v, 1) for k, v in times.items()},
        "median_ratio": round(ratio, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--min-tokens", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=56)
    parser.add_argument("--model", choices=["smollm2-135m-instruct", "tiny-test"], default="smollm2-135m-instruct")
    parser.add_argument("--join-only", action="store_true", help="time one join only (see above)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from chattune.catalog.importer import import_model
    from chattune.entities import DeploymentSettings
    from chattune.inference import load_model, load_tokenizer
    from chattune.serving.batching import BatchScheduler
    from chattune.serving.metrics import InstanceMetrics
    from chattune.workspace import Workspace

    ws = Workspace()
    path = import_model(ws.settings, ws.store, args.model).path
    model, tokenizer = load_model(path), load_tokenizer(path)
    if args.join_only:
        doc = {**run_info(), "model": args.model, "dtype": str(model.dtype).removeprefix("torch.")}
        doc["one_join"] = one_join(model, args.rounds)
        print(json.dumps(doc, indent=2) if args.json else f"{describe(doc)}\n{doc['one_join']}")
        return
    settings = DeploymentSettings()
    scheduler = BatchScheduler(
        model,
        tokenizer,
        InstanceMetrics(),
        max_batch_size=32,
        prefix_cache_bytes=settings.prefix_cache_mb * 2**20,
    )
    supported = scheduler.mixed_steps
    totals: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    timed(totals)
    per_round = args.clients * args.requests_per_client
    asyncio.run(drive(scheduler, tokenizer, requests(-1, 2, 4, 4), 2))  # warm up
    runs: dict[str, list[dict[str, Any]]] = {"mixed": [], "separate": []}
    for r in range(args.rounds):
        work = requests(r, per_round, args.min_tokens, args.max_tokens)
        for variant in ("mixed", "separate") if r % 2 == 0 else ("separate", "mixed"):
            scheduler.mixed_steps = supported and variant == "mixed"
            totals.clear()
            result: dict[str, Any] = asyncio.run(drive(scheduler, tokenizer, list(work), args.clients))
            result["forwards"] = {k: {"count": int(v[0]), "seconds": round(v[1], 2)} for k, v in totals.items()}
            runs[variant].append(result)
            if not args.json:
                print(variant, {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}, flush=True)
    ratios = [m["tokens_per_s"] / s["tokens_per_s"] for m, s in zip(runs["mixed"], runs["separate"], strict=True)]
    doc = {
        **run_info(),
        "model": args.model,
        "dtype": str(model.dtype).removeprefix("torch."),
        "clients": args.clients,
        "requests_per_round": per_round,
        "tokens_range": [args.min_tokens, args.max_tokens],
        "rounds": args.rounds,
        "mixed_steps_supported": supported,
        **{
            variant: {
                "tokens_per_s": spread([x["tokens_per_s"] for x in xs], 1),
                "p50_s": spread([x["p50_s"] for x in xs]),
                "runs": xs,
            }
            for variant, xs in runs.items()
        },
        "ratio_tokens_per_s": spread(ratios),
    }
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(describe(doc))
        for variant in runs:
            print(variant, doc[variant]["tokens_per_s"], "tokens/s; p50", doc[variant]["p50_s"])
        print("mixed / separate", doc["ratio_tokens_per_s"])


if __name__ == "__main__":
    main()
