"""Two jobs side by side for the studio's compare page: their loss curves, the parameters that differ, their metrics."""

from __future__ import annotations

from typing import Any

from chattune.schemas import JobPublic


def curves(job: JobPublic) -> dict[str, list[list[float]]]:
    """A job's training and evaluation loss by step, from its metrics events."""
    out: dict[str, list[list[float]]] = {"loss": [], "eval_loss": []}
    for event in job.events:
        step = event.data.get("step")
        if event.type != "metrics" or not isinstance(step, (int, float)):
            continue
        for key, points in out.items():
            if isinstance(value := event.data.get(key), (int, float)):
                points.append([step, value])
    return out


def differences(a: JobPublic, b: JobPublic) -> list[dict[str, Any]]:
    """The resolved parameters whose values differ between the two jobs, by name, with where each came from."""
    rows = []
    for name in sorted(set(a.resolved_config) | set(b.resolved_config)):
        left, right = a.resolved_config.get(name, {}), b.resolved_config.get(name, {})
        if left.get("value") != right.get("value"):
            rows.append({"name": name, "a": left, "b": right})
    return rows


def metric_rows(a: JobPublic, b: JobPublic) -> list[dict[str, Any]]:
    """The evaluation metrics of both jobs' tuned models (and their base), one row per metric."""
    names = sorted(set(a.metrics.get("tuned", {})) | set(b.metrics.get("tuned", {})))
    return [
        {
            "name": name,
            "base": a.metrics.get("base", {}).get(name),
            "a": a.metrics.get("tuned", {}).get(name),
            "b": b.metrics.get("tuned", {}).get(name),
        }
        for name in names
    ]
