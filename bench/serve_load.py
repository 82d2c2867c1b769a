"""Serving under load: many concurrent clients against a live chattune endpoint, through its gateway, with its key.

    python bench/serve_load.py [--model tiny-test|smollm2-135m-instruct] [--clients 64] [--seconds 60] [--json]
    python bench/serve_load.py --uri http://127.0.0.1:PORT/score --key KEY [--clients 64] [--seconds 60] [--json]

Without ``--uri`` the benchmark makes its own throwaway workspace (``CHATTUNE_HOME`` in a temp dir) and builds the
endpoint the way a user does, with the real CLI in child processes:

1. ``chattune quickstart --model MODEL --keep-endpoint --max-train-rows N --json`` (job, register, endpoint, the
   deployment ``demo``; for SmolLM2 the wheel is taken from the default workspace's cache when it is there, so
   nothing is downloaded);
2. ``chattune deployments create --name load --instances I --max-concurrent C --request-timeout-ms 60000``, with
   ``C`` = ``--max-concurrent`` (default: a quarter of ``--clients``, so 16 for 64 clients), below the client count
   so that overload happens and is observable: the requests beyond ``C`` wait in the deployment's queue (its
   defaults, or ``--max-queue-wait-ms`` / ``--max-queue-length``), and what the queue cannot hold the gateway must
   answer 429 with ``Retry-After``;
3. ``chattune endpoints traffic EP load=100`` and ``chattune deployments delete --name demo``; with
   ``--deployments N`` (N > 1), N such deployments ``load``, ``load2``... with the traffic split evenly between them
   (a blue/green pair for 2: several deployments' instances on one machine);

and at the end ``chattune endpoints delete EP`` (every process stopped, checked) and the temp dir removed.

The load is a closed loop: each of ``--clients`` clients (httpx, async, one connection pool over loopback HTTP)
sends a request, waits for the whole answer, and sends the next; on a 429 it waits ``Retry-After`` seconds first, as
the openai client does. Requests are a fixed mix with small ``max_tokens`` (1..``--max-tokens``, prompts from the
demo data): 40% Azure ``/score``, 30% OpenAI ``/v1/chat/completions``, 30% the same streamed (SSE, read to
``[DONE]``). A 200 whose answer is broken (an error event in the stream, no ``[DONE]``, a body that is not JSON)
counts in ``stream_errors``, not in ``successes``. First ``--warmup-seconds`` of the same load (not
counted), then the server's memory (RSS of the gateway plus every instance process, pids from the workspace
database), then ``--seconds`` of measured load, then the memory again.

``--json`` prints one document: ``requests, successes, status_4xx, status_5xx, status_429, refused_pct (429s of all
requests), retry_after_on_all_429, queued_max (the most requests seen waiting in the gateway's queue, sampled from its
/metrics with the memory), errors, stream_errors, latency_s {p50,p95,p99} (successful requests), memory_mb {before,
after, growth_pct, during (samples every ``--sample-seconds``)}, clients, seconds, model`` and the setup and context
(``max_concurrent``, ``instances``, ``deployments``, ``max_tokens``, ``instance_restarts``, ``statuses``,
``error_kinds``, ``load_avg_1m`` of the machine, ``leftover_processes``: pids still alive after the teardown, none
expected). With ``--uri`` the setup keys are null, and memory is measured when the endpoint is found in
``$CHATTUNE_HOME``'s database by its port.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import run_info

MODELS = ("tiny-test", "smollm2-135m-instruct")
DEPLOYMENT = "load"
REQUEST_TIMEOUT_MS = 60_000
CLIENT_TIMEOUT_S = 120.0
# The share of each request kind in the mix; the rest are non-streamed chat completions.
SCORE_SHARE, STREAM_SHARE = 0.4, 0.3


# the load ------------------------------------------------------------------------------------------------------
@dataclass
class Tally:
    requests: int = 0
    successes: int = 0
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    retry_after_missing: int = 0
    errors: int = 0
    stream_errors: int = 0
    error_kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    by_kind: dict[str, list[float]] = field(default_factory=lambda: collections.defaultdict(list))

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 3) if lat else None

        return {
            "requests": self.requests,
            "successes": self.successes,
            "status_4xx": sum(n for code, n in self.statuses.items() if 400 <= code < 500),
            "status_5xx": sum(n for code, n in self.statuses.items() if code >= 500),
            "status_429": self.statuses[429],
            "refused_pct": round(100 * self.statuses[429] / self.requests, 2) if self.requests else None,
            "retry_after_on_all_429": self.retry_after_missing == 0,
            "errors": self.errors,
            "stream_errors": self.stream_errors,
            "latency_s": {"p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99)},
            "latency_p50_by_kind_s": {k: round(sorted(v)[len(v) // 2], 3) for k, v in sorted(self.by_kind.items())},
            "statuses": {str(code): n for code, n in sorted(self.statuses.items())},
            "error_kinds": dict(self.error_kinds),
        }


def conversations(n: int = 64) -> list[list[dict[str, str]]]:
    """Prompts from the demo data (the dates the quickstart's model was tuned on): system + user turns only."""
    from chattune.data import demo

    rows = demo.generate(rows=max(n, 16))["test_gen"]
    return [[m for m in row["messages"] if m["role"] != "assistant"] for row in rows]


def _request(rng: random.Random, convs: list[Any], max_tokens: int) -> tuple[str, dict[str, Any], bool]:
    """(path, body, streamed) for the next request of the mix."""
    messages = rng.choice(convs)
    tokens = rng.randint(1, max_tokens)
    roll = rng.random()
    if roll < SCORE_SHARE:
        params = {"max_new_tokens": tokens, "do_sample": rng.random() < 0.5, "temperature": 0.7, "top_p": 0.9}
        return "/score", {"input_data": {"input_string": [messages], "parameters": params}}, False
    streamed = roll >= 1 - STREAM_SHARE
    body: dict[str, Any] = {"messages": messages, "max_tokens": tokens, "temperature": 0}
    if streamed:
        body.update(stream=True, stream_options={"include_usage": True})
    return "/v1/chat/completions", body, streamed


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _one(http: httpx.AsyncClient, base: str, path: str, body: dict[str, Any], streamed: bool) -> tuple[
    int, float | None, bool
]:  # fmt: skip
    """Send one request and read the whole answer: (status, Retry-After, complete)."""
    if not streamed:
        r = await http.post(base + path, json=body)
        try:
            complete = r.status_code == 200 and bool(r.json())
        except ValueError:
            complete = False
        return r.status_code, _retry_after(r), complete
    async with http.stream("POST", base + path, json=body) as r:
        if r.status_code != 200:
            await r.aread()
            return r.status_code, _retry_after(r), False
        done = failed = False
        async for line in r.aiter_lines():
            if line == "data: [DONE]":
                done = True
            elif line.startswith("data: ") and '"error"' in line[:20]:
                failed = True
        return 200, None, done and not failed


async def drive(
    base: str,
    key: str,
    clients: int,
    seconds: float,
    max_tokens: int,
    *,
    seed: int = 0,
    honour_retry_after: bool = True,
) -> Tally:
    """``clients`` closed-loop clients for ``seconds``; the requests under way at the end are waited for."""
    convs = conversations()
    tally = Tally()
    deadline = time.monotonic() + seconds
    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=clients + 8, max_keepalive_connections=clients + 8)

    async def client(index: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(seed * 1000 + index)
        while time.monotonic() < deadline:
            path, body, streamed = _request(rng, convs, max_tokens)
            tally.requests += 1
            started = time.perf_counter()
            try:
                status, retry_after, complete = await _one(http, base, path, body, streamed)
            except httpx.HTTPError as exc:
                tally.errors += 1
                tally.error_kinds[type(exc).__name__] += 1
                await asyncio.sleep(0.1)
                continue
            tally.statuses[status] += 1
            if status == 200 and complete:
                tally.successes += 1
                tally.latencies.append(time.perf_counter() - started)
                kind = "stream" if streamed else path.rsplit("/", 1)[-1]
                tally.by_kind[kind].append(tally.latencies[-1])
            elif status == 200:
                tally.stream_errors += 1
            elif status == 429:
                if retry_after is None:
                    tally.retry_after_missing += 1
                if honour_retry_after:
                    wait = retry_after if retry_after is not None else 1.0
                    await asyncio.sleep(max(0.0, min(wait, 5.0, deadline - time.monotonic())))
            else:
                await asyncio.sleep(0.1)  # no tight loop on other errors

    async with httpx.AsyncClient(headers=headers, limits=limits, timeout=CLIENT_TIMEOUT_S) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    return tally


# the server's processes ----------------------------------------------------------------------------------------
def server_pids(db: Path, endpoint: str) -> dict[str, list[int]]:
    """The gateway's pid and every instance's, from the workspace database (the supervisor records them)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT pid FROM endpoints WHERE name=?", (endpoint,)).fetchone()
        instances = [
            json.loads(text or "[]")
            for (text,) in conn.execute("SELECT instances FROM deployments WHERE endpoint=?", (endpoint,))
        ]
    return {
        "gateway": [row[0]] if row and row[0] else [],
        "instances": [i["pid"] for insts in instances for i in insts if i.get("pid")],
    }


def rss_mb(pids: dict[str, list[int]]) -> dict[str, float]:
    """Resident memory of each group of processes, MB (a process that is gone counts 0)."""
    out: dict[str, float] = {}
    for group, ids in pids.items():
        total = 0
        for pid in ids:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += psutil.Process(pid).memory_info().rss
        out[group] = round(total / 2**20, 1)
    out["total"] = round(sum(out.values()), 1)
    return out


def endpoint_for(db: Path, uri: str) -> str | None:
    """The endpoint of this workspace that listens on ``uri``'s port (for ``--uri``), if any."""
    if not db.exists():
        return None
    port = urlsplit(uri).port
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT name FROM endpoints WHERE port=?", (port,)).fetchone()
    return row[0] if row else None


def instance_restarts(db: Path, endpoint: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT instances FROM deployments WHERE endpoint=?", (endpoint,)).fetchall()
    return sum(int(i.get("restarts", 0)) for (text,) in rows for i in json.loads(text or "[]"))


# a throwaway endpoint ------------------------------------------------------------------------------------------
@dataclass
class Served:
    endpoint: str
    base: str  # the gateway's URL, without /score
    key: str
    db: Path
    tmp: Path | None = None  # the throwaway workspace's parent, when this run made it

    def cli(self, *args: str, timeout: float = 300) -> Any:
        assert self.tmp is not None
        return _cli(self.tmp, *args, timeout=timeout)


def _env(tmp: Path) -> dict[str, str]:
    return {
        **os.environ,
        "CHATTUNE_HOME": str(tmp / "home"),
        "CHATTUNE_CREDENTIALS_PATH": str(tmp / "credentials.json"),
    }


def _cli(tmp: Path, *args: str, timeout: float = 300) -> Any:
    """``chattune ARGS --json`` in a child process against the throwaway workspace; its JSON document."""
    proc = subprocess.run(
        [sys.executable, "-m", "chattune.cli.main", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(tmp),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chattune {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def create_endpoint(
    model: str,
    *,
    instances: int,
    max_concurrent: int,
    queue: dict[str, int | None],
    deployments: int = 1,
    max_train_rows: int | None,
    log: Any = None,
    parent: Path | None = None,
) -> Served:
    """The quickstart's endpoint, its traffic moved to a deployment ``load`` (or split evenly between ``deployments``
    of them) with the given limits.

    Its throwaway workspace is a new folder under ``parent`` (the system's temp dir when None).
    """
    tmp = Path(tempfile.mkdtemp(prefix="chattune-load-", dir=parent))
    say = log or (lambda s: None)
    try:
        # SmolLM2 comes from the user-level model cache (catalog/model_cache.py) after its first fetch.
        args = ["quickstart", "--model", model, "--keep-endpoint"]
        if max_train_rows:
            args += ["--max-train-rows", str(max_train_rows)]
        say(f"quickstart --model {model} (workspace {tmp / 'home'}) ...")
        started = time.perf_counter()
        doc = _cli(tmp, *args, timeout=1800)
        endpoint, key = doc["endpoint"]["name"], doc["endpoint"]["keys"]["primary_key"]
        say(f"  endpoint {endpoint} in {time.perf_counter() - started:.0f}s")
        served = Served(endpoint, "", key, tmp / "home" / "chattune.db", tmp)
        model_ref = f"{doc['model']['name']}:{doc['model']['version']}"
        names = [DEPLOYMENT, *(f"{DEPLOYMENT}{n}" for n in range(2, deployments + 1))]
        for name in names:
            served.cli(
                "deployments", "create", "--endpoint", endpoint, "--name", name, "--model", model_ref,
                "--instances", str(instances), "--max-concurrent", str(max_concurrent),
                "--request-timeout-ms", str(REQUEST_TIMEOUT_MS),
                *(arg for flag, value in queue.items() if value is not None for arg in (flag, str(value))),
            )  # fmt: skip
        shares = [100 // len(names) + (100 % len(names) if i == 0 else 0) for i in range(len(names))]
        served.cli("endpoints", "traffic", endpoint, *(f"{n}={share}" for n, share in zip(names, shares, strict=True)))
        _cli_plain(tmp, "deployments", "delete", "--endpoint", endpoint, "--name", "demo")
        served.base = doc["endpoint"]["scoring_uri"].removesuffix("/score")
        say(f"  deployments {names}: {instances} instance(s) each, max_concurrent {max_concurrent}; {served.base}")
        return served
    except BaseException:
        _teardown(tmp, None)
        raise


def _cli_plain(tmp: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "chattune.cli.main", *args], capture_output=True, text=True, timeout=300, env=_env(tmp)
    )
    if proc.returncode != 0:
        raise RuntimeError(f"chattune {' '.join(args)}: exit {proc.returncode}\n{proc.stderr[-3000:]}")


def _teardown(tmp: Path, endpoint: str | None) -> list[int]:
    """Delete the endpoint with the CLI, stop whatever the workspace still records, remove the temp dir; return
    the pids that were still alive after that (none expected)."""
    from chattune import processes

    db = tmp / "home" / "chattune.db"
    pids: list[int] = []
    if db.exists():
        with sqlite3.connect(db) as conn:
            pids = [r[0] for r in conn.execute("SELECT pid FROM endpoints UNION SELECT pid FROM jobs") if r[0]]
            for (text,) in conn.execute("SELECT instances FROM deployments"):
                pids += [i["pid"] for i in json.loads(text or "[]") if i.get("pid")]
    if endpoint:
        try:
            _cli_plain(tmp, "endpoints", "delete", endpoint)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            print(f"endpoints delete failed: {exc}", file=sys.stderr)
    for pid in pids:
        processes.stop(pid, timeout_s=5)
    shutil.rmtree(tmp, ignore_errors=True)
    return [pid for pid in pids if processes.alive(pid)]


# main ----------------------------------------------------------------------------------------------------------
QUEUED = "chattune_gateway_queued_requests"


async def queued(served: Served) -> int:
    """Requests waiting in the gateway's queue now, summed over deployments (its /metrics, with the key)."""
    async with httpx.AsyncClient(timeout=10) as client:
        text = (await client.get(f"{served.base}/metrics", headers={"Authorization": f"Bearer {served.key}"})).text
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in text.splitlines() if line.startswith(QUEUED + "{"))


async def _sampled(load: Any, served: Served, every: float) -> tuple[Tally, list[float], list[int]]:
    """Run the load, sampling the server's total RSS (MB) and the gateway's queue every ``every`` seconds meanwhile:
    a leak keeps rising, an allocator settling to its high-water mark flattens."""
    samples: list[float] = []
    depths: list[int] = []
    task = asyncio.ensure_future(load)
    while every > 0:
        done, _ = await asyncio.wait({task}, timeout=every)
        if done:
            break
        if served.endpoint:
            samples.append(rss_mb(server_pids(served.db, served.endpoint))["total"])
        depths.append(await queued(served))
    return await task, samples, depths


def run(args: argparse.Namespace) -> dict[str, Any]:
    log = (lambda s: print(s, file=sys.stderr, flush=True)) if not args.json else None
    max_concurrent = args.max_concurrent or max(1, args.clients // 4)
    if args.uri:
        home = Path(os.environ.get("CHATTUNE_HOME") or Path.home() / ".chattune")
        db = home / "chattune.db"
        served = Served(endpoint_for(db, args.uri) or "", args.uri.removesuffix("/score"), args.key, db)
    else:
        served = create_endpoint(
            args.model,
            instances=args.instances,
            deployments=args.deployments,
            max_concurrent=max_concurrent,
            queue={"--max-queue-wait-ms": args.max_queue_wait_ms, "--max-queue-length": args.max_queue_length},
            max_train_rows=args.max_train_rows,
            log=log,
            parent=args.work_dir,
        )
    try:
        say = log or (lambda s: None)
        if args.warmup_seconds > 0:
            say(f"warm-up: {args.clients} clients x {args.warmup_seconds:g}s")
            asyncio.run(drive(served.base, served.key, args.clients, args.warmup_seconds, args.max_tokens, seed=1))
        pids = server_pids(served.db, served.endpoint) if served.endpoint else {}
        before = rss_mb(pids)
        restarts_before = instance_restarts(served.db, served.endpoint) if served.endpoint else 0
        load_before = round(os.getloadavg()[0], 2)
        say(f"memory before: {before}; load: {args.clients} clients x {args.seconds:g}s")
        started = time.perf_counter()
        load = drive(
            served.base,
            served.key,
            args.clients,
            args.seconds,
            args.max_tokens,
            honour_retry_after=not args.ignore_retry_after,
        )
        tally, samples, depths = asyncio.run(_sampled(load, served, args.sample_seconds))
        wall = time.perf_counter() - started
        after = rss_mb(server_pids(served.db, served.endpoint) if served.endpoint else {})
        restarts = (instance_restarts(served.db, served.endpoint) if served.endpoint else 0) - restarts_before
    finally:
        if served.tmp and args.logs:  # the gateway's and the instances' logs, before the workspace goes
            shutil.copytree(served.tmp / "home" / "endpoints", Path(args.logs), dirs_exist_ok=True)
        leftover = _teardown(served.tmp, served.endpoint) if served.tmp else []
    result: dict[str, Any] = {
        **run_info(),
        **tally.summary(),
        "memory_mb": {
            "before": before.get("total") if pids else None,
            "after": after.get("total") if pids else None,
            "growth_pct": round(100 * (after["total"] - before["total"]) / before["total"], 2) if pids else None,
            "during": samples,
            "before_by_process": before if pids else None,
            "after_by_process": after if pids else None,
        },
        "queued_max": max(depths, default=None),
        "queued_samples": depths,
        "clients": args.clients,
        "seconds": args.seconds,
        "model": args.model if not args.uri else None,
        "max_concurrent": max_concurrent if not args.uri else None,
        "instances": args.instances if not args.uri else None,
        "deployments": args.deployments if not args.uri else None,
        "max_tokens": args.max_tokens,
        "requests_per_s": round(tally.requests / wall, 1),
        "successes_per_s": round(tally.successes / wall, 1),
        "wall_s": round(wall, 1),
        "instance_restarts": restarts,
        "load_avg_1m": [load_before, round(os.getloadavg()[0], 2)],  # the machine's, for context on a shared host
        "leftover_processes": leftover,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=MODELS, default="tiny-test")
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup-seconds", type=float, default=10.0, help="same load before the first measurement")
    parser.add_argument("--max-tokens", type=int, default=16, help="each request asks for 1..N new tokens")
    parser.add_argument("--max-concurrent", type=int, default=None, help="the deployment's limit; default clients/4")
    parser.add_argument("--instances", type=int, default=1, help="instances of each deployment")
    parser.add_argument("--deployments", type=int, default=1, help="deployments, traffic split evenly")
    parser.add_argument("--max-queue-wait-ms", type=int, help="the deployment's queue wait (default: chattune's)")
    parser.add_argument("--max-queue-length", type=int, help="the deployment's queue length (default: chattune's)")
    parser.add_argument("--max-train-rows", type=int, default=16, help="the quickstart job's training rows")
    parser.add_argument("--ignore-retry-after", action="store_true", help="retry a 429 at once (a rude client)")
    parser.add_argument("--uri", help="an existing endpoint's scoring URI (with --key) instead of a throwaway one")
    parser.add_argument("--key", help="the existing endpoint's key")
    parser.add_argument("--sample-seconds", type=float, default=10.0, help="RSS samples during the load, every S s")
    parser.add_argument("--logs", help="copy the throwaway endpoint's server logs to this directory at the end")
    parser.add_argument("--work-dir", type=Path, help="where the throwaway workspace goes (default: the temp dir)")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if bool(args.uri) != bool(args.key):
        parser.error("--uri and --key go together")
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return
    lat, mem = result["latency_s"], result["memory_mb"]
    print(
        f"{result['model'] or args.uri}: {args.clients} clients x {args.seconds:g}s, "
        f"max_concurrent {result['max_concurrent']}\n"
        f"requests {result['requests']} ({result['requests_per_s']}/s), successes {result['successes']}, "
        f"4xx {result['status_4xx']} (429: {result['status_429']} = {result['refused_pct']}%, Retry-After on all: "
        f"{result['retry_after_on_all_429']}, most queued {result['queued_max']}), 5xx {result['status_5xx']}, "
        f"transport errors {result['errors']}, "
        f"stream errors {result['stream_errors']}\n"
        f"latency p50 {lat['p50']}s p95 {lat['p95']}s p99 {lat['p99']}s\n"
        f"memory {mem['before']} MB -> {mem['after']} MB ({mem['growth_pct']}%), "
        f"instance restarts {result['instance_restarts']}, leftover processes {result['leftover_processes']}"
    )


if __name__ == "__main__":
    main()
