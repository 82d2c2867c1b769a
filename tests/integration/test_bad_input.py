"""Bad input, for real: requests to a live gateway and a live instance over loopback HTTP (huge bodies, huge
max_tokens, wrong JSON types, wrong content types, invalid UTF-8, non-JSON, unknown models, adapters and
deployments), each answered 4xx in OpenAI's error shape and each followed by a good request that is served; and names
that try path traversal or odd characters, refused by every CLI command that takes one, with exit code 2.

Already covered elsewhere, not repeated here: a 5 MiB body with its Content-Length at the gateway (413) and
max_tokens=10**6 through the gateway (over a deployment's cap) in test_endpoints.py; `{"messages": "nope"}` (422) in
test_quickstart.py.

Reproduce: .venv/bin/python -m pytest -m integration tests/integration/test_bad_input.py
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import instance_auth, parse_json

pytestmark = pytest.mark.integration

MiB = 2**20
CAP = 1024  # the instance's --max-new-tokens-cap default
MESSAGES = [{"role": "user", "content": "Hi"}]
GOOD_SCORE = {"input_data": {"input_string": [MESSAGES], "parameters": {"max_new_tokens": 1}}}
GOOD_CHAT = {"messages": MESSAGES, "max_tokens": 1}
JSON = {"content-type": "application/json"}


def _chunks(total: int) -> Iterator[bytes]:
    """A body without Content-Length (chunked transfer encoding): the limit is enforced while it arrives."""
    yield b'{"messages": [{"role": "user", "content": "'
    for _ in range(total // MiB):
        yield b"x" * MiB
    yield b'"}]}'


def _assert_openai_error(r: httpx.Response, status: int, code: str | None = None, what: str = "") -> dict[str, Any]:
    assert r.status_code == status, f"{what}: {r.status_code} {r.text[:500]}"
    body = r.json()
    assert list(body) == ["error"], what
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, what
    assert isinstance(error["message"], str) and error["message"], what
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error"), what
    assert error["param"] is None or isinstance(error["param"], str), what
    if code is not None:
        assert error["code"] == code, f"{what}: {error}"
    return dict(error)


# (what, method, path, request keyword arguments, status, code); every case goes to the gateway and to an instance
CASES: list[tuple[str, str, str, dict[str, Any], int, str | None]] = [
    ("chunked 5 MiB body", "POST", "/v1/chat/completions", {"content": _chunks, "headers": JSON}, 413,
     "request_too_large"),
    ("messages a string", "POST", "/v1/chat/completions", {"json": {"messages": "hi"}}, 422, "invalid_request"),
    ("content a number", "POST", "/v1/chat/completions",
     {"json": {"messages": [{"role": "user", "content": 5}], "max_tokens": 1}}, 422, "invalid_request"),
    ("role unknown", "POST", "/v1/chat/completions",
     {"json": {"messages": [{"role": "robot", "content": "x"}], "max_tokens": 1}}, 422, "invalid_request"),
    ("max_tokens a string", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "max_tokens": "5"}}, 422,
     "invalid_request"),
    ("n true", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "n": True}}, 422, "invalid_request"),
    ("seed false", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "seed": False}}, 422, "invalid_request"),
    ("max_tokens 0", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "max_tokens": 0}}, 422,
     "invalid_request"),
    ("temperature NaN", "POST", "/v1/chat/completions",
     {"content": b'{"messages": [{"role": "user", "content": "x"}], "temperature": NaN}', "headers": JSON}, 422,
     "invalid_request"),
    ("body a list", "POST", "/v1/chat/completions", {"json": []}, 422, "invalid_request"),
    ("body null", "POST", "/v1/chat/completions", {"content": b"null", "headers": JSON}, 422, "invalid_request"),
    ("score parameters a string", "POST", "/score",
     {"json": {"input_data": {"input_string": [MESSAGES], "parameters": "fast"}}}, 422, "invalid_request"),
    ("score temperature a string", "POST", "/score",
     {"json": {"input_data": {"input_string": [MESSAGES], "parameters": {"temperature": "0.5"}}}}, 422,
     "invalid_request"),
    ("score input_string empty", "POST", "/score", {"json": {"input_data": {"input_string": []}}}, 422,
     "invalid_request"),
    ("text/plain", "POST", "/v1/chat/completions",
     {"content": b'{"messages": [{"role": "user", "content": "x"}]}', "headers": {"content-type": "text/plain"}},
     415, "unsupported_media_type"),
    ("form", "POST", "/score", {"data": {"input_data": "x"}}, 415, "unsupported_media_type"),
    ("multipart", "POST", "/v1/chat/completions", {"files": {"messages": ("m.json", b"[]")}}, 415,
     "unsupported_media_type"),
    ("invalid UTF-8", "POST", "/v1/chat/completions",
     {"content": b'{"messages": [{"role": "user", "content": "\xff\xfe\xc0"}]}', "headers": JSON}, 400, None),
    ("not JSON", "POST", "/score", {"content": b"input_data=hi", "headers": JSON}, 400, "invalid_json"),
    ("truncated JSON", "POST", "/v1/chat/completions", {"content": b'{"messages": [', "headers": JSON}, 400,
     "invalid_json"),
    ("unknown model", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "model": "nope"}}, 404, "not_found"),
    ("unknown adapter version", "POST", "/v1/chat/completions",
     {"json": {**GOOD_CHAT, "model": "tiny-test-demo:999999"}}, 404, "not_found"),
    *[
        (f"model named {name!r}", "POST", "/v1/chat/completions", {"json": {**GOOD_CHAT, "model": name}}, 404,
         "not_found")
        for name in ("../x", "a/b", "..", "%2e%2e", "with space", "nul\x00byte", "x" * 10_000)
    ],
    ("unknown route", "GET", "/v2/secrets", {}, 404, None),
    ("wrong method", "DELETE", "/score", {}, 405, None),
]  # fmt: skip


def _targets(cli: Any, live: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    instance = parse_json(cli("deployments", "list", "--endpoint", live["endpoint"], "--json"))[0]["instances"][0]
    auth = instance_auth(Path(os.environ["CHATTUNE_HOME"]), live["endpoint"])
    return {"gateway": (live["base"], live["headers"]), "instance": (f"http://127.0.0.1:{instance['port']}", auth)}


def _served_after(base: str, headers: dict[str, str], what: str) -> None:
    score = httpx.post(f"{base}/score", json=GOOD_SCORE, headers=headers, timeout=60)
    chat = httpx.post(f"{base}/v1/chat/completions", json=GOOD_CHAT, headers=headers, timeout=60)
    assert (score.status_code, chat.status_code) == (200, 200), f"after {what}: {score.text[:300]} {chat.text[:300]}"


def test_bad_requests_are_4xx_in_openai_shape_and_the_next_request_is_served(
    cli: Any,
    served: dict[str, Any],
) -> None:
    for target, (base, headers) in _targets(cli, served).items():
        for what, method, path, kwargs, status, code in CASES:
            kwargs = dict(kwargs)
            if callable(kwargs.get("content")):
                kwargs["content"] = kwargs["content"](5 * MiB)
            kwargs["headers"] = {**headers, **kwargs.get("headers", {})}
            r = httpx.request(method, f"{base}{path}", timeout=60, **kwargs)
            _assert_openai_error(r, status, code, f"{target}: {what}")
            _served_after(base, headers, f"{target}: {what}")

        # a 5 MiB body with its Content-Length, at the instance too (the gateway's is in test_endpoints.py)
        if target == "instance":
            huge = {**JSON, **headers}
            r = httpx.post(f"{base}/v1/chat/completions", content=b"x" * (5 * MiB), headers=huge, timeout=60)
            _assert_openai_error(r, 413, "request_too_large", "instance: 5 MiB with Content-Length")
            _served_after(base, headers, "instance: 5 MiB")

    gateway, key = _targets(cli, served)["gateway"]
    # at the gateway: deployments that do not exist, whatever their name
    for name in ("nope", "../demo", "demo/../demo", "%2e%2e", "x" * 1000):
        r = httpx.post(f"{gateway}/score", json=GOOD_SCORE, headers={**key, "azureml-model-deployment": name})
        error = _assert_openai_error(r, 404, "deployment_not_found", f"deployment header {name!r}")
        assert error["param"] == "azureml-model-deployment"
        _served_after(gateway, key, f"deployment header {name!r}")

    # A budget over the server's cap (1024) is a 400 naming the field that set it, never a silent cut; one under the
    # cap that the 1,468-token prompt leaves no room for in the 2,048-token context is a 400 too, at once.
    long = [{"role": "user", "content": "a " * 700}]
    for target, (base, headers) in _targets(cli, served).items():
        requests = {
            "/score": ({"input_data": {"input_string": [long], "parameters": {"max_new_tokens": 10**9}}},
                       "max_new_tokens"),
            "/v1/chat/completions": ({"messages": long, "max_tokens": 10**30, "max_completion_tokens": 10**30},
                                     "max_completion_tokens"),
        }  # fmt: skip
        for path, (body, param) in requests.items():
            r = httpx.post(f"{base}{path}", json=body, headers=headers, timeout=60)
            error = _assert_openai_error(r, 400, "invalid_input", f"{target}: {path} with a huge budget")
            assert f"max_new_tokens_cap={CAP}" in error["message"] and error["param"] == param, error
        r = httpx.post(f"{base}/v1/chat/completions", json={"messages": long, "max_tokens": CAP}, headers=headers)
        error = _assert_openai_error(r, 400, "invalid_input", f"{target}: a budget the context cannot hold")
        assert f"plus max_tokens ({CAP}) exceeds the model's context (2048 tokens)" in error["message"]
        fits = httpx.post(f"{base}/v1/chat/completions", json={"messages": long, "max_tokens": 1}, headers=headers)
        assert fits.status_code == 200 and fits.json()["usage"]["prompt_tokens"] + CAP > 2048
        # a seed beyond 64 bits, sampled (it failed the batch with a 500 before it was reduced modulo 2**64)
        seeded = {**GOOD_CHAT, "max_tokens": 2, "temperature": 1.0, "seed": 10**30}
        answers = [
            httpx.post(f"{base}/v1/chat/completions", json=seeded, headers=headers, timeout=60) for _ in range(2)
        ]
        assert [a.status_code for a in answers] == [200, 200], answers[0].text
        assert answers[0].json()["choices"] == answers[1].json()["choices"]  # the seed still reproduces
        _served_after(base, headers, f"{target}: huge budgets")


# Names that try path traversal or odd characters. Endpoints and deployments follow Azure's rule (3-32 letters,
# digits or '-'); registry names become directory names (letters, digits, '.', '_', '-', no '..', up to 128).
BAD_NAMES = ["../x", "a/b", "..", "%2e%2e", "with space", "x" * 200, "a\\b", "name\n", "\u00e9t\u00e9", "/etc/passwd"]


def _commands(name: str, request_file: Path) -> list[tuple[str, ...]]:
    """Every CLI command that takes the name of an endpoint, a deployment or a registered model."""
    return [
        ("endpoints", "create", name),
        ("endpoints", "show", name),
        ("endpoints", "keys", name),
        ("endpoints", "regenerate-keys", name, "--key", "primary"),
        ("endpoints", "traffic", name, "demo=100"),
        ("endpoints", "traffic", "good-ep", f"{name}=100"),
        ("endpoints", "mirror", name, "demo=10"),
        ("endpoints", "mirror", "good-ep", f"{name}=10"),
        ("endpoints", "invoke", name, "--request-file", str(request_file)),
        ("endpoints", "invoke", "good-ep", "--request-file", str(request_file), "--deployment", name),
        ("endpoints", "delete", name),
        ("deployments", "create", "--endpoint", name, "--name", "blue", "--model", "m:1"),
        ("deployments", "create", "--endpoint", "good-ep", "--name", name, "--model", "m:1"),
        ("deployments", "create", "--endpoint", "good-ep", "--name", "blue", "--model", f"{name}:1"),
        ("deployments", "create", "--endpoint", "good-ep", "--name", "blue", "--model", f"m:{name}"),
        ("deployments", "create", "--endpoint", "good-ep", "--name", "blue", "--model", "m:1", "--extra-model", name),
        ("deployments", "update", "--endpoint", name, "--name", "blue", "--instances", "2"),
        ("deployments", "update", "--endpoint", "good-ep", "--name", name, "--instances", "2"),
        ("deployments", "list", "--endpoint", name),
        ("deployments", "logs", "--endpoint", name, "--name", "blue"),
        ("deployments", "logs", "--endpoint", "good-ep", "--name", name),
        ("deployments", "delete", "--endpoint", name, "--name", "blue"),
        ("deployments", "delete", "--endpoint", "good-ep", "--name", name),
        ("models", "show", name),
        ("models", "show", f"m:{name}"),
        ("models", "alias", f"{name}@champion", "1"),
        ("models", "alias", "m@champion", name),
        ("models", "alias", f"{name}@champion", "--delete"),
        ("models", "tag", f"{name}:1", "k=v"),
        ("models", "delete", f"{name}:1"),
        ("models", "register", "--job", "ftjob-000000000000", "--name", name),
        ("models", "register", "--job", "ftjob-000000000000", "--version", name),
    ]


def _main(argv: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """`chattune ARGV` in this process (the console script's main, exit codes and all): hundreds of commands in
    seconds, and argv may hold a NUL, which no real process can be given."""
    from chattune.cli.main import main

    monkeypatch.setattr(sys, "argv", ["chattune", *argv])
    with pytest.raises(SystemExit) as exc:
        main()
    return int(exc.value.code or 0), capsys.readouterr().err


def test_bad_names_are_refused_by_every_command_that_takes_one(
    cli: Any, home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    request_file = tmp_path / "request.json"
    request_file.write_text('{"input_data": {"input_string": [[{"role": "user", "content": "Hi"}]]}}')
    refused = 0
    for name in [*BAD_NAMES, "nul\x00byte"]:
        for argv in _commands(name, request_file):
            code, err = _main(list(argv), capsys, monkeypatch)
            assert code == 2, f"{argv}: exit {code}\n{err}"
            assert "Traceback" not in err
            assert "error: invalid " in err and f"name {name!r}" in err, f"{argv}:\n{err}"
            assert "hint: Use " in err, f"{argv}:\n{err}"
            refused += 1
    assert refused == (len(BAD_NAMES) + 1) * len(_commands("x", request_file))
    assert not (home / "endpoints").exists() or not any((home / "endpoints").iterdir())  # nothing was created

    # the same through the real console script, a process each (a NUL cannot be passed to a process)
    for argv in (
        ("endpoints", "create", "../x"),
        ("endpoints", "show", "a/b"),
        ("deployments", "logs", "--endpoint", "good-ep", "--name", "%2e%2e"),
        ("models", "show", "../../etc/passwd"),
    ):
        result = cli(*argv)
        assert result.returncode == 2 and "error: invalid " in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
