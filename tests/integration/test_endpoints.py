"""Endpoints as Azure manages them, on the tiny model, through real gateways and instances over loopback HTTP:
the safe-rollout walk (REFERENCE.md section 5), a queue then 429 at capacity, a killed instance restarted, a killed
gateway brought back by `endpoints up` with the same keys, port and routing."""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from chattune.schemas import DeploymentPublic
from tests.conftest import exact, instance_auth, parse_json

pytestmark = pytest.mark.integration

BODY = {"input_data": {"input_string": [[{"role": "user", "content": "Hi"}]], "parameters": {"max_new_tokens": 1}}}


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _score(
    s: dict[str, Any], deployment: str | None = None, body: dict[str, Any] = BODY, timeout: float = 60
) -> httpx.Response:
    headers = dict(s["headers"])
    if deployment:
        headers["azureml-model-deployment"] = deployment
    return httpx.post(s["uri"], json=body, headers=headers, timeout=timeout)


def _metric(s: dict[str, Any], name: str, **labels: str) -> float:
    text = httpx.get(f"{s['base']}/metrics", headers=s["headers"], timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_safe_rollout_walk(cli: Any, served: dict[str, Any]) -> None:
    ep = served["endpoint"]
    # blue (the quickstart's "demo") has 100%; green is created at 0%
    parse_json(cli("deployments", "create", "--endpoint", ep, "--name", "green", "--model", served["model"], "--json"))
    assert parse_json(cli("endpoints", "show", ep, "--json"))["traffic"] == {"demo": 100}
    # invoke green directly
    r = _score(served, deployment="green")
    assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "green"
    # mirror 10%: every answer still comes from blue; green gets copies
    assert cli("endpoints", "traffic", ep, "demo=90", "green=10").returncode == 0
    refused = cli("endpoints", "mirror", ep, "green=10")
    assert refused.returncode == 2 and "live traffic" in refused.stderr
    assert cli("endpoints", "traffic", ep, "demo=100").returncode == 0
    assert parse_json(cli("endpoints", "mirror", ep, "green=10", "--json"))["mirror_traffic"] == {"green": 10}
    assert cli("endpoints", "mirror", ep, "green=60").returncode == 2  # Azure caps mirroring at 50%
    answered = collections.Counter(_score(served).headers["azureml-model-deployment"] for _ in range(100))
    assert answered == {"demo": 100}
    _wait(lambda: _metric(served, "chattune_gateway_mirrored_requests_total", deployment="green") > 0, 10, "mirror")
    assert cli("endpoints", "traffic", ep, "demo=90", "green=10").returncode == 2  # still mirrored
    assert cli("endpoints", "mirror", ep, "green=0").returncode == 0
    # 90/10
    assert cli("endpoints", "traffic", ep, "demo=90", "green=10").returncode == 0
    answered = collections.Counter(_score(served).headers["azureml-model-deployment"] for _ in range(100))
    assert set(answered) == {"demo", "green"} and 1 <= answered["green"] <= 30, answered
    # 0/100, then delete blue
    assert cli("endpoints", "traffic", ep, "demo=0", "green=100").returncode == 0
    assert {_score(served).headers["azureml-model-deployment"] for _ in range(10)} == {"green"}
    assert cli("deployments", "delete", "--endpoint", ep, "--name", "demo").returncode == 0
    assert [d["name"] for d in parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))] == ["green"]
    assert _score(served).status_code == 200


