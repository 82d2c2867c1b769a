"""The studio's guard, on its real app and a real workspace: every route but /health and the login needs the token
(a bearer key) or a browser session opened with it; a session's state changes must come from the studio's own
origin; a rotated token ends its sessions; the token is stored only as its hash; answers are the CLI's documents."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chattune.studio.app import create_studio
from chattune.studio.auth import SESSION_COOKIE
from chattune.studio.token import TOKEN_FILE, StudioToken
from chattune.workspace import Workspace, documents

ORIGIN = {"Origin": "http://testserver"}  # TestClient's own host: the studio's origin
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@pytest.fixture
def studio(home: Path) -> tuple[TestClient, str, Workspace]:
    ws = Workspace.from_env()
    token = StudioToken(ws.settings.home).ensure()
    assert token
    return TestClient(create_studio(ws)), token, ws


def test_every_route_needs_the_token_but_health_and_login(studio: tuple[TestClient, str, Workspace]) -> None:
    client, token, _ = studio
    app = client.app
    table = {(r.path, m) for r in app.routes for m in getattr(r, "methods", None) or METHODS}  # type: ignore[attr-defined]
    assert len(table) > 10
    for path, method in sorted(table):
        url = re.sub(r"\{[^}]+\}", "x1", path)
        r = client.request(method, url, follow_redirects=False)
        if path in {"/health", "/api/v1/session", "/login"}:
            assert r.status_code not in (401, 303), (method, path)
        elif method == "GET" and not path.startswith("/api/"):  # a page: to the login form
            assert r.status_code == 303 and r.headers["location"] == "/login", (method, path, r.status_code)
        else:
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, path, r.status_code)
            assert client.request(method, url, headers={"Authorization": "Bearer wrong"}).status_code == 401
        if path not in {"/health", "/api/v1/session", "/login"}:
            with_token = client.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, follow_redirects=False
            )
            assert with_token.status_code not in (401, 403), (method, path)
            assert with_token.status_code != 303 or path == "/logout", (method, path)


def test_a_browser_session_is_httponly_strict_and_refuses_cross_site_changes(
    studio: tuple[TestClient, str, Workspace],
) -> None:
    client, token, ws = studio
    assert client.post("/api/v1/session", json={"token": "nope"}, headers=ORIGIN).status_code == 401
    assert client.post("/api/v1/session", json={"token": token}).status_code == 403  # no origin: not our page
    login = client.post("/api/v1/session", json={"token": token}, headers=ORIGIN)
    assert login.status_code == 204
    cookie = login.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert token not in cookie

    jobs = client.get("/api/v1/jobs")  # the session cookie is enough to read
    assert jobs.status_code == 200 and jobs.json() == documents.job_page(ws, 20, None).model_dump(mode="json")
    evil = client.post("/api/v1/jobs/ftjob-x/cancel", headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_site_request"
    assert client.post("/api/v1/jobs/ftjob-x/cancel").status_code == 403  # no origin at all: refused too
    assert client.post("/api/v1/jobs/ftjob-x/cancel", headers=ORIGIN).status_code == 404  # ours: on to the route

    # a rotated token ends the sessions opened with the old one
    new = StudioToken(ws.settings.home).rotate()
    assert client.get("/api/v1/jobs").status_code == 401
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert client.get("/api/v1/jobs", headers={"Authorization": f"Bearer {new}"}).status_code == 200
    stored = (ws.settings.home / TOKEN_FILE).read_text()
    assert new not in stored and token not in stored and len(json.loads(stored)["hash"]) == 64
    assert oct((ws.settings.home / TOKEN_FILE).stat().st_mode & 0o777) == "0o600"


def test_the_api_answers_the_clis_documents_and_clear_errors(studio: tuple[TestClient, str, Workspace]) -> None:
    client, token, ws = studio
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/models", headers=auth).json() == documents.model_list(ws).model_dump(mode="json")
    assert client.get("/api/v1/endpoints", headers=auth).json() == []
    assert client.get("/api/v1/openapi.json", headers=auth).json()["info"]["title"] == "chattune studio"
    missing = client.get("/api/v1/jobs/ftjob-nope", headers=auth)
    assert missing.status_code == 404 and "ftjob-nope" in missing.json()["error"]["message"]
    bad = client.post("/api/v1/jobs", content="model: [", headers={**auth, "Content-Type": "application/yaml"})
    assert bad.status_code == 400 and "not valid YAML" in bad.json()["error"]["message"]
    typo = client.post("/api/v1/jobs", json={"model": "tiny-test", "trainng": {}}, headers=auth)
    assert typo.status_code == 400 and "trainng" in typo.json()["error"]["message"]


def test_a_data_file_is_uploaded_validated_by_line_and_paged(studio: tuple[TestClient, str, Workspace]) -> None:
    client, token, ws = studio
    auth = {"Authorization": f"Bearer {token}"}
    good = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(5)
    ]
    text = "\n".join(json.dumps(r) for r in good[:3]) + '\n{"messages": [{"role": "wizard", "content": "x"}]}\n'
    text += "\n".join(json.dumps(r) for r in good[3:]) + "\n"
    report = client.put("/api/v1/datasets/chat.jsonl", content=text, headers=auth).json()
    assert report["valid"] is False and report["files"][0]["rows"] == 6
    assert [(e["line"], e["code"]) for e in report["files"][0]["errors"]] == [
        (4, report["files"][0]["errors"][0]["code"])
    ]
    assert (ws.settings.home / "datasets" / "chat.jsonl").read_text() == text  # kept as sent

    page = client.get("/api/v1/datasets/chat.jsonl?offset=2&rows=2", headers=auth).json()
    assert [r["line"] for r in page["rows"]] == [3, 4] and page["errors"] == 1
    assert page["rows"][0]["messages"][1] == {"role": "assistant", "content": "a2"}
    assert page == documents.data_preview(
        ws, ws.settings.home / "datasets" / "chat.jsonl", rows=2, offset=2
    ).model_dump(mode="json")
    for bad in ("../escape.jsonl", "x.exe", ".hidden.jsonl"):
        r = client.put(f"/api/v1/datasets/{bad}", content="{}", headers=auth)
        assert r.status_code in (404, 422), bad  # not a plain data file name: refused by the route
    assert client.get("/api/v1/datasets/none.jsonl", headers=auth).status_code == 404


def test_revealing_endpoint_keys_is_explicit_and_audited(studio: tuple[TestClient, str, Workspace]) -> None:
    client, token, ws = studio
    auth = {"Authorization": f"Bearer {token}"}
    assert client.post("/api/v1/endpoints/nope/keys/reveal", headers=auth).status_code == 404
    assert not (ws.settings.home / "studio-audit.jsonl").exists()  # a refused reveal revealed nothing
    created = client.post("/api/v1/endpoints/nope/deployments", json={"name": "blue", "model": "m:1"}, headers=auth)
    assert created.status_code == 404
    bad = client.post(
        "/api/v1/endpoints/nope/deployments",
        json={"name": "blue", "model": "m:1", "settings": {"instance_count": 0}},
        headers=auth,
    )
    assert bad.status_code == 400 and "--instances" in bad.json()["error"]["message"]
