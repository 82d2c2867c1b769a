"""The prefix cache: what it finds, keeps and drops; and the batch scheduler with it on a tiny random model, whose
answers to a multi-turn conversation equal one-at-a-time `generate`'s, token for token, while it reuses earlier
turns' keys and values."""

from __future__ import annotations

import asyncio
from typing import Any

import torch

from chattune.inference import ChatGenerator, GenerationParams
from chattune.serving.batching import BatchScheduler, Pending
from chattune.serving.metrics import InstanceMetrics
from chattune.serving.prefix_cache import BLOCK, PrefixCache

LAYERS, HEADS, DIM = 2, 2, 4


def _kv(ids: list[int]) -> Any:
    """Per-layer keys and values whose every position holds its token id (so a test can see which tokens came back)."""

    def fetch(n: int) -> list[tuple[Any, Any]]:
        position = torch.tensor(ids[:n], dtype=torch.float32)[None, :, None].expand(HEADS, n, DIM)
        return [(position.clone() + layer, -position.clone()) for layer in range(LAYERS)]

    return fetch


def _entry_bytes(tokens: int) -> int:
    return LAYERS * 2 * HEADS * tokens * DIM * 4


def test_a_lookup_finds_the_longest_cached_beginning_in_whole_blocks_and_leaves_a_token_to_compute() -> None:
    cache = PrefixCache(10**6)
    first = list(range(3 * BLOCK + 5))
    cache.store(None, first, _kv(first))
    assert len(cache) == 1 and cache.nbytes == _entry_bytes(3 * BLOCK)  # whole blocks only

    longer = [*first[: 2 * BLOCK + 3], 999, *range(40)]  # shares two whole blocks and 3 tokens of the third
    hit = cache.lookup(None, longer)
    assert hit is not None and hit.length == 2 * BLOCK
    keys, values = hit.layers[1]
    assert keys.shape == (HEADS, 2 * BLOCK, DIM) and keys[0, :, 0].tolist() == [t + 1.0 for t in first[: 2 * BLOCK]]
    assert values[0, :, 0].tolist() == [-float(t) for t in first[: 2 * BLOCK]]

    exact = first[: 3 * BLOCK]  # all cached, but its last token's logits are needed: one block less
    hit = cache.lookup(None, exact)
    assert hit is not None and hit.length == 2 * BLOCK
    assert cache.lookup(None, first[: BLOCK - 1] + [7] * 30) is None  # not even one whole block in common
    assert cache.lookup("adapter_1", longer) is None  # another adapter's keys differ
    assert (cache.hits, cache.reused_tokens) == (2, 4 * BLOCK)


def test_a_longer_turn_replaces_the_entry_it_extends_and_a_shared_beginning_keeps_both() -> None:
    cache = PrefixCache(10**6)
    turn1 = list(range(2 * BLOCK))
    cache.store(None, turn1, _kv(turn1))
    turn2 = [*turn1, *range(100, 100 + 2 * BLOCK)]
    cache.store(None, turn2, _kv(turn2))
    assert len(cache) == 1 and cache.nbytes == _entry_bytes(4 * BLOCK)  # turn 1 is inside turn 2

    other = [*turn1[:BLOCK], *range(500, 500 + 2 * BLOCK)]  # the same system prompt, another question
    cache.store(None, other, _kv(other))
    assert len(cache) == 2
    cache.store(None, turn1, _kv(turn1))  # held already (inside turn 2): nothing new
    assert len(cache) == 2


def test_the_least_recently_used_entries_go_when_the_budget_is_exceeded() -> None:
    cache = PrefixCache(_entry_bytes(2 * BLOCK) * 2)
    a, b, c = ([base + i for i in range(2 * BLOCK)] for base in (0, 1000, 2000))
    cache.store(None, a, _kv(a))
    cache.store(None, b, _kv(b))
    assert cache.lookup(None, [*a, 1]) is not None  # a is used: b is now the oldest
    cache.store(None, c, _kv(c))
    assert len(cache) == 2 and cache.nbytes == _entry_bytes(4 * BLOCK)
    assert cache.lookup(None, [*b, 1]) is None
    assert cache.lookup(None, [*a, 1]) is not None and cache.lookup(None, [*c, 1]) is not None


def test_a_dropped_entry_leaves_a_shared_beginning_found_in_the_other() -> None:
    cache = PrefixCache(10**6)
    system = list(range(BLOCK))
    x, y = [*system, *range(100, 100 + BLOCK)], [*system, *range(200, 200 + BLOCK)]
    cache.store("a", x, _kv(x))
    cache.store("a", y, _kv(y))
    cache.store("b", x, _kv(x))
    cache.forget("b")
    assert cache.lookup("b", [*x, 1]) is None
    cache._drop(max(cache._entries))  # y, which the system block's hash points at
    hit = cache.lookup("a", [*system, 5, 6])
    assert hit is not None and hit.length == BLOCK


def test_nothing_is_kept_when_the_cache_is_off_or_the_sequence_is_shorter_than_a_block() -> None:
    ids = list(range(3 * BLOCK))
    off = PrefixCache(0)
    off.store(None, ids, _kv(ids))
    assert len(off) == 0 and off.lookup(None, ids) is None
    on = PrefixCache(10**6)
    on.store(None, ids[: BLOCK - 1], _kv(ids))
    assert len(on) == 0
    too_big = PrefixCache(_entry_bytes(BLOCK) - 1)
    too_big.store(None, ids, _kv(ids))
    assert len(too_big) == 0