def test_overflow_waits_in_line_then_429_and_a_killed_instance_comes_back(cli: Any, served: dict[str, Any]) -> None:
    ep = served["endpoint"]
    create = ("deployments", "create", "--endpoint", ep, "--name", "pair", "--model", served["model"])
    dep = parse_json(
        cli(*create, "--instances", "2", "--max-concurrent", "1", "--request-timeout-ms", "60000",
            "--max-queue-length", "2", "--json")
    )  # fmt: skip
    assert dep["max_queue_length"] == 2 and dep["max_queue_wait_ms"] == 60000  # the default wait, as stored
    assert len(dep["instances"]) == 2 and all(i["state"] == "Ready" for i in dep["instances"])
    _check_cores_shared(cli)
    long = {
        "input_data": {"input_string": [[{"role": "user", "content": "Hi"}]], "parameters": {"max_new_tokens": 150}}
    }
    results: list[httpx.Response] = []

    def call() -> None:
        results.append(_score(served, deployment="pair", body=long))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # 2 slots and 2 places in line: at least those 4 are answered (the ones in line once a slot frees); what
    # arrived while the line was full is refused at once.
    codes = collections.Counter(r.status_code for r in results)
    assert codes[200] >= 4 and codes[429] >= 1 and codes[200] + codes[429] == 8, codes
    overflow = next(r for r in results if r.status_code == 429)
    assert overflow.headers["retry-after"] == "1" and overflow.json()["error"]["code"] == "too_many_requests"
    assert "max_queue_length=2" in overflow.json()["error"]["message"]

    # kill -9 one instance: the other keeps answering, and the gateway starts a new one
    victim = dep["instances"][0]["pid"]
    os.kill(victim, signal.SIGKILL)
    failures = sum(_score(served, deployment="pair").status_code != 200 for _ in range(20))
    assert failures <= 1

    def restarted() -> bool:
        insts = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[-1]["instances"]
        return all(i["state"] == "Ready" for i in insts) and insts[0]["restarts"] == 1 and insts[0]["pid"] != victim

    _wait(restarted, 30, "the killed instance to be restarted and ready")
    assert _metric(served, "chattune_gateway_instance_restarts") >= 1
    # the pair gone, "demo" runs on the cores the pair had too
    assert cli("deployments", "delete", "--endpoint", ep, "--name", "pair").returncode == 0
    _check_cores_shared(cli)


def _check_cores_shared(cli: Any) -> None:
    """Every local instance of the workspace runs on its share of this machine's cores, as its torch reports.

    The gateways share the cores out between the local instances of all endpoints (a blue/green pair as much as two
    deployments of one): each instance is told its share once ready, and again when the count changes.
    """
    if "OMP_NUM_THREADS" in os.environ:
        return  # the environment chooses for every instance
    cores = min(len(os.sched_getaffinity(0)), psutil.cpu_count(logical=False) or 1)

    def local() -> list[tuple[str, dict[str, Any]]]:
        return [
            (e["name"], i)
            for e in parse_json(cli("endpoints", "list", "--json"))
            for d in parse_json(cli("deployments", "list", "--endpoint", e["name"], "--json"))
            if d["compute"] == "local" and not d["share_base_with"]
            for i in d["instances"]
        ]

    def told() -> bool:
        insts = local()
        share = max(1, cores // max(1, len(insts)))
        return bool(insts) and all(i["state"] == "Ready" and i.get("threads") == share for _, i in insts)

    _wait(told, 30, "every local instance to be told its share of the cores")
    home = Path(os.environ["CHATTUNE_HOME"])
    for endpoint, inst in local():
        url = f"http://127.0.0.1:{inst['port']}/metrics"
        line = next(
            x
            for x in httpx.get(url, headers=instance_auth(home, endpoint), timeout=10).text.splitlines()
            if x.startswith("chattune_torch_threads")
        )
        assert float(line.rsplit(" ", 1)[1]) == inst["threads"], line  # what torch runs the forward passes on


def test_a_killed_gateway_comes_back_with_the_same_keys_and_routing(cli: Any, served: dict[str, Any]) -> None:
    ep = served["endpoint"]
    before = parse_json(cli("endpoints", "show", ep, "--json"))
    instances = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]["instances"]
    import sqlite3

    home = Path(os.environ["CHATTUNE_HOME"])
    with contextlib.closing(sqlite3.connect(home / "chattune.db")) as db:
        (gateway_pid,) = db.execute("SELECT pid FROM endpoints WHERE name=?", (ep,)).fetchone()
    os.kill(gateway_pid, signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        _score(served)
    refused = cli("deployments", "create", "--endpoint", ep, "--name", "late", "--model", served["model"])
    assert refused.returncode == 2 and "endpoints up" in refused.stderr
    started = parse_json(cli("endpoints", "up", "--json"))
    assert [d["name"] for d in started] == [ep]
    after = parse_json(cli("endpoints", "show", ep, "--json"))
    assert after["scoring_uri"] == before["scoring_uri"] and after["traffic"] == before["traffic"]
    r = _score(served)  # the same key, the same URI, the same deployment
    assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "demo"
    adopted = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]["instances"]
    assert [i["pid"] for i in adopted] == [i["pid"] for i in instances]  # running instances were adopted
    assert parse_json(cli("endpoints", "up", "--json")) == []
    assert re.search(r"primary", cli("endpoints", "keys", ep).stdout)

    # A reboot: gateway and instances all gone. `endpoints up` brings everything back and returns when it serves.
    with contextlib.closing(sqlite3.connect(home / "chattune.db")) as db:
        (gateway_pid,) = db.execute("SELECT pid FROM endpoints WHERE name=?", (ep,)).fetchone()
    for pid in [gateway_pid, *(i["pid"] for i in adopted)]:
        os.kill(pid, signal.SIGKILL)
    started = parse_json(cli("endpoints", "up", "--json"))
    assert [d["name"] for d in started] == [ep]
    r = _score(served)
    assert r.status_code == 200 and r.headers["azureml-model-deployment"] == "demo"
    revived = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]
    assert revived["state"] == "Succeeded" and revived["instances"][0]["pid"] != adopted[0]["pid"]


