"""``chattune quickstart --json``: what the seed notebook's run produced."""

from __future__ import annotations

from typing import Any

from chattune.entities import JobStatus
from chattune.schemas.base import Schema
from chattune.schemas.endpoints import EndpointKeys


class QuickstartJob(Schema):
    """The fine-tuning job."""

    id: str
    status: JobStatus
    display_name: str


class QuickstartMetrics(Schema):
    """The evaluation metrics of the base and the fine-tuned model."""

    base: dict[str, float] = {}
    tuned: dict[str, float] = {}


class QuickstartModel(Schema):
    """The registered version."""

    name: str
    version: str


class QuickstartEndpoint(Schema):
    """The endpoint it served the model on; its keys only when it was kept running."""

    name: str
    scoring_uri: str | None = None
    deleted: bool
    keys: EndpointKeys | None = None


class QuickstartRequest(Schema):
    """The sample question sent, and the test set's reference answer (None where the row ends on the question)."""

    question: str
    reference: str | None = None


class QuickstartResult(Schema):
    """Every stage's result, with the wall time of the whole run."""

    job: QuickstartJob
    metrics: QuickstartMetrics
    model: QuickstartModel
    endpoint: QuickstartEndpoint
    request: QuickstartRequest
    response: list[dict[str, Any]]
    warnings: list[str] = []
    wall_time_s: float | None = None
