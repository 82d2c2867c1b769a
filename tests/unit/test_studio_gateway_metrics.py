"""The studio reads an endpoint's request metrics from its gateway's Prometheus text, per deployment."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from chattune.studio.gateway_metrics import by_deployment


def test_requests_by_status_class_and_the_gauges_per_deployment() -> None:
    registry = CollectorRegistry()
    requests = Counter("chattune_gateway_requests", "r", ["deployment", "code"], registry=registry)
    in_flight = Gauge("chattune_gateway_in_flight", "f", ["deployment"], registry=registry)
    ready = Gauge("chattune_gateway_ready_instances", "i", ["deployment"], registry=registry)
    requests.labels("blue", "200").inc(5)
    requests.labels("blue", "201").inc(1)
    requests.labels("blue", "429").inc(2)
    requests.labels("green", "503").inc(1)
    in_flight.labels("blue").set(3)
    ready.labels("green").set(2)
    found = by_deployment(generate_latest(registry).decode())
    assert found["blue"] == {"requests": 8.0, "2xx": 6.0, "4xx": 2.0, "in_flight": 3.0}
    assert found["green"] == {"requests": 1.0, "5xx": 1.0, "ready_instances": 2.0}
