"""Validation throughput and memory: chattune's streaming validator vs two baselines, on a clean file and on one
with 5% bad rows.

    python bench/validate_throughput.py [--size-mb 1024] [--quick] [--repeats 3] [--json]

Writes an ultrachat-like JSON Lines file (prompt, prompt_id, 1-4 user/assistant turns, ~2.7 KB a row) to a temp
directory, and a copy in which every 20th row is broken in one of five ways (a truncated JSON line, an unknown role,
no assistant turn, a content that is not a string, no messages). Each contender runs in its own process (so peak RSS
is its own), `--repeats` times, interleaved (each repeat starts with a different one), and reports rows/s, seconds,
peak RSS and the bad rows it found, as min/median/max over the repeats (chattune's: the rows with an error or a
warning; a row left with one message is a warning, since preprocess drops it as Azure does).

Contenders:
- chattune: `validate_file` (every error by line and code, statistics, duplicates);
- `pandas`: `pandas.read_json(path, lines=True)` as the seed notebook loads train_sft.jsonl, plus the same basic
  per-row checks on the DataFrame (it cannot read a file with a broken JSON line at all: that is reported);
- `json_loop`: a plain `json.loads` loop over the lines with the format checks of OpenAI's cookbook
  ("Data preparation and analysis for chat model fine-tuning": each row a dict with a `messages` list, each message
  a dict with `role` and `content` and no other keys than `name`/`function_call`/`weight`, roles system, user,
  assistant or function, content a string, an assistant turn), counting every bad row, as a script would.

`--json` prints one document: the commit, versions and machine, and for each file (`clean`, `bad_5pct`) each
contender's figures, `speedup` (chattune vs pandas) and `speedup_vs_json_loop`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import describe, run_info, spread

CONTENDERS = ("chattune", "pandas", "json_loop")
BAD_EVERY = 20  # 5% of the rows

WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "they",
    "you",
    "were",
    "her",
    "she",
    "there",
    "been",
    "one",
    "all",
    "would",
    "their",
    "date",
    "convert",
    "model",
    "answer",
    "question",
]


def write_file(path: Path, size_mb: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    target = size_mb * 2**20
    rows = written = 0
    with path.open("w", encoding="utf-8") as fh:
        while written < target:
            messages = []
            for _ in range(rng.randint(1, 4)):
                messages.append({"content": " ".join(rng.choices(WORDS, k=rng.randint(10, 80))), "role": "user"})
                messages.append({"content": " ".join(rng.choices(WORDS, k=rng.randint(50, 300))), "role": "assistant"})
            prompt = messages[0]["content"]
            line = (
                json.dumps(
                    {
                        "prompt": prompt,
                        "prompt_id": hashlib.sha256(f"{rows}".encode()).hexdigest(),
                        "messages": messages,
                    }
                )
                + "\n"
            )
            fh.write(line)
            written += len(line)
            rows += 1
    return rows


def break_rows(clean: Path, out: Path) -> int:
    """Copy ``clean`` with every BAD_EVERY-th row broken, in turn, in one of five ways; the number broken."""
    broken = 0
    with clean.open(encoding="utf-8") as src, out.open("w", encoding="utf-8") as dst:
        for n, line in enumerate(src, 1):
            if n % BAD_EVERY == 0:
                row = json.loads(line)
                kind = broken % 5
                if kind == 0:
                    line = line[: len(line) // 2] + "\n"  # a truncated line: not JSON
                else:
                    if kind == 1:
                        row["messages"][0]["role"] = "wizard"
                    elif kind == 2:
                        row["messages"] = [m for m in row["messages"] if m["role"] != "assistant"]
                    elif kind == 3:
                        row["messages"][-1]["content"] = 42
                    else:
                        del row["messages"]
                    line = json.dumps(row) + "\n"
                broken += 1
            dst.write(line)
    return broken


ROLES = {"system", "user", "assistant", "function"}
MESSAGE_KEYS = {"role", "content", "name", "function_call", "weight"}


def cookbook_errors(row: Any) -> str | None:
    """The first format error of OpenAI's cookbook checks in one parsed row, or None."""
    if not isinstance(row, dict):
        return "data_type"
    messages = row.get("messages")
    if not messages:
        return "missing_messages_list"
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return "message_missing_key"
        if set(message) - MESSAGE_KEYS:
            return "message_unrecognized_key"
        if message["role"] not in ROLES:
            return "unrecognized_role"
        if not isinstance(message["content"], str):
            return "missing_content"
    if not any(m["role"] == "assistant" for m in messages):
        return "example_missing_assistant_message"
    return None


