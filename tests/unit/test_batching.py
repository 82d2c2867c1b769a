"""The batch scheduler on a tiny random model: batched and streamed answers equal one-at-a-time greedy `generate`
answers, token for token; each request ends at its own budget and stop string."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import torch

from chattune.inference import ChatGenerator, GenerationParams
from chattune.serving.batching import BatchScheduler, Pending
from chattune.serving.metrics import InstanceMetrics


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_tokenizer: Any) -> tuple[Any, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=tiny_tokenizer.eos_token_id,
        pad_token_id=tiny_tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(config).eval(), tiny_tokenizer


PROMPTS = ["hello there", "convert May 1, 2020 to ISO", "a", "what is the date today? tell me in ISO 8601 please"]


def _conv(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def _run(scheduler: BatchScheduler, tokenizer: Any, jobs: list[tuple[str, int, list[str] | None]]) -> list[Any]:
    loop = asyncio.get_running_loop()
    pendings = []
    for text, budget, stop in jobs:
        ids = tokenizer.apply_chat_template(_conv(text), add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        pending = Pending(list(ids), GenerationParams(max_new_tokens=budget, stop=stop), None, loop)
        scheduler.submit(pending)
        pendings.append(pending)
        await asyncio.sleep(0)

    async def collect(p: Pending) -> tuple[str, Any]:
        streamed = ""
        while True:
            kind, value = await p.events.get()
            if kind == "delta":
                streamed += value
            elif kind == "done":
                return streamed, value
            else:
                raise value

    return list(await asyncio.gather(*(collect(p) for p in pendings)))


def test_batched_and_streamed_answers_equal_one_at_a_time_generate(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    reference = ChatGenerator(model, tokenizer)
    scheduler = BatchScheduler(model, tokenizer, InstanceMetrics(), max_batch_size=8, max_wait_ms=50)
    budgets = [12, 3, 20, 7]
    results = asyncio.run(_run(scheduler, tokenizer, [(t, b, None) for t, b in zip(PROMPTS, budgets, strict=True)]))
    for (streamed, final), text, budget in zip(results, PROMPTS, budgets, strict=True):
        alone = reference.generate([_conv(text)], GenerationParams(max_new_tokens=budget))[0]
        assert final.text == alone.text and streamed == final.text
        assert (final.finish_reason, final.completion_tokens) == (alone.finish_reason, alone.completion_tokens)
        assert final.completion_tokens <= budget


def test_stop_strings_end_a_row_and_are_not_sent(model_and_tokenizer: tuple[Any, Any]) -> None:
    model, tokenizer = model_and_tokenizer
    scheduler = BatchScheduler(model, tokenizer, InstanceMetrics(), max_wait_ms=1)
    [(_, full)] = asyncio.run(_run(scheduler, tokenizer, [(PROMPTS[1], 20, None)]))
    if len(full.text) < 4:
        pytest.skip("the random model's answer is too short to cut")
    stop = full.text[2:4]
    [(streamed, cut)] = asyncio.run(_run(scheduler, tokenizer, [(PROMPTS[1], 20, [stop])]))
    assert cut.finish_reason == "stop" and stop not in cut.text and full.text.startswith(cut.text)
    assert streamed == cut.text
