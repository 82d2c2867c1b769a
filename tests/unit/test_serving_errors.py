"""chattune.serving.errors on an instance app with no model loaded: bodies that are not JSON, not sent as JSON, or the
wrong shape are each answered 4xx in OpenAI's error shape, with a status that says which; and, on a real engine,
readiness only once the model is loaded and warmed."""

from __future__ import annotations

import types
from typing import Any

import pytest
from fastapi.testclient import TestClient

from chattune.serving.app import create_app
from chattune.serving.metrics import InstanceMetrics

CHAT = "/v1/chat/completions"


@pytest.fixture(scope="module")
def client() -> TestClient:
    engine = types.SimpleNamespace(
        metrics=InstanceMetrics(), start=lambda: None, ready=types.SimpleNamespace(is_set=lambda: False), failed=None
    )
    return TestClient(create_app(engine, token=None))  # type: ignore[arg-type]


def _error(response: Any, status: int, code: str | None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["code"] == code
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({"content": b'{"messages": []}', "headers": {"content-type": "text/plain"}}, "'text/plain'"),
        ({"data": {"messages": "hi"}}, "'application/x-www-form-urlencoded'"),
        ({"files": {"messages": ("m.json", b"{}")}}, "multipart/form-data"),
        ({"content": b'{"messages": []}'}, "'no Content-Type'"),
    ],
    ids=["text-plain", "form", "multipart", "none"],
)
def test_a_body_not_sent_as_json_is_415(client: TestClient, kwargs: dict[str, Any], shown: str) -> None:
    message = _error(client.post(CHAT, **kwargs), 415, "unsupported_media_type")
    assert "application/json" in message and shown in message


@pytest.mark.parametrize("body", [b"not json", b'{"messages": [', b"{'single': 'quotes'}"])
def test_a_body_that_is_not_json_is_400(client: TestClient, body: bytes) -> None:
    response = client.post(CHAT, content=body, headers={"content-type": "application/json"})
    assert _error(response, 400, "invalid_json").startswith("the body is not valid JSON: ")


def test_invalid_utf8_is_400(client: TestClient) -> None:
    body = b'{"messages": [{"role": "user", "content": "\xff\xfe"}]}'
    _error(client.post(CHAT, content=body, headers={"content-type": "application/json"}), 400, None)


@pytest.mark.parametrize("body", [b"[]", b"null", b"5", b'"text"', b'{"messages": "hi"}'])
def test_json_of_the_wrong_shape_is_422(client: TestClient, body: bytes) -> None:
    _error(client.post(CHAT, content=body, headers={"content-type": "application/json"}), 422, "invalid_request")


def test_a_json_subtype_is_json(client: TestClient) -> None:
    response = client.post(CHAT, content=b'{"messagez": []}', headers={"content-type": "application/vnd.x+json"})
    assert "messagez" in _error(response, 422, "invalid_request")


def test_a_wrong_method_is_a_client_error(client: TestClient) -> None:
    _error(client.put(CHAT), 405, None)
    response = client.get("/nope")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    # No Content-Length: BodyLimit counts while FastAPI reads the body. FastAPI answered any error raised there as a
    # 400 "There was an error parsing the body" (found by tests/integration/test_bad_input.py).
    def chunks() -> Any:
        yield b'{"messages": [{"role": "user", "content": "'
        for _ in range(5):
            yield b"x" * 2**20
        yield b'"}]}'

    response = client.post(CHAT, content=chunks(), headers={"content-type": "application/json"})
    assert "over 4194304 bytes" in _error(response, 413, "request_too_large")


