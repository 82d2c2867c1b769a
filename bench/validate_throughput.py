"""Validation throughput and memory: chattune's streaming validator vs the seed's pandas read, same file, one run.

    python bench/validate_throughput.py [--size-mb 1024] [--quick] [--json]

Writes an ultrachat-like JSON Lines file (prompt, prompt_id, 1-4 user/assistant turns, ~2.7 KB a row) to a temp
directory, then runs each contender in its own process (so peak RSS is its own) and reports rows/s, seconds and
peak RSS. Baseline: `pandas.read_json(path, lines=True)` as the seed notebook loads train_sft.jsonl, plus the same
basic per-row checks done on the DataFrame.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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


def child(kind: str, path: str) -> None:
    # Imports are outside the timed region (the figure is the per-row cost), and each process imports only what
    # it uses, so that peak RSS is its own.
    if kind == "chattune":
        from chattune.data.validate import validate_file
    else:
        import pandas as pd
    started = time.perf_counter()
    if kind == "chattune":
        report = validate_file(Path(path))
        rows, ok = report.rows, report.valid
    else:
        df = pd.read_json(path, lines=True)
        ok = bool(
            df["messages"]
            .map(
                lambda ms: (
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
            )
            .all()
        )
        rows = len(df)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {
                "rows": rows,
                "valid": ok,
                "seconds": round(seconds, 2),
                "rows_per_s": round(rows / seconds),
                "peak_rss_mb": round(peak_mb, 1),
            }
        )
    )


def run(kind: str, path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(path)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--quick", action="store_true", help="a 100 MB file")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    size = 100 if args.quick else args.size_mb
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ultrachat_like.jsonl"
        rows = write_file(path, size)
        result: dict[str, Any] = {
            "file_mb": round(path.stat().st_size / 2**20, 1),
            "rows": rows,
            "chattune": run("chattune", path),
            "baseline_pandas": run("pandas", path),
        }
    result["speedup"] = round(result["chattune"]["rows_per_s"] / result["baseline_pandas"]["rows_per_s"], 2)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name in ("chattune", "baseline_pandas"):
            r = result[name]
            print(
                f"{name:16s} {r['rows_per_s']:>9,} rows/s  {r['seconds']:>7.2f} s  peak RSS {r['peak_rss_mb']:>8.1f} MB"
            )
        print(f"file {result['file_mb']} MB, {rows:,} rows; chattune is {result['speedup']}x the baseline")


if __name__ == "__main__":
    main()