def test_openai_streaming_adapters_metrics_and_limits(cli: Any, served: dict[str, Any]) -> None:
    import openai

    ep, model = served["endpoint"], served["model"]
    job = parse_json(cli("models", "show", model, "--json"))["job_id"]
    parse_json(cli("models", "register", "--job", job, "--name", "second", "--json"))
    create = ("deployments", "create", "--endpoint", ep, "--name", "multi", "--model", model)
    # the deployment's own new-token cap (DeploymentSettings.max_new_tokens_cap) reaches its instance; a cap of
    # 1024 tokens took more than the default 5 s request timeout on a 2-core runner, hence the longer timeout
    settings = ("--max-concurrent", "32", "--max-new-tokens-cap", "48", "--request-timeout-ms", "60000")
    dep = parse_json(cli(*create, "--extra-model", "second:1", *settings, "--prefix-cache-mb", "8", "--json"))
    assert dep["prefix_cache_mb"] == 8
    client = openai.OpenAI(
        base_url=f"{served['base']}/v1",
        api_key=served["headers"]["Authorization"].split()[1],
        default_headers={"azureml-model-deployment": "multi"},
    )
    # /v1/models: the base and both adapters, each with the base as parent
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {"tiny-test", model, "second:1"}
    assert cards["second:1"].parent == "tiny-test" and cards[model].parent == "tiny-test"

    messages = [{"role": "user", "content": "Convert this date to ISO 8601: May 1, 2020"}]
    plain = client.chat.completions.create(model=model, messages=messages, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        plain.choices[0].finish_reason
    ]
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    # the adapter and the base answer through the same loaded base; an unknown model is a 404
    assert client.chat.completions.create(model="second:1", messages=messages, max_tokens=4).choices
    assert client.chat.completions.create(model="tiny-test", messages=messages, max_tokens=4).choices
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages, max_tokens=4)
    # n, seed, stop, and a huge max_tokens capped by the server
    two = client.chat.completions.create(model=model, messages=messages, max_tokens=4, n=2)
    assert [c.index for c in two.choices] == [0, 1]
    seeded = [
        client.chat.completions.create(model=model, messages=messages, max_tokens=8, temperature=1.0, seed=7)
        .choices[0]
        .message.content
        for _ in range(2)
    ]
    assert seeded[0] == seeded[1]
    # a budget over the deployment's cap is refused, naming the field (never silently cut), and one at it is served
    with pytest.raises(openai.BadRequestError) as over:
        client.chat.completions.create(model=model, messages=messages, max_tokens=10**6, temperature=0)
    assert over.value.body["param"] == "max_tokens" and "max_new_tokens_cap=48" in over.value.body["message"]  # type: ignore[index]
    capped = client.chat.completions.create(model=model, messages=messages, max_tokens=48, temperature=0)
    assert capped.usage.completion_tokens == 48 and capped.choices[0].finish_reason == "length"
    # /v1/models: the deployment's own model first, its other adapter, then the base
    assert [m.id for m in client.models.list().data] == [model, "second:1", "tiny-test"]

    # concurrent requests share batches: the instance's own metrics say so
    with __import__("concurrent.futures").futures.ThreadPoolExecutor(8) as pool:
        done = list(
            pool.map(
                lambda i: client.chat.completions.create(
                    model=model if i % 2 else "second:1", messages=messages, max_tokens=8, temperature=0
                ),
                range(16),
            )
        )
    assert all(d.choices for d in done)
    # a conversation's next turn: the prefix cache holds the keys and values of the turn before and its answer
    answer = {"role": "assistant", "content": plain.choices[0].message.content}
    history = [*messages, answer, {"role": "user", "content": "And the day after that one, in the same format?"}]
    assert client.chat.completions.create(model=model, messages=history, max_tokens=4, temperature=0).choices
    port = dep["instances"][0]["port"]
    auth = instance_auth(Path(os.environ["CHATTUNE_HOME"]), ep)  # the instance's own metrics, as the gateway calls it
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", headers=auth, timeout=10).text
    single = float(re.search(r'chattune_batch_size_bucket\{le="1.0"\} (\S+)', text).group(1))
    batches = float(re.search(r"chattune_batch_size_count (\S+)", text).group(1))
    assert batches > single  # some batches held more than one sequence
    assert float(re.search(r"^chattune_cached_prompt_tokens_total (\S+)", text, re.M).group(1)) > 0
    for name in ("chattune_generated_tokens_total", "chattune_queue_depth", "chattune_request_latency_seconds_bucket"):
        assert name in text

    # an oversized body is refused with 413 in OpenAI's shape, and the next request is served
    huge = {"model": model, "messages": [{"role": "user", "content": "x" * (5 * 2**20)}]}
    r = httpx.post(f"{served['base']}/v1/chat/completions", json=huge, headers=served["headers"], timeout=60)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert _score(served).status_code == 200