def test_ready_only_after_the_model_is_loaded_and_warmed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real engine on the tiny model, its warm-up held back: live at once, ready (200) only once warmed."""
    import threading

    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model
    from chattune.serving.engine import Engine

    build_random_model(get_entry("tiny-test").source, tmp_path / "model")
    engine = Engine(str(tmp_path / "model"), None, "tiny:1", "tiny-test")
    release, warming = threading.Event(), threading.Event()
    real_warm_up = engine._warm_up

    def held_warm_up() -> None:
        warming.set()
        assert release.wait(30)
        real_warm_up()

    monkeypatch.setattr(engine, "_warm_up", held_warm_up)
    with TestClient(
        create_app(engine, token=None)
    ) as live_client:  # startup: the engine starts loading in the background
        assert live_client.get("/health/live").status_code == 200
        assert warming.wait(30)  # loaded, warming up
        loading = live_client.get("/health/ready")
        assert loading.status_code == 503 and loading.json()["error"]["code"] == "loading"
        early = live_client.post(CHAT, json={"messages": [{"role": "user", "content": "hi"}]})
        assert early.status_code == 503 and early.json()["error"]["type"] == "service_unavailable_error"
        release.set()
        assert engine.ready.wait(30)
        assert live_client.get("/health/ready").json() == {"status": "ready"}
        assert live_client.post(
            CHAT, json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        ).is_success


def test_a_client_that_disconnects_stops_its_generation(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-streamed request sends nothing until it is done; a client that leaves before then (its timeout, the
    gateway's request_timeout_ms) must not keep the model generating. Driven as raw ASGI so that the disconnect is
    exact; the tiny model is slowed (20 ms a step) and never emits EOS, so only the cancel can end it early."""
    import asyncio
    import json
    import time

    import torch

    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model
    from chattune.serving.engine import Engine

    monkeypatch.setenv("CHATTUNE_INFERENCE_DTYPE", "float32")
    build_random_model(get_entry("tiny-test").source, tmp_path / "model")
    engine = Engine(str(tmp_path / "model"), None, "tiny:1", "tiny-test")
    engine.start()
    assert engine.ready.wait(60), engine.failed
    model = engine._scheduler.model  # type: ignore[union-attr]
    steps = 0

    def slow_and_endless(module: Any, args: Any, output: Any) -> Any:
        nonlocal steps
        steps += 1
        time.sleep(0.02)
        for eos in engine._scheduler.eos:  # type: ignore[union-attr]
            output.logits[..., eos] = -torch.inf
        return output

    model.register_forward_hook(slow_and_endless)
    app = create_app(engine, token=None)
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}).encode()
    sent: list[dict[str, Any]] = []

    async def call() -> None:
        gone = asyncio.Event()
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": CHAT,
            "raw_path": CHAT.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
        }
        handler = asyncio.create_task(app(scope, receive, send))  # type: ignore[arg-type]
        while steps < 5:  # generating
            await asyncio.sleep(0.02)
        gone.set()  # the client leaves
        await asyncio.wait_for(handler, 30)  # the handler ends instead of generating 1,000 tokens (20 s here)

    asyncio.run(call())
    assert sent[0]["status"] == 499  # counted as nginx's "client closed request"; nobody reads it
    deadline = time.monotonic() + 10
    while engine.metrics.running._value.get() > 0 and time.monotonic() < deadline:  # the row leaves the batch
        time.sleep(0.05)
    settled = steps
    time.sleep(0.5)
    assert steps == settled < 200, steps  # the model is no longer called for it


def test_an_instance_answers_only_the_bearer_of_its_gateways_token() -> None:
    engine = types.SimpleNamespace(
        metrics=InstanceMetrics(), start=lambda: None, ready=types.SimpleNamespace(is_set=lambda: False), failed=None
    )
    with TestClient(create_app(engine, token="gateway-token")) as http:  # type: ignore[arg-type]
        wrong = ({}, {"Authorization": "Bearer not-it"}, {"Authorization": "Basic gateway-token"})
        for headers in (*wrong, {"Authorization": "Bearer gateway-tokén".encode("latin-1")}):  # non-ASCII: 401, not 500
            gateway_only = (("PUT", "/threads"), ("PUT", "/adapters/a:1"), ("DELETE", "/adapters/a:1"))
            for method, path in (("GET", "/v1/models"), ("GET", "/metrics"), ("POST", "/score"), ("POST", CHAT),
                                 *gateway_only):  # fmt: skip
                r = http.request(method, path, headers=headers, json={})
                assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, headers)
                assert r.json()["error"]["code"] == "invalid_api_key"
        # the probes stay open; the token opens the rest (here a body-shape error, past authentication)
        assert http.get("/health/live").status_code == 200
        assert http.get("/health/ready").status_code == 503  # no model loaded, but answered
        assert http.get("/metrics", headers={"Authorization": "Bearer gateway-token"}).status_code == 200
        assert http.post(CHAT, json={}, headers={"Authorization": "bearer gateway-token"}).status_code == 422


def test_behind_a_route_prefix_only_the_probes_are_open() -> None:
    """Behind Ray Serve's proxy the request path carries the route prefix (``root_path``): the probes stay public,
    every other route (dressed up or not) still needs the token."""
    engine = types.SimpleNamespace(
        metrics=InstanceMetrics(), start=lambda: None, ready=types.SimpleNamespace(is_set=lambda: True), failed=None
    )
    app = create_app(engine, token="tok")  # type: ignore[arg-type]
    with TestClient(app, root_path="/ep/blue") as prefixed:
        assert prefixed.get("/ep/blue/health/ready").json() == {"status": "ready"}
        assert prefixed.get("/ep/blue/health/live").status_code == 200
        for path in ("/ep/blue/metrics", "/ep/blue/v1/models", "/health/ready/../metrics", "/ep/blue"):
            assert prefixed.get(path).status_code == 401, path
        assert prefixed.get("/ep/blue/metrics", headers={"Authorization": "Bearer tok"}).status_code == 200