# --- the scheduler with the cache ------------------------------------------------------------------------------


SYSTEM = {"role": "system", "content": "You are a careful assistant that converts dates to ISO 8601 and nothing else."}
QUESTIONS = ["convert May 1, 2020", "and the day after?", "and a week later, please?"]


async def _answer(scheduler: BatchScheduler, tokenizer: Any, conversations: list[list[dict[str, str]]]) -> list[Any]:
    loop = asyncio.get_running_loop()
    pendings = []
    for conversation in conversations:
        ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if hasattr(ids, "keys") else ids
        pending = Pending(list(ids), GenerationParams(max_new_tokens=12), None, loop)
        scheduler.submit(pending)
        pendings.append(pending)

    async def final(p: Pending) -> Any:
        while True:
            kind, value = await p.events.get()
            if kind == "done":
                return value
            if kind == "error":
                raise value

    return list(await asyncio.gather(*(final(p) for p in pendings)))


def test_multi_turn_answers_with_the_cache_equal_generate_and_reuse_earlier_turns(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    model, tokenizer = model_and_tokenizer
    reference = ChatGenerator(model, tokenizer)
    metrics = InstanceMetrics()
    scheduler = BatchScheduler(model, tokenizer, metrics, max_wait_ms=20, prefix_cache_bytes=2**24)
    assert scheduler.prefix_cache is not None
    conversations: list[list[dict[str, str]]] = [[SYSTEM], [SYSTEM]]
    reused = []
    for turn, question in enumerate(QUESTIONS):
        conversations[0] = [*conversations[0], {"role": "user", "content": question}]
        # the second conversation asks the same as the first, a turn behind: a batch mixes hits of different lengths
        second = QUESTIONS[turn - 1] if turn else "what is today's date?"
        conversations[1] = [*conversations[1], {"role": "user", "content": second}]
        before = scheduler.prefix_cache.reused_tokens
        answers = asyncio.run(_answer(scheduler, tokenizer, conversations))
        reused.append(scheduler.prefix_cache.reused_tokens - before)
        for conversation, got in zip(conversations, answers, strict=True):
            alone = reference.generate([conversation], GenerationParams(max_new_tokens=12))[0]
            assert (got.text, got.completion_tokens, got.finish_reason) == (
                alone.text, alone.completion_tokens, alone.finish_reason,
            )  # fmt: skip
        for i, got in enumerate(answers):
            conversations[i] = [*conversations[i], {"role": "assistant", "content": got.text}]
    assert reused[0] == 0 and reused[1] > 0 and reused[2] > reused[1]  # later turns reuse more: history and answers
    cached = metrics.cached_prompt_tokens._value.get()
    assert cached == sum(reused) and cached < metrics.prompt_tokens._value.get()


def test_the_cache_is_off_for_a_sliding_window_model(tiny_tokenizer: Any) -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, sliding_window=8,
    )  # fmt: skip
    scheduler = BatchScheduler(
        MistralForCausalLM(config).eval(), tiny_tokenizer, InstanceMetrics(), prefix_cache_bytes=2**20
    )
    assert scheduler.prefix_cache is None


def test_a_cached_turn_joining_a_running_batch_in_its_decoding_step_equals_generate(
    model_and_tokenizer: tuple[Any, Any],
) -> None:
    """A mixed step (chattune.serving.mixed) whose new row starts from a cached beginning: its queries attend over
    the cached keys and its own, causally aligned at the end; the running row's answer is unchanged too."""
    model, tokenizer = model_and_tokenizer
    reference = ChatGenerator(model, tokenizer)
    metrics = InstanceMetrics()
    scheduler = BatchScheduler(model, tokenizer, metrics, max_wait_ms=0.1, prefix_cache_bytes=2**24)
    assert scheduler.prefix_cache is not None and scheduler.mixed_steps
    first = [SYSTEM, {"role": "user", "content": QUESTIONS[0]}]
    (answer,) = asyncio.run(_answer(scheduler, tokenizer, [first]))
    second = [*first, {"role": "assistant", "content": answer.text}, {"role": "user", "content": QUESTIONS[1]}]
    long = [{"role": "user", "content": "what is the date today? tell me in ISO 8601 please"}]

    async def scenario() -> list[Any]:
        loop = asyncio.get_running_loop()
        pendings = []
        for conversation, budget in ((long, 40), (second, 12)):
            ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            pendings.append(Pending(list(ids), GenerationParams(max_new_tokens=budget), None, loop))
        scheduler.submit(pendings[0])
        assert (await pendings[0].events.get())[0] == "delta"  # running now
        scheduler.submit(pendings[1])
        results = []
        for p in pendings:
            while (event := await p.events.get())[0] != "done":
                assert event[0] != "error", event
            results.append(event[1])
        return results

    before = scheduler.prefix_cache.reused_tokens
    results = asyncio.run(scenario())
    assert scheduler.prefix_cache.reused_tokens > before and metrics.mixed_steps._value.get() >= 1
    for conversation, budget, got in zip((long, second), (40, 12), results, strict=True):
        alone = reference.generate([conversation], GenerationParams(max_new_tokens=budget))[0]
        assert (got.text, got.completion_tokens) == (alone.text, alone.completion_tokens)
