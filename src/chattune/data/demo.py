"""The built-in demo dataset: normalize dates written in many styles to ISO 8601 (YYYY-MM-DD).

Rows follow the ultrachat_200k schema (``prompt``, ``prompt_id``, ``messages``) and its four split names. The task
is one where SmolLM2-135M-Instruct is measurably weak (it answers in prose, or in another format) and which a few
minutes of LoRA on a laptop CPU teaches well, so exact match on ``test_gen`` shows the fine-tune working.
Generation is deterministic: the same ``seed`` and ``rows`` give byte-identical files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SPLITS = ("train_sft", "test_sft", "train_gen", "test_gen")

_MONTHS = [dt.date(2000, m, 1).strftime("%B") for m in range(1, 13)]
_ORD = {1: "st", 2: "nd", 3: "rd", 21: "st", 22: "nd", 23: "rd", 31: "st"}

_STYLES = [
    lambda d: f"{_MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day} {_MONTHS[d.month - 1]} {d.year}",
    lambda d: f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}",
    lambda d: f"the {d.day}{_ORD.get(d.day, 'th')} of {_MONTHS[d.month - 1]}, {d.year}",
    lambda d: f"{d.strftime('%A')}, {_MONTHS[d.month - 1]} {d.day}, {d.year}",
    lambda d: f"{d.day}. {_MONTHS[d.month - 1].lower()} {d.year}",
]

_ASKS = [
    "Convert this date to ISO 8601 (YYYY-MM-DD): {date}",
    "What is {date} in YYYY-MM-DD format?",
    "Normalize the date to ISO 8601: {date}",
    "Rewrite as an ISO date: {date}",
    "Date: {date}\nGive it as YYYY-MM-DD.",
]
_FOLLOW_UPS = ["And this one: {date}", "Now do the same for {date}.", "Next: {date}"]

# Rows per split for a given train_sft size: the proportions of ultrachat_200k's sft/gen splits, scaled down.
_TEST_FRACTION = 0.2


def _date(rng: random.Random) -> dt.date:
    return dt.date(1950, 1, 1) + dt.timedelta(days=rng.randrange(0, 365 * 80))


def _row(rng: random.Random, multi_turn: bool) -> dict[str, Any]:
    first = _date(rng)
    prompt = rng.choice(_ASKS).format(date=rng.choice(_STYLES)(first))
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": first.isoformat()}]
    if multi_turn:
        second = _date(rng)
        messages += [
            {"role": "user", "content": rng.choice(_FOLLOW_UPS).format(date=rng.choice(_STYLES)(second))},
            {"role": "assistant", "content": second.isoformat()},
        ]
    return {"prompt": prompt, "prompt_id": hashlib.sha256(prompt.encode()).hexdigest(), "messages": messages}


def generate(rows: int = 400, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Return the four splits; ``rows`` is the size of ``train_sft``. Prompts never repeat across splits."""
    rng = random.Random(seed)
    sizes = {
        "train_sft": rows,
        "test_sft": max(10, int(rows * _TEST_FRACTION)),
        "train_gen": max(10, int(rows * _TEST_FRACTION)),
        "test_gen": max(10, int(rows * _TEST_FRACTION)),
    }
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split in SPLITS:
        rows_out: list[dict[str, Any]] = []
        while len(rows_out) < sizes[split]:
            # Generation splits are single-turn: the metric compares one answer per prompt.
            row = _row(rng, multi_turn=split.endswith("_sft") and rng.random() < 0.25)
            if row["prompt_id"] in seen:
                continue
            seen.add(row["prompt_id"])
            rows_out.append(row)
        out[split] = rows_out
    return out


PREFERENCE_SPLITS = ("train_prefs", "test_prefs")


def generate_preferences(rows: int = 200, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The demo task as preference pairs, in UltraFeedback's split names.

    The ISO date is preferred over the date echoed back in the style it was asked in (what a base model tends to do:
    copying the prompt is likely, converting is not). ``rows`` is the size of ``train_prefs``; prompts never repeat
    across splits.
    """
    rng = random.Random(seed + 1_000)
    seen: set[str] = set()
    out: dict[str, list[dict[str, Any]]] = {}
    for split, size in zip(PREFERENCE_SPLITS, (rows, max(10, int(rows * _TEST_FRACTION))), strict=True):
        pairs: list[dict[str, Any]] = []
        while len(pairs) < size:
            day = _date(rng)
            written = rng.choice(_STYLES)(day)
            prompt = rng.choice(_ASKS).format(date=written)
            if prompt in seen:
                continue
            seen.add(prompt)
            pairs.append(
                {
                    "prompt": [{"role": "user", "content": prompt}],
                    "chosen": [{"role": "assistant", "content": day.isoformat()}],
                    "rejected": [{"role": "assistant", "content": written}],
                }
            )
        out[split] = pairs
    return out


def write_preferences(out_dir: Path, rows: int = 200, seed: int = 0) -> dict[str, Path]:
    """Write the demo preference splits to ``out_dir`` as JSON Lines; return their paths by split."""
    return _write_splits(out_dir, generate_preferences(rows, seed))


def write(out_dir: Path, rows: int = 400, seed: int = 0) -> dict[str, Path]:
    """Write the demo data set's splits to ``out_dir`` as JSON Lines, each atomically; return their paths by split."""
    return _write_splits(out_dir, generate(rows, seed))


def _write_splits(out_dir: Path, splits: dict[str, list[dict[str, Any]]]) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, split_rows in splits.items():
        path = out_dir / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for row in split_rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)
        paths[split] = path
    return paths


def corpus_for_tokenizer() -> Iterator[str]:
    """Text for training the tiny test tokenizer: the demo task plus ChatML scaffolding."""
    for split_rows in generate(rows=200, seed=1).values():
        for row in split_rows:
            for m in row["messages"]:
                yield f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    yield "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
