"""Schemathesis against a live gateway (with a key) and a live instance, over loopback HTTP: more than 1,000 requests
generated from their OpenAPI documents, valid (positive) and invalid (negative) data, each answer checked by
schemathesis' checks (no 5xx, status codes, content types and bodies as documented, invalid data refused, valid data
accepted); afterwards both still serve, the instance was never restarted and neither logged a traceback.

Also: the gateway's OpenAPI document describes its forwarded routes with the instance's own request models.

Reproduce: .venv/bin/python -m pytest -m integration tests/integration/test_api_fuzz.py -s
(CHATTUNE_FUZZ_SUMMARY=path.json writes the per-operation counts there too.)
"""

from __future__ import annotations

import collections
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel, ValidationError
from schemathesis import GenerationMode

from chattune.serving.protocol import ChatCompletionRequest, ScoreRequest
from tests.conftest import instance_auth, parse_json
from tests.integration.test_endpoints import BODY

pytestmark = pytest.mark.integration

# Examples per operation, per generation mode, per server. Operations without inputs (GET /health/live, ...) have
# one example; an operation without inputs has no negative examples at all.
EXAMPLES = {"positive": 40, "negative": 220}
MIN_REQUESTS = 1000
# Generated answers are kept short (one token): the fuzzing is about the request's shape, not the text; the server
# cap on huge max_tokens is checked in test_bad_input.py.
MAX_TOKENS = 1
REQUEST_MODELS: dict[str, type[BaseModel]] = {"/score": ScoreRequest, "/v1/chat/completions": ChatCompletionRequest}

Counts = collections.Counter[tuple[str, str, str, int]]

# The request fields a schema-valid body can still ask for what the model cannot honour (an image part, tool-call
# arguments that are not JSON, tools its template does not render, a token outside its vocabulary, a schema that
# cannot be enforced): answered 400 naming the field, in OpenAI's shape, never a 5xx or a silent drop.
CANNOT_HONOUR = ("messages[", "tools", "tool_choice", "logit_bias", "response_format", "top_logprobs", "max_tokens",
                 "max_new_tokens")  # fmt: skip


def _cannot_honour(response: Any) -> bool:
    """A 400 that says which field the model cannot honour (checked here instead of by schemathesis' positive-data
    check, which takes any 4xx to a schema-valid body as a bug)."""
    if response.status_code != 400:
        return False
    error = response.json().get("error") or {}
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error", error
    return error["code"] == "invalid_input" and str(error["param"] or "").startswith(CANNOT_HONOUR)


def _short(path: str, body: Any, positive: bool) -> None:
    """A valid body gets a one-token answer, so that 1,000 requests take seconds on a laptop CPU. In negative mode the
    body is touched only when it is valid (the invalid part is then elsewhere: an unexpected query parameter)."""
    if not isinstance(body, dict):
        return
    if not positive:
        try:
            REQUEST_MODELS[path].model_validate(body)
        except (KeyError, ValidationError):
            return
    if "messages" in body:
        body["max_tokens"] = MAX_TOKENS
        body.pop("max_completion_tokens", None)
    data = body.get("input_data")
    if isinstance(data, dict):
        params = data.get("parameters")
        params = params if isinstance(params, dict) else {}
        params["max_new_tokens"] = MAX_TOKENS
        data["parameters"] = params


def _fuzz(server: str, base: str, headers: dict[str, str], counts: Counts, seconds: dict[str, float]) -> None:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json", headers=headers, timeout=30)
    # The key is sent with every request (below); generating Authorization values would only replace it.
    schema.config.generation.update(with_security_parameters=False)
    session = requests.Session()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /score", "POST /v1/chat/completions", "GET /v1/models"}
    for op in operations:
        # Invalid data for an operation without a body: only its optional string header, which cannot be made invalid.
        modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if op.body else [GenerationMode.POSITIVE]
        for mode in modes:
            started = time.monotonic()
            try:
                _operation_test(server, op, mode, base, session, headers, counts)()
            except Unsatisfiable:
                assert mode.is_negative, f"{server} {op.label}: no valid request could be generated"
            seconds[f"{server} {op.label} {mode.value}"] = round(time.monotonic() - started, 1)


