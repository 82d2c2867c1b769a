"""Download chat datasets with Hugging Face ``datasets``: the first P% of every split, as the seed's script does.

``load_dataset(name, split=f"{split}[0%:{P}%]")`` takes the FIRST P percent (deterministic, not a sample), and
each split is written as ``DIR/<split>.jsonl`` with its original columns. ``name`` may be a hub id or a local
directory laid out like a hub dataset (for example ``data/<split>-00000-of-00001.parquet``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from chattune.errors import NotFoundError, OfflineError, UserError

OFFLINE_REMEDY = (
    "No dataset hub is reachable from here. Use the built-in demo data (`chattune data demo --out DIR`), or your "
    "own files (jsonl, json, parquet, csv) with `chattune data import FILE --out DIR`; or connect to the internet."
)


def _classify(dataset: str, exc: Exception) -> Exception:
    text = f"{type(exc).__name__}: {exc}"
    if type(exc).__name__ in ("DatasetNotFoundError", "FileNotFoundError", "EmptyDatasetError") and not (
        "offline" in text.lower() or "connect" in text.lower()
    ):
        return NotFoundError(
            f"dataset {dataset!r} not found ({text[:300]})",
            remedy="Check the name (owner/name on the hub) or the local directory.",
        )
    return OfflineError(f"could not reach dataset {dataset!r}: {text[:300]}", remedy=OFFLINE_REMEDY)


def _hub_unreachable(timeout_s: float = 3.0) -> str | None:
    import httpx

    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    try:
        httpx.head(endpoint, timeout=timeout_s)
    except httpx.HTTPError as exc:
        return f"{endpoint}: {type(exc).__name__}: {exc}"
    return None


def download(dataset: str, out_dir: Path, *, percent: int = 5, splits: list[str] | None = None) -> dict[str, Any]:
    """Write the first ``percent``% of each split to ``out_dir/<split>.jsonl``; return {split: {path, rows}}."""
    if not 0 < percent <= 100:
        raise UserError(f"--percent must be in 1..100, not {percent}")
    local = Path(dataset).expanduser()
    if not local.exists():
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            raise OfflineError(f"HF_HUB_OFFLINE is set, so {dataset!r} cannot be downloaded", remedy=OFFLINE_REMEDY)
        reason = _hub_unreachable()
        if reason:
            # Fail fast: the hub client would otherwise retry with back-off for half a minute.
            raise OfflineError(
                f"cannot download {dataset!r}: the hub is not reachable ({reason})", remedy=OFFLINE_REMEDY
            )
    from datasets import get_dataset_split_names, load_dataset

    source = str(local) if local.exists() else dataset
    try:
        available = get_dataset_split_names(source)
    except Exception as exc:  # datasets and huggingface_hub raise many kinds for "not there" and "not reachable"
        raise _classify(dataset, exc) from exc
    wanted = splits or list(available)
    unknown = [s for s in wanted if s not in available]
    if unknown:
        raise UserError(f"--split {', '.join(unknown)}: not in {dataset!r}", remedy=f"Splits: {', '.join(available)}.")
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {}
    for split in wanted:
        try:
            ds = load_dataset(source, split=f"{split}[0%:{percent}%]")
        except Exception as exc:
            raise _classify(dataset, exc) from exc
        path = out_dir / f"{split}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        ds.to_json(str(tmp), lines=True, force_ascii=False)
        tmp.replace(path)  # a split file is whole or absent
        result[split] = {"path": str(path), "rows": len(ds)}
    return result
