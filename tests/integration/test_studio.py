"""The studio's REST control plane as a user runs it: `chattune studio` in its own process on loopback, a job
started through `/api/v1/jobs` from the same JSON a job file holds, its events followed live over server-sent events
until it ends, and the answers equal to what the CLI prints with --json. The token: made and shown once on first
start, stored hashed; a non-loopback bind is refused until a token exists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from chattune.studio.token import TOKEN_ENV, TOKEN_FILE
from tests.conftest import parse_json
from tests.integration.conftest import start_studio

pytestmark = pytest.mark.integration


def test_a_job_started_over_rest_streams_its_events_live_and_is_served_over_rest(
    cli: Any, home: Path, studio: dict[str, Any], tmp_path: Path
) -> None:
    from chattune.data import demo

    url, auth = studio["url"], studio["auth"]
    assert not any("token" in line for line in studio["lines"])  # set by the environment: nothing to show
    paths = demo.write(tmp_path / "data", rows=24)
    spec = {
        "model": "tiny-test",
        "experiment_name": "studio",
        "data": {"train": str(paths["train_sft"]), "test": str(paths["test_sft"])},
        "training": {"per_device_train_batch_size": 4, "max_seq_length": 96, "logging_steps": 1},
        "optimization": {"apply_lora": True, "lora_r": 4},
        "evaluation": {"max_rows": 2, "max_new_tokens": 4},
    }
    created = httpx.post(f"{url}/api/v1/jobs", json=spec, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]

    events = []
    with httpx.stream("GET", f"{url}/api/v1/jobs/{job_id}/events", headers=auth, timeout=300) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line == "data: [DONE]":
                break
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    assert {e["object"] for e in events} == {"fine_tuning.job.event"}
    assert len({e["id"] for e in events}) == len(events)  # each event once
    assert any(e["type"] == "metrics" and "loss" in e["data"] for e in events)  # the live training curve

    shown = httpx.get(f"{url}/api/v1/jobs/{job_id}", headers=auth, timeout=30).json()
    assert shown["status"] == "succeeded"
    assert shown == parse_json(cli("jobs", "show", job_id, "--json"))  # one shape: the CLI's
    assert [e["id"] for e in shown["events"]] == [e["id"] for e in events]
    # the job log over server-sent events (what `jobs stream` prints): every line of the log file, then [DONE]
    with httpx.stream("GET", f"{url}/api/v1/jobs/{job_id}/logs", headers=auth, timeout=60) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        sent = [line.removeprefix("data: ") for line in stream.iter_lines() if line.startswith("data: ")]
    assert sent[-1] == "[DONE]"
    logged = [json.loads(chunk)["line"] for chunk in sent[:-1]]
    assert logged == (home / "jobs" / job_id / "job.log").read_text().splitlines()
    assert any("finetune" in line for line in logged)
    assert httpx.get(f"{url}/api/v1/jobs/ftjob-nope/logs", headers=auth, timeout=30).status_code == 404
    listed = httpx.get(f"{url}/api/v1/jobs", headers=auth, timeout=30).json()
    assert listed == parse_json(cli("jobs", "list", "--json"))
    assert httpx.get(f"{url}/api/v1/jobs", timeout=30).status_code == 401

    # the rest of the model's life over REST: register, an endpoint, a deployment, traffic, keys, logs, delete
    registered = httpx.post(
        f"{url}/api/v1/models", json={"job": job_id, "name": "studio-chat"}, headers=auth, timeout=180
    )
    assert registered.status_code == 201, registered.text
    model = registered.json()["id"]
    # tags over REST: the CLI's `models tag` document; an empty set is a 400, an unknown version a 404
    tagged = httpx.patch(f"{url}/api/v1/models/{model}/tags", json={"team": "nlp"}, headers=auth, timeout=30)
    assert tagged.status_code == 200 and tagged.json()["tags"]["team"] == "nlp", tagged.text
    assert tagged.json() == parse_json(cli("models", "tag", model, "team=nlp", "--json"))
    assert httpx.patch(f"{url}/api/v1/models/{model}/tags", json={}, headers=auth, timeout=30).status_code == 400
    missing_model = httpx.patch(f"{url}/api/v1/models/no-such:1/tags", json={"a": "b"}, headers=auth, timeout=30)
    assert missing_model.status_code == 404
    # the catalog page: every entry with its tags and a memory estimate, linked from every page's navigation
    catalog = httpx.get(f"{url}/catalog", headers=auth, timeout=30).text
    assert 'data-entry="tiny-test"' in catalog and 'data-entry="smollm2-135m-instruct"' in catalog
    assert "<code>task=chat-completion</code>" in catalog and 'href="/catalog"' in catalog
    # the compare page (the job with itself: the same parameters) and an unknown job's 404
    same = httpx.get(f"{url}/jobs/compare", params={"a": job_id, "b": job_id}, headers=auth, timeout=30)
    assert same.status_code == 200 and "The same resolved parameters." in same.text and '"loss": [[1' in same.text
    missing = httpx.get(f"{url}/jobs/compare", params={"a": job_id, "b": "ftjob-nope"}, headers=auth, timeout=30)
    assert missing.status_code == 404
    # its page: lineage back to the job (linked), its data files, base vs tuned metrics; linked from the dashboard
    page = httpx.get(f"{url}/models/{model}", headers=auth, timeout=30)
    assert page.status_code == 200 and f'href="/jobs/{job_id}"' in page.text and "Base vs fine-tuned" in page.text
    assert paths["train_sft"].name in page.text and "chat_completion" in page.text
    assert f'href="/models/{model}"' in httpx.get(f"{url}/", headers=auth, timeout=30).text
    assert httpx.get(f"{url}/models/no-such:1", headers=auth, timeout=30).status_code == 404
    # export over REST: the CLI's document; a relative folder is refused, as is a format there is none of
    exported = httpx.post(
        f"{url}/api/v1/models/{model}/export",
        json={"format": "gguf", "out": str(tmp_path / "gguf")},
        headers=auth,
        timeout=120,
    )
    assert exported.status_code == 201, exported.text
    assert exported.json()["merged"] and "Modelfile" in [f["path"] for f in exported.json()["files"]]
    for body, status in (({"format": "hf", "out": "rel"}, 400), ({"format": "onnx", "out": str(tmp_path / "x")}, 422)):
        refused = httpx.post(f"{url}/api/v1/models/{model}/export", json=body, headers=auth, timeout=30)
        assert refused.status_code == status, refused.text
    created = httpx.post(f"{url}/api/v1/endpoints", json={"name": "studio-ep"}, headers=auth, timeout=60)
    assert created.status_code == 201, created.text
    scoring, key = created.json()["scoring_uri"], created.json()["keys"]["primary_key"]
    deploy = {"name": "blue", "model": model, "settings": {"request_timeout_ms": 60000}}
    started = httpx.post(f"{url}/api/v1/endpoints/studio-ep/deployments", json=deploy, headers=auth, timeout=60)
    assert started.status_code == 202 and started.json()["state"] == "Creating", started.text
    deadline = time.monotonic() + 180
    while (state := _deployment(url, auth)["state"]) not in ("Succeeded", "Failed") and time.monotonic() < deadline:
        time.sleep(0.5)
    assert state == "Succeeded"
    # scaled over REST: the answer comes when both instances are ready; a bad count is the CLI's refusal, 4xx
    scaled = httpx.patch(
        f"{url}/api/v1/endpoints/studio-ep/deployments/blue", json={"instance_count": 2}, headers=auth, timeout=180
    )
    assert scaled.status_code == 200 and scaled.json()["instance_count"] == 2, scaled.text
    assert scaled.json()["state"] == "Succeeded" and len(scaled.json()["instances"]) == 2
    zero = {"instance_count": 0}
    bad = httpx.patch(f"{url}/api/v1/endpoints/studio-ep/deployments/blue", json=zero, headers=auth, timeout=30)
    assert bad.status_code == 422
    split = httpx.put(f"{url}/api/v1/endpoints/studio-ep/traffic", json={"blue": 100}, headers=auth, timeout=30)
    assert split.json()["traffic"] == {"blue": 100}
    # the endpoint page's mirror form: a shadow deployment at 0% live traffic gets a copy of 10%; live traffic
    # cannot be mirrored (the service's refusal, shown on the page as a 400)
    green = {**deploy, "name": "green"}
    started = httpx.post(f"{url}/api/v1/endpoints/studio-ep/deployments", json=green, headers=auth, timeout=60)
    assert started.status_code == 202, started.text
    form = {**auth, "Content-Type": "application/x-www-form-urlencoded"}
    mirrored = httpx.post(f"{url}/endpoints/studio-ep/mirror", content="blue=0&green=10", headers=form, timeout=30)
    assert mirrored.status_code == 303, mirrored.text
    ep = httpx.get(f"{url}/api/v1/endpoints/studio-ep", headers=auth, timeout=30).json()
    assert ep["mirror_traffic"] == {"green": 10} and ep["traffic"] == {"blue": 100}
    assert (
        'id="mirror-green" name="green" type="number" min="0" max="50" value="10"'
        in httpx.get(f"{url}/endpoints/studio-ep", headers=auth, timeout=30).text
    )
    refused = httpx.post(f"{url}/endpoints/studio-ep/mirror", content="blue=10&green=0", headers=form, timeout=30)
    assert refused.status_code == 400 and "live traffic" in refused.text.split('role="alert">', 1)[1]
    stopped = httpx.post(f"{url}/endpoints/studio-ep/mirror", content="blue=0&green=0", headers=form, timeout=30)
    assert stopped.status_code == 303
    httpx.delete(f"{url}/api/v1/endpoints/studio-ep/deployments/green", headers=auth, timeout=120).raise_for_status()
    body = {"input_data": {"input_string": [{"role": "user", "content": "Hi"}], "parameters": {"max_new_tokens": 2}}}
    assert httpx.post(scoring, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code == 200
    # the playground's call: a chat completion through the gateway with the workspace's key, streamed as it comes
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8, "temperature": 0}
    whole = httpx.post(f"{url}/api/v1/endpoints/studio-ep/chat", json=chat, headers=auth, timeout=60).json()
    with httpx.stream(
        "POST", f"{url}/api/v1/endpoints/studio-ep/chat?deployment=blue", json={**chat, "stream": True}, headers=auth,
        timeout=60,
    ) as streamed:  # fmt: skip
        events = [line.removeprefix("data: ") for line in streamed.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and len(events) >= 3, events  # the role, the deltas (the tiny model's may be
    # empty text), the finish reason
    text = "".join(
        json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1] if json.loads(e)["choices"]
    )
    assert text == whole["choices"][0]["message"]["content"]
    new = httpx.post(f"{url}/api/v1/endpoints/studio-ep/keys/primary/regenerate", headers=auth, timeout=30).json()
    assert new["secondary_key"] is None and new["primary_key"] != key  # only the new key, once
    assert httpx.post(scoring, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60).status_code == 401
    shown = httpx.post(f"{url}/api/v1/endpoints/studio-ep/keys/reveal", headers=auth, timeout=30).json()
    assert shown["primary_key"] == new["primary_key"]
    audit = [json.loads(line) for line in (home / "studio-audit.jsonl").read_text().splitlines()]
    assert [(a["event"], a["endpoint"]) for a in audit] == [("endpoint keys revealed", "studio-ep")]
    assert "engine ready" in httpx.get(f"{url}/api/v1/endpoints/studio-ep/deployments/blue/logs", headers=auth).text
    # the endpoint page's request metrics, read from the gateway's /metrics (the /score and chats above: 2xx; the
    # revoked key's 401s are refused before routing, so counted under no deployment), and the log page
    shown = httpx.get(f"{url}/endpoints/studio-ep", headers=auth, timeout=30).text
    row = shown.split('data-requests="blue">', 1)[1].split("</tr>", 1)[0]
    cells = [c.split("</td>")[0] for c in row.split("<td>")[2:9]]
    assert int(cells[0]) == 3 and cells[0] == cells[1], cells  # /score and the 2 chats: requests == 2xx
    logs_page = httpx.get(f"{url}/endpoints/studio-ep/deployments/blue/logs", headers=auth, timeout=30)
    assert "engine ready" in logs_page.text
    assert httpx.delete(f"{url}/api/v1/endpoints/studio-ep", headers=auth, timeout=120).status_code == 204
    assert httpx.get(f"{url}/api/v1/endpoints/studio-ep", headers=auth, timeout=30).status_code == 404


def _deployment(url: str, auth: dict[str, str]) -> dict[str, Any]:
    listed = httpx.get(f"{url}/api/v1/endpoints/studio-ep/deployments", headers=auth, timeout=30).json()
    return dict(listed[0])


def test_the_token_is_made_once_stored_hashed_and_guards_a_non_loopback_bind(home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    refused = subprocess.run(
        [sys.executable, "-m", "chattune.cli.main", "studio", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True, text=True, timeout=60, env={**env, "CHATTUNE_HOME": str(home)},
    )  # fmt: skip
    assert refused.returncode == 2 and "no studio token is set up" in refused.stderr

    proc, lines = start_studio(home)
    try:
        shown = [line for line in lines if "studio token" in line]
        assert len(shown) == 1
        token = shown[0].rsplit(" ", 1)[1]
        url = lines[-1].split()[1].removesuffix("/api/v1/")
        assert token not in (home / TOKEN_FILE).read_text()
        assert httpx.get(f"{url}/api/v1/models", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)
    again, lines = start_studio(home)  # the second start shows no token
    again.terminate()
    again.wait(10)
    assert not any("studio token" in line for line in lines)


# Operations that start processes or change the workspace's models and endpoints are not fuzzed (a generated valid
# request would start gateways or jobs); everything that reads, the session routes and data uploads are.
FUZZED_WRITES = {"POST /api/v1/session", "DELETE /api/v1/session", "PUT /api/v1/datasets/{filename}"}


def test_schemathesis_against_the_studio(studio: dict[str, Any]) -> None:
    """Generated requests, valid and invalid, against the studio's OpenAPI document: no 5xx, every answer as
    documented, invalid data refused; the studio still serves afterwards."""
    import collections

    import requests
    import schemathesis
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode

    url, auth = studio["url"], studio["auth"]
    schema = schemathesis.openapi.from_url(f"{url}/api/v1/openapi.json", headers=auth, timeout=30)
    schema.config.generation.update(with_security_parameters=False)
    session = requests.Session()
    counts: collections.Counter[tuple[str, int]] = collections.Counter()
    operations = [r.ok() for r in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.method.upper() == "GET" or op.label in FUZZED_WRITES]
    assert len(fuzzed) >= 10, [op.label for op in operations]
    for op in fuzzed:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _studio_case(op, mode, url, auth, session, counts)()
            except Unsatisfiable:
                assert mode.is_negative, op.label
    assert sum(counts.values()) >= 200, counts
    assert not [k for k in counts if k[1] >= 500], counts
    assert httpx.get(f"{url}/api/v1/models", headers=auth, timeout=30).status_code == 200


def _studio_case(op: Any, mode: Any, url: str, auth: dict[str, str], session: Any, counts: Any) -> Any:
    from hypothesis import HealthCheck, Phase, given, settings

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=15, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
              suppress_health_check=list(HealthCheck))  # fmt: skip
    def check(case: Any) -> None:
        headers = {**auth, "Origin": url}  # the session routes take only same-origin browsers
        response = case.call(base_url=url, session=session, headers=headers, timeout=60)
        counts[(op.label, response.status_code)] += 1
        if op.path.endswith("/events") and response.status_code == 200:
            return  # an event stream (never reached: generated job ids do not exist)
        case.validate_response(response, headers=headers)

    return check
