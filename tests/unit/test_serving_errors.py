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
    return TestClient(create_app(engine))  # type: ignore[arg-type]


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
    with TestClient(create_app(engine)) as live_client:  # startup: the engine starts loading in the background
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
