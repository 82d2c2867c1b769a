"""Adapters added to a serving engine while it serves (what `deployments create --share-base-with` uses), on the
tiny random model with LoRA adapters of different random weights (PEFT): requests for different adapters share one
batch and each gets, token for token, what its adapter answers when it is served alone; an adapter is unloaded only
after its running requests end; the instance routes are typed and refuse what cannot be done."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from chattune.inference import GenerationParams
from chattune.serving.app import create_app
from chattune.serving.engine import Engine
from chattune.serving.protocol import SERVED_MODEL_HEADER

PROMPTS = ["hello there", "convert May 1, 2020 to ISO", "what is the date today?"]


def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A random tiny base and three LoRA adapters of it with different random weights (PEFT's own layout)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from chattune.catalog import get_entry
    from chattune.catalog.importer import build_random_model

    root = tmp_path_factory.mktemp("shared")
    build_random_model(get_entry("tiny-test").source, root / "base")
    paths = {"base": str(root / "base")}
    for seed, name in enumerate(["a", "b", "c"]):
        torch.manual_seed(100 + seed)
        base = AutoModelForCausalLM.from_pretrained(root / "base")
        # init_lora_weights=False: random A and B, so each adapter answers differently from the base and each other
        config = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False)
        get_peft_model(base, config).save_pretrained(root / name)
        paths[name] = str(root / name)
    return paths


def _engine(tiny: dict[str, str], adapter: str) -> Engine:
    engine = Engine(tiny["base"], tiny[adapter], f"{adapter}:1", "tiny-test")
    engine.load()
    assert engine.ready.is_set(), engine.failed
    return engine


async def _answers(engine: Engine, jobs: list[tuple[str, str]], budget: int = 16) -> list[str]:
    """Greedy answers to (adapter, prompt) jobs, all submitted at once (they share the running batch)."""
    params = GenerationParams(max_new_tokens=budget)
    results = await asyncio.gather(
        *(engine.generate([_conv(text)], params, engine.resolve(adapter)) for adapter, text in jobs)
    )
    return [r[0].text for r in results]


def test_added_adapters_share_batches_and_answer_as_when_served_alone(tiny: dict[str, str]) -> None:
    alone = {
        name: asyncio.run(_answers(_engine(tiny, name), [(f"{name}:1", p) for p in PROMPTS])) for name in ("a", "b")
    }
    assert alone["a"] != alone["b"]  # the two adapters answer differently, so mixing them up would show

    engine = _engine(tiny, "a")
    asyncio.run(engine.add_adapter("b:1", tiny["b"]))
    jobs = [(adapter, p) for p in PROMPTS for adapter in ("a:1", "b:1")]
    batches_before = engine.metrics.batch_size._sum.get()  # type: ignore[attr-defined]
    mixed = asyncio.run(_answers(engine, jobs))
    assert engine.metrics.batch_size._sum.get() - batches_before > len(jobs) / 2  # type: ignore[attr-defined]
    for (adapter, prompt), text in zip(jobs, mixed, strict=True):
        assert text == alone[adapter[0]][PROMPTS.index(prompt)], (adapter, prompt)
    assert [m for m, _ in engine.models()] == ["a:1", "b:1", "tiny-test"]
    assert [m for m, _ in engine.models(first="b:1")] == ["b:1", "a:1", "tiny-test"]


def test_an_adapter_is_unloaded_after_its_running_requests(tiny: dict[str, str]) -> None:
    engine = _engine(tiny, "a")
    alone = asyncio.run(_answers(_engine(tiny, "c"), [("c:1", PROMPTS[1])], budget=40))

    async def remove_while_running() -> str:
        await engine.add_adapter("c:1", tiny["c"])
        running = asyncio.create_task(
            engine.generate([_conv(PROMPTS[1])], GenerationParams(max_new_tokens=40), engine.resolve("c:1"))
        )
        await asyncio.sleep(0.05)  # it is in the running batch now
        await engine.remove_adapter("c:1")  # returns once it is unloaded: after the running request ended
        return (await asyncio.wait_for(running, 5))[0].text  # whole, and answered by c to the end

    assert asyncio.run(remove_while_running()) == alone[0]
    from chattune.errors import NotFoundError

    with pytest.raises(NotFoundError):
        engine.resolve("c:1")
    assert "c:1" not in engine._keys
    assert not any("adapter_1" in n for n, _ in engine._scheduler_model().named_modules())  # unloaded from the model


def test_the_instance_routes_add_pin_and_remove_adapters(tiny: dict[str, str], tmp_path: Path) -> None:
    engine = _engine(tiny, "a")
    with TestClient(create_app(engine, token=None)) as client:
        assert client.put("/adapters/b:1", json={"path": tiny["b"]}).status_code == 204
        assert client.put("/adapters/b:1", json={"path": tiny["b"]}).status_code == 204  # again: nothing to do
        clash = client.put("/adapters/b:1", json={"path": tiny["c"]})
        assert clash.status_code == 409 and "served here already" in clash.json()["error"]["message"]
        missing = client.put("/adapters/x:1", json={"path": str(tmp_path)})
        assert missing.status_code == 404 and "adapter_config.json" in missing.json()["error"]["message"]
        # a name too long for the file system (schemathesis found it a 500): no such folder, 404 too
        assert client.put("/adapters/x:1", json={"path": "\u1e70\u033ao" * 100}).status_code == 404
        assert client.put("/adapters/x:1", json={"path": tiny["b"], "rank": 4}).status_code == 422

        # the gateway names a sharing deployment's model: the default of a request that names none, listed first
        pinned = {SERVED_MODEL_HEADER: "b:1"}
        body = {"messages": _conv(PROMPTS[0]), "max_tokens": 8, "temperature": 0}
        as_b = client.post("/v1/chat/completions", json=body, headers=pinned).json()
        named = client.post("/v1/chat/completions", json={**body, "model": "b:1"}).json()
        as_a = client.post("/v1/chat/completions", json=body).json()
        text = as_b["choices"][0]["message"]["content"]
        assert as_b["model"] == "b:1" and text == named["choices"][0]["message"]["content"]
        assert as_a["model"] == "a:1" and as_a["choices"][0]["message"]["content"] != text
        assert client.get("/v1/models", headers=pinned).json()["data"][0]["id"] == "b:1"
        score = {"input_data": {"input_string": _conv(PROMPTS[0]), "parameters": {"max_new_tokens": 8}}}
        assert client.post("/score", json=score, headers=pinned).json()[0]["output"] == text

        # the gateway shares the machine's cores out: the forward passes run on the threads it says from then on
        def threads() -> float:
            line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith("chattune_torch_threads"))
            return float(line.rsplit(" ", 1)[1])

        assert threads() >= 1
        assert client.put("/threads", json={"threads": 1}).status_code == 204 and threads() == 1
        again = client.post("/v1/chat/completions", json=body, headers=pinned).json()
        assert again["choices"][0]["message"]["content"] == text  # the same greedy answer on one thread
        assert client.put("/threads", json={"threads": 0}).status_code == 422
        assert client.put("/threads", json={"threads": "1"}).status_code == 422  # strict, as the schema says
        assert client.put("/threads", json={"threads": 1.0}).status_code == 204  # JSON's 1.0 is an integer
        assert threads() == 1

        own = client.delete("/adapters/a:1")
        assert own.status_code == 409 and "own model" in own.json()["error"]["message"]
        assert client.delete("/adapters/b:1").status_code == 204
        assert client.delete("/adapters/b:1").status_code == 404
        gone = client.post("/v1/chat/completions", json={**body, "model": "b:1"})
        assert gone.status_code == 404 and "not served here" in gone.json()["error"]["message"]