def _operation_test(
    server: str, op: Any, mode: Any, base: str, session: requests.Session, headers: dict[str, str], counts: Counts
) -> Any:
    @given(case=op.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES[mode.value],
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        _short(op.path, case.body, mode.is_positive)
        response = case.call(base_url=base, session=session, headers=headers, timeout=60)
        counts[(server, op.label, mode.value, response.status_code)] += 1
        if mode.is_positive and _cannot_honour(response):
            return
        case.validate_response(response, headers=headers)  # raises on any failed check

    return check


def _resolved(node: Any, doc: dict[str, Any]) -> Any:
    """``node`` with every $ref replaced by its target, and titles (named after the handler) dropped."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolved(doc["components"]["schemas"][node["$ref"].rsplit("/", 1)[1]], doc)
        return {k: _resolved(v, doc) for k, v in node.items() if k != "title"}
    if isinstance(node, list):
        return [_resolved(v, doc) for v in node]
    return node


def _same_documented_api(gateway: dict[str, Any], instance: dict[str, Any]) -> None:
    for path, method in (("/score", "post"), ("/v1/chat/completions", "post"), ("/v1/models", "get")):
        ours, theirs = gateway["paths"][path][method], instance["paths"][path][method]
        assert _resolved(ours.get("requestBody"), gateway) == _resolved(theirs.get("requestBody"), instance), path
        for status, answer in theirs["responses"].items():  # the gateway documents more (401, 408, 429, 502)
            assert _resolved(ours["responses"][status]["content"], gateway) == _resolved(answer["content"], instance)
        assert "security" not in ours and gateway["security"] == [{"endpointKey": []}]  # the document-wide key
    assert gateway["paths"]["/health/live"]["get"]["security"] == []
    assert gateway["components"]["securitySchemes"]["endpointKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "the endpoint's primary or secondary key",
    }


def test_schemathesis_against_live_gateway_and_instance(cli: Any, served: dict[str, Any]) -> None:
    ep = served["endpoint"]
    instance = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]["instances"][0]
    instance_url = f"http://127.0.0.1:{instance['port']}"
    auth = instance_auth(Path(os.environ["CHATTUNE_HOME"]), ep)  # the fuzzer stands in for the gateway
    _same_documented_api(
        httpx.get(f"{served['base']}/openapi.json", headers=served["headers"], timeout=30).json(),
        httpx.get(f"{instance_url}/openapi.json", headers=auth, timeout=30).json(),
    )
    counts: Counts = collections.Counter()
    seconds: dict[str, float] = {}
    started = time.monotonic()
    _fuzz("gateway", served["base"], served["headers"], counts, seconds)
    _fuzz("instance", instance_url, auth, counts, seconds)
    elapsed = time.monotonic() - started

    per_operation: dict[str, dict[str, Any]] = {k: {"seconds": v} for k, v in seconds.items()}
    for (server, label, mode, status), n in sorted(counts.items()):
        per_operation[f"{server} {label} {mode}"][str(status)] = n
    total = sum(counts.values())
    summary = {"requests": total, "seconds": round(elapsed, 1), "per_operation": per_operation}
    print(json.dumps(summary, indent=1))
    if os.environ.get("CHATTUNE_FUZZ_SUMMARY"):
        Path(os.environ["CHATTUNE_FUZZ_SUMMARY"]).write_text(json.dumps(summary, indent=1))
    assert total >= MIN_REQUESTS, summary
    assert not [k for k in counts if k[3] >= 500], summary
    for server in ("gateway", "instance"):
        for label in ("POST /score", "POST /v1/chat/completions"):
            assert any(k[:2] == (server, label) and k[3] == 200 for k in counts), f"{server} {label}: never a 200"
            assert any(k[:3] == (server, label, "negative") and 400 <= k[3] < 500 for k in counts)

    # no crash: both still serve, the instance process is the one that was fuzzed, and no traceback was logged
    assert httpx.post(served["uri"], json=BODY, headers=served["headers"], timeout=60).status_code == 200
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
    assert httpx.post(f"{instance_url}/v1/chat/completions", json=chat, headers=auth, timeout=60).status_code == 200
    after = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]["instances"][0]
    assert (after["pid"], after["restarts"], after["state"]) == (instance["pid"], 0, "Ready")
    logs = Path(os.environ["CHATTUNE_HOME"]) / "endpoints" / ep
    for log in logs.glob("*.log"):
        text = log.read_text(encoding="utf-8", errors="replace")
        assert "Traceback" not in text and "batch step failed" not in text, f"{log}:\n{text[-3000:]}"