def test_a_hung_instance_fails_liveness_and_is_replaced(cli: Any, served: dict[str, Any]) -> None:
    import psutil

    ep = served["endpoint"]
    create = ("deployments", "create", "--endpoint", ep, "--name", "probed", "--model", served["model"])
    probes = ("--liveness-probe", "initial_delay=0,period=1,timeout=1,failure_threshold=2")
    dep = parse_json(cli(*create, *probes, "--request-timeout-ms", "50", "--json"))
    assert dep["probes"]["liveness_probe"]["failure_threshold"] == 2
    assert dep["probes"]["readiness_probe"] == {
        "initial_delay": 10,
        "period": 10,
        "timeout": 2,
        "success_threshold": 1,
        "failure_threshold": 30,
    }  # Azure's defaults
    # request_timeout_ms: an answer that takes longer is a 408, and the instance serves the next request
    long = {
        "input_data": {"input_string": [[{"role": "user", "content": "Hi"}]], "parameters": {"max_new_tokens": 500}}
    }
    slow = _score(served, deployment="probed", body=long)
    assert slow.status_code == 408 and slow.json()["error"]["code"] == "request_timeout"
    # SIGSTOP: the process is there but answers nothing; two failed liveness probes and it is replaced
    hung = dep["instances"][0]["pid"]
    os.kill(hung, signal.SIGSTOP)

    def replaced() -> bool:
        inst = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[-1]["instances"][0]
        return inst["pid"] != hung and inst["state"] == "Ready" and inst["restarts"] == 1

    _wait(replaced, 40, "the hung instance to be replaced")
    assert not psutil.pid_exists(hung) or psutil.Process(hung).status() == psutil.STATUS_ZOMBIE
    assert (
        "liveness probe failed 2 times"
        in cli("deployments", "logs", "--endpoint", ep, "--name", "probed").stdout
        + (Path(os.environ["CHATTUNE_HOME"]) / "endpoints" / ep / "gateway.log").read_text()
    )
    # scaling: Azure's Scaling state, then Succeeded with both instances ready
    scaled = exact(
        DeploymentPublic,
        parse_json(cli("deployments", "update", "--endpoint", ep, "--name", "probed", "--instances", "2", "--json")),
    )
    assert scaled["state"] == "Succeeded" and [i["state"] for i in scaled["instances"]] == ["Ready", "Ready"]
    # readiness: an instance that stops answering its readiness probe (liveness lenient here) leaves the rotation at
    # once - requests get a quick 503, not a hang - and comes back when it answers again
    ready_probe = ("--readiness-probe", "initial_delay=0,period=1,timeout=1,failure_threshold=1")
    lenient = ("--liveness-probe", "initial_delay=0,period=1,timeout=1,failure_threshold=1000")
    create = ("deployments", "create", "--endpoint", ep, "--name", "ready", "--model", served["model"])
    pid = parse_json(cli(*create, *ready_probe, *lenient, "--json"))["instances"][0]["pid"]

    def state() -> str:
        deps = {d["name"]: d for d in parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))}
        return str(deps["ready"]["instances"][0]["state"])

    os.kill(pid, signal.SIGSTOP)
    try:
        _wait(lambda: state() == "NotReady", 20, "the silent instance to leave the rotation")
        # Out of the rotation means refused at once: a request routed to the stopped process would hang past this.
        answer = _score(served, deployment="ready", timeout=10)
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "not_ready"
    finally:
        os.kill(pid, signal.SIGCONT)
    _wait(lambda: state() == "Ready", 20, "the instance to come back into the rotation")
    assert _score(served, deployment="ready").status_code == 200
    deps = {d["name"]: d for d in parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))}
    assert deps["ready"]["instances"][0]["pid"] == pid  # taken out of rotation, not restarted

    # A client that gives up on a non-streamed answer: the gateway drops its call to the instance at once (which
    # then stops generating: tests/unit/test_serving_errors.py) instead of waiting out request_timeout_ms (5 s
    # here, then a 408). The instance is stopped, with probes lenient enough to keep it in the rotation.
    patient = ("--readiness-probe", "initial_delay=0,period=1,timeout=1,failure_threshold=1000")
    create = ("deployments", "create", "--endpoint", ep, "--name", "patient", "--model", served["model"])
    stopped = parse_json(cli(*create, *patient, *lenient, "--json"))["instances"][0]["pid"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        with pytest.raises(httpx.ReadTimeout):
            _score(served, deployment="patient", timeout=1)
        closed = lambda: _metric(served, "chattune_gateway_requests_total", deployment="patient", code="499")  # noqa: E731
        _wait(lambda: closed() == 1, 15, "the gateway to count the request as closed by its client (499)")
    finally:
        os.kill(stopped, signal.SIGCONT)


def _tuned_differently(cli: Any, root: Path) -> str:
    """A second LoRA version of the tiny base, trained on other settings than the quickstart's; registered."""
    from chattune.data import demo

    demo.write(root / "data", rows=24)
    job = root / "other.yaml"
    job.write_text(
        "model: tiny-test\nexperiment_name: other\ndata:\n  train: data/train_sft.jsonl\n  test: data/test_sft.jsonl\n"
        "training:\n  per_device_train_batch_size: 4\n  max_seq_length: 96\n  learning_rate: 5.0e-2\n"
        "optimization:\n  apply_lora: true\n  lora_r: 4\nevaluation:\n  max_rows: 2\n  max_new_tokens: 4\n"
    )
    done = parse_json(cli("jobs", "create", "-f", str(job), "--stream", "--json", timeout=240))
    return str(parse_json(cli("models", "register", "--job", done["id"], "--name", "other", "--json"))["id"])


def test_deployments_share_one_base_and_each_answers_as_alone(cli: Any, served: dict[str, Any], tmp_path: Path) -> None:
    """`--share-base-with`: a LoRA version served from another deployment's instances (no process of its own), in
    the same batches, each request answered by its own deployment's adapter as that adapter answers served alone."""
    ep, model = served["endpoint"], served["model"]
    other = _tuned_differently(cli, tmp_path)
    prompts = ["Convert this date to ISO 8601: May 1, 2020", "What is 2+2?", "Say hi"]

    def answers(deployment: str) -> list[str]:
        body = {"input_data": {"input_string": [[{"role": "user", "content": p}] for p in prompts]}}
        body["input_data"]["parameters"] = {"max_new_tokens": 12}  # type: ignore[index]
        r = _score(served, deployment=deployment, body=body)
        assert r.status_code == 200, r.text
        return [o["output"] for o in r.json()]

    create = ("deployments", "create", "--endpoint", ep)
    parse_json(cli(*create, "--name", "solo", "--model", other, "--json"))  # `other` alone, on its own instance
    alone = {"demo": answers("demo"), "guest": answers("solo")}
    assert alone["demo"] != alone["guest"]  # two adapters that answer differently, so a mix-up would show
    cli("deployments", "delete", "--endpoint", ep, "--name", "solo")

    guest = exact(
        DeploymentPublic,
        parse_json(cli(*create, "--name", "guest", "--model", other, "--share-base-with", "demo", "--json")),
    )
    assert guest["state"] == "Succeeded" and guest["share_base_with"] == "demo"
    assert [i["on"] for i in guest["instances"]] == ["demo"]
    host = parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]
    assert host["name"] == "demo" and list(host["instances"][0]["adapters"]) == [other]
    # one process serves both: the host's own instance, whose pid did not change
    port = host["instances"][0]["port"]
    auth = instance_auth(Path(os.environ["CHATTUNE_HOME"]), ep)
    assert [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=auth).json()["data"]] == [
        model, other, "tiny-test"
    ]  # fmt: skip

    # both deployments asked at once, repeatedly: each answer is its own adapter's, token for token
    with __import__("concurrent.futures").futures.ThreadPoolExecutor(6) as pool:
        runs = list(pool.map(answers, ["demo", "guest"] * 3))
    assert runs == [alone["demo"], alone["guest"]] * 3
    # through the OpenAI route the guest's model is the default, and /v1/models lists it first
    headers = {**served["headers"], "azureml-model-deployment": "guest"}
    listed = httpx.get(f"{served['base']}/v1/models", headers=headers, timeout=10).json()["data"]
    assert listed[0]["id"] == other
    chat = {"messages": [{"role": "user", "content": prompts[0]}], "max_tokens": 12, "temperature": 0}
    r = httpx.post(f"{served['base']}/v1/chat/completions", json=chat, headers=headers, timeout=60).json()
    assert r["model"] == other and r["choices"][0]["message"]["content"] == alone["guest"][0]

    # what does not apply is refused, naming the flag; the host cannot go while it serves the guest
    bad = cli(*create, "--name", "guest-two", "--model", other, "--share-base-with", "demo", "--instances", "2")
    assert bad.returncode == 2 and "--instances" in bad.stderr
    bad = cli(*create, "--name", "guest-two", "--model", other, "--share-base-with", "nope")
    assert bad.returncode == 2 and "no deployment 'nope'" in bad.stderr
    bad = cli(*create, "--name", "guest-two", "--model", other, "--share-base-with", "guest")
    assert bad.returncode == 2 and "itself served from 'demo'" in bad.stderr
    refused = cli("deployments", "delete", "--endpoint", ep, "--name", "demo")
    assert refused.returncode != 0 and "serves guest" in refused.stderr
    # deleting the guest unloads its adapter from the running instance (no restart)
    cli("deployments", "delete", "--endpoint", ep, "--name", "guest")
    _wait(
        lambda: (
            other not in [m["id"] for m in httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=auth).json()["data"]]
        ),
        30,
        "the guest's adapter to be unloaded",
    )
    assert parse_json(cli("deployments", "list", "--endpoint", ep, "--json"))[0]["instances"][0]["port"] == port
