"""An endpoint's request metrics for the studio, read from its gateway's Prometheus ``/metrics``.

Read with the workspace's key; per deployment: requests by status class, in flight, queued and ready instances.
"""

from __future__ import annotations

from typing import Any

import httpx

# The gateway's gauges by their Prometheus names, and the column each fills.
GAUGES = {
    "chattune_gateway_in_flight": "in_flight",
    "chattune_gateway_queued_requests": "queued",
    "chattune_gateway_ready_instances": "ready_instances",
}


def by_deployment(text: str) -> dict[str, dict[str, float]]:
    """Per deployment: ``requests`` and their status classes (``2xx``, ``4xx``, ``5xx``...), and the gauges."""
    from prometheus_client.parser import text_string_to_metric_families

    found: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            deployment = sample.labels.get("deployment")
            if deployment is None:
                continue
            row = found.setdefault(deployment, {"requests": 0.0})
            if sample.name == "chattune_gateway_requests_total":
                status = f"{sample.labels.get('code', '?')[:1]}xx"
                row[status] = row.get(status, 0.0) + sample.value
                row["requests"] += sample.value
            elif sample.name in GAUGES:
                row[GAUGES[sample.name]] = sample.value
    return found


async def fetch(gateway: str, key: str) -> dict[str, Any]:
    """The gateway's metrics by deployment, or ``{"error": ...}`` when it cannot be read (the page says so)."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            answer = await client.get(f"{gateway}/metrics", headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        return {"error": f"the gateway is unreachable ({type(exc).__name__})"}
    if answer.status_code != 200:
        return {"error": f"the gateway answered {answer.status_code}"}
    return {"deployments": by_deployment(answer.text)}
