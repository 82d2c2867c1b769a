"""Deployment settings with Azure's names and defaults, in one place (REFERENCE.md section 5)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chattune.errors import UserError

MAX_REQUEST_TIMEOUT_MS = 180_000


class ProbeSettings(BaseModel):
    """Azure's ProbeSettings (seconds). Liveness failure restarts the instance; readiness failure takes it out of
    rotation. Until an instance first reports ready it is polled every half second (a start-up phase that never
    fails it), so a deployment is served as soon as its model is loaded instead of after ``initial_delay``."""

    model_config = ConfigDict(extra="forbid")

    initial_delay: float = Field(10, ge=0)
    period: float = Field(10, gt=0)
    timeout: float = Field(2, gt=0)
    success_threshold: int = Field(1, ge=1)
    failure_threshold: int = Field(30, ge=1)


class RequestSettings(BaseModel):
    """Azure's OnlineRequestSettings."""

    model_config = ConfigDict(extra="forbid")

    request_timeout_ms: int = Field(5000, gt=0, le=MAX_REQUEST_TIMEOUT_MS)
    max_concurrent_requests_per_instance: int = Field(1, ge=1)


def probe_settings(probes: dict[str, Any], which: str) -> ProbeSettings:
    return ProbeSettings.model_validate(probes.get(which) or {})


def parse_probe_option(flag: str, text: str | None) -> dict[str, Any]:
    """``--liveness-probe period=2,failure_threshold=3`` -> validated settings; a clear error names the field."""
    if not text:
        return {}
    values: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UserError(f"{flag}: {part!r} is not KEY=VALUE", remedy=f"e.g. {flag} period=2,failure_threshold=3")
        values[key.strip()] = value.strip()
    try:
        return ProbeSettings.model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise UserError(
            f"{flag}: {field}: {err['msg']}", remedy=f"Fields: {', '.join(ProbeSettings.model_fields)}."
        ) from exc
