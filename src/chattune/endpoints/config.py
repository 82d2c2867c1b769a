"""Deployment settings as a user gives them (CLI flags, SDK objects) -> the one typed ``DeploymentSettings``.

The model, its defaults and bounds live in ``chattune.entities``; this module only turns user text into it, with
errors that name the flag the user typed.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from chattune.entities import DeploymentSettings, ProbeSettings
from chattune.errors import UserError

# The CLI flag of each setting, so that an error names what the user typed.
FLAGS = {
    "instance_count": "--instances",
    "request_timeout_ms": "--request-timeout-ms",
    "max_concurrent_requests_per_instance": "--max-concurrent-requests-per-instance",
    "max_queue_wait_ms": "--max-queue-wait-ms",
    "max_queue_length": "--max-queue-length",
    "liveness_probe": "--liveness-probe",
    "readiness_probe": "--readiness-probe",
    "max_batch_size": "--max-batch-size",
    "max_new_tokens_cap": "--max-new-tokens-cap",
    "autoscale": "autoscale",
    "cpus_per_instance": "--cpus-per-instance",
    "prefix_cache_mb": "--prefix-cache-mb",
    "min_instances": "--min-instances",
    "max_instances": "--max-instances",
    "target_requests_per_instance": "--target-requests-per-instance",
}


def _first_error(exc: ValidationError, model: type[BaseModel], flag_of: dict[str, str] | None = None) -> UserError:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    if len(loc) > 1 and (flag_of or {}).get(loc[0]) == loc[0]:
        loc = loc[1:]  # a nested model's field has a flag of its own (autoscale.max_instances: --max-instances)
    head = (flag_of or {}).get(loc[0], loc[0]) if loc else model.__name__
    field = ".".join([head, *loc[1:]])
    return UserError(f"{field}: {err['msg']}", remedy=f"Fields: {', '.join(model.model_fields)}.")


def deployment_settings(given: dict[str, Any]) -> DeploymentSettings:
    """``DeploymentSettings`` from the values a user gave (None: not given, the default applies).

    Raises:
        UserError: a value out of bounds, naming its CLI flag.
    """
    try:
        return DeploymentSettings.model_validate({k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise _first_error(exc, DeploymentSettings, FLAGS) from exc


def parse_probe_option(flag: str, text: str | None) -> dict[str, Any] | None:
    """``--liveness-probe period=2,failure_threshold=3`` -> validated settings (None when not given).

    Raises:
        UserError: text that is not KEY=VALUE pairs of ProbeSettings fields, naming the field.
    """
    if not text:
        return None
    values: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep:
            raise UserError(f"{flag}: {part!r} is not KEY=VALUE", remedy=f"e.g. {flag} period=2,failure_threshold=3")
        values[key.strip()] = value.strip()
    try:
        return ProbeSettings.model_validate(values).model_dump(exclude_unset=True)
    except ValidationError as exc:
        err = _first_error(exc, ProbeSettings)
        raise UserError(f"{flag}: {err.message}", remedy=err.remedy) from exc