def pandas_ok(ms: Any) -> bool:
    return (
        isinstance(ms, list)
        and len(ms) >= 2
        and all(
            isinstance(m, dict)
            and m.get("role") in ("system", "user", "assistant")
            and isinstance(m.get("content"), str)
            for m in ms
        )
        and any(m["role"] == "assistant" for m in ms)
    )


def child(kind: str, path: str) -> None:
    # Imports are outside the timed region (the figure is the per-row cost), and each process imports only what
    # it uses, so that peak RSS is its own.
    if kind == "chattune":
        from chattune.data.validate import validate_file
    elif kind == "pandas":
        import pandas as pd
    started = time.perf_counter()
    failure = None
    if kind == "chattune":
        report = validate_file(Path(path))
        # a row with an error, or one that preprocess drops (a single message: a warning, as Azure drops it)
        rows, bad = report.rows, len({i.line for i in report.errors + report.warnings})
    elif kind == "pandas":
        try:
            df = pd.read_json(path, lines=True)
        except ValueError as exc:  # one broken line and nothing is read
            rows, bad, failure = 0, 0, f"{type(exc).__name__}: {str(exc)[:200]}"
        else:
            messages = df.get("messages", [])
            bad = int((~messages.map(pandas_ok)).sum()) if len(messages) else len(df)
            rows = len(df)
    else:
        rows = bad = 0
        errors: dict[str, int] = {}
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                rows += 1
                try:
                    error = cookbook_errors(json.loads(line))
                except json.JSONDecodeError:
                    error = "invalid_json"
                if error:
                    bad += 1
                    errors[error] = errors.get(error, 0) + 1
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result: dict[str, Any] = {
        "rows": rows,
        "bad_rows": bad,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds) if rows else 0,
        "peak_rss_mb": round(peak_mb, 1),
    }
    if failure:
        result["failed"] = failure
    print(json.dumps(result))


def run(kind: str, path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def measure(path: Path, repeats: int) -> dict[str, Any]:
    """Every contender ``repeats`` times on ``path``, the order rotated in each repeat; the median run of each with
    min/median/max of its speed, time and memory."""
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in CONTENDERS}
    for repeat in range(repeats):
        shift = repeat % len(CONTENDERS)
        for kind in CONTENDERS[shift:] + CONTENDERS[:shift]:
            runs[kind].append(run(kind, path))
    section: dict[str, Any] = {}
    for kind, records in runs.items():
        ranked = sorted(records, key=lambda r: r["seconds"])
        chosen = dict(ranked[(len(ranked) - 1) // 2])
        if "failed" not in chosen:
            chosen["rows_per_s"] = round(statistics.median(r["rows_per_s"] for r in records))
            for field in ("rows_per_s", "seconds", "peak_rss_mb"):
                chosen[f"{field}_spread"] = spread([r[field] for r in records], 3)
        section[kind] = chosen
    chattune = section["chattune"]["rows_per_s"]
    for kind, key in (("pandas", "speedup"), ("json_loop", "speedup_vs_json_loop")):
        theirs = section[kind]["rows_per_s"]
        section[key] = round(chattune / theirs, 2) if theirs else None
    return section


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="a 100 MB file")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender on each file (default 3)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    size = 100 if args.quick else args.size_mb
    info = run_info()
    result: dict[str, Any] = {"quick": args.quick, "repeats": args.repeats} | info
    with tempfile.TemporaryDirectory() as tmp:
        clean, bad = Path(tmp) / "ultrachat_like.jsonl", Path(tmp) / "ultrachat_like_bad.jsonl"
        rows = write_file(clean, size)
        broken = break_rows(clean, bad)
        result |= {"file_mb": round(clean.stat().st_size / 2**20, 1), "rows": rows, "bad_rows": broken}
        result["clean"] = measure(clean, args.repeats)
        result["bad_5pct"] = measure(bad, args.repeats)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(describe(info))
    for file in ("clean", "bad_5pct"):
        print(f"{file}: {result['file_mb']} MB, {rows:,} rows" + (f", {broken:,} broken" if file != "clean" else ""))
        for name in CONTENDERS:
            r = result[file][name]
            if "failed" in r:
                print(f"  {name:10s} failed: {r['failed']}")
                continue
            print(
                f"  {name:10s} {r['rows_per_s']:>9,} rows/s  {r['seconds']:>7.2f} s  "
                f"peak RSS {r['peak_rss_mb']:>8.1f} MB  bad rows found {r['bad_rows']:,}"
            )
        print(f"  chattune: {result[file]['speedup']}x pandas, {result[file]['speedup_vs_json_loop']}x the json loop")


if __name__ == "__main__":
    main()
