"""Prometheus metrics of one serving instance (``GET /metrics``): requests, tokens, latency, queue, batches."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Summary

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class InstanceMetrics:
    """Prometheus metrics of one instance, in their own registry: requests, latency, tokens, queue and batch sizes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("chattune_requests", "Requests by route and status", ["route", "code"], registry=r)
        self.latency = Histogram(
            "chattune_request_latency_seconds", "Request latency", ["route"], buckets=LATENCY_BUCKETS, registry=r
        )
        self.first_token = Histogram(
            "chattune_time_to_first_token_seconds", "Time to the first generated token", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.prompt_tokens = Counter("chattune_prompt_tokens", "Prompt tokens processed", registry=r)
        self.cached_prompt_tokens = Counter(
            "chattune_cached_prompt_tokens",
            "Prompt tokens whose keys and values came from the prefix cache",
            registry=r,
        )
        self.generated_tokens = Counter("chattune_generated_tokens", "Tokens generated", registry=r)
        self.queue_depth = Gauge("chattune_queue_depth", "Requests waiting for a batch slot", registry=r)
        self.running = Gauge("chattune_running_requests", "Requests being generated", registry=r)
        self.threads = Gauge("chattune_torch_threads", "Torch threads of the forward passes", registry=r)
        self.mixed_steps = Counter(
            "chattune_mixed_steps", "Decoding steps that also prefilled newly admitted requests", registry=r
        )
        self.batch_size = Histogram(
            "chattune_batch_size", "Sequences per forward step", buckets=(1, 2, 4, 8, 16, 32, 64), registry=r
        )
        # by the exact number of rows (at most the engine's batch size): what one more row costs a step on this
        # machine, which bounds what batching can gain (bench/serve_throughput.py reports it)
        self.decode_step = Summary(
            "chattune_decode_step_seconds",
            "Time of a decoding step with no prompt in it, by the rows it advanced",
            ["rows"],
            registry=r,
        )
