"""Continuous batching over the model's own forward pass: concurrent requests share every decoding step.

Requests are tokenized on arrival (so a prompt too long for the context fails at once, with a 400) and queued.
One scheduler thread keeps the running batch and its KV cache (transformers' DynamicCache); between steps it
admits queued requests (their prompts computed in the running rows' next decoding step, chattune.serving.mixed, or
prefilled together when nothing runs; their cache left-padded and joined to the running one) and drops the rows that
are done, so nobody waits for the longest answer in a batch. Each row has its own decoding settings and
LoRA adapter (PEFT's mixed-adapter batches), streams its own text deltas and ends at its own end-of-sequence,
``stop`` string or token budget. A row's sampler also applies OpenAI's ``logit_bias``, presence and frequency
penalties and, for structured output, the row's grammar mask (chattune.serving.structured), and records the
log-probabilities a request asked for; they travel with the row's text deltas.

transformers' own continuous batching (``init_continuous_batching``) was checked first: it packs every request
into one row, so per-request LoRA adapters are impossible there, and it was slower on this CPU (docs/design.md).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from chattune.inference import Generation, GenerationParams, TokenLogprob
from chattune.serving import mixed
from chattune.serving.metrics import InstanceMetrics
from chattune.serving.prefix_cache import PrefixCache
from chattune.serving.structured import RowConstraint

log = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Pending:
    """One sequence to generate: its prompt, settings and the queue its events go to (on the server's loop).

    Events: ("delta", (text, [TokenLogprob])), then ("done", Generation), or ("error", exception).
    """

    input_ids: list[int]
    params: GenerationParams
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    constraint: RowConstraint | None = None  # the grammar its answer must follow (response_format)
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)  # per token in ``tokens``, when the request asked
    sent: str = ""
    logprobs_sent: int = 0
    done: bool = False

    def emit(self, kind: str, value: Any) -> None:
        """Queue an event for the request's consumer; safe to call from the scheduler thread."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class _RowText:
    """Turns each request's new tokens into its text deltas and its ending."""

    def __init__(self, tokenizer: Any, eos: set[int], metrics: InstanceMetrics):
        self.tokenizer = tokenizer
        self.eos = eos
        self.metrics = metrics

    def accept(self, row: Pending, token: int, logprob: TokenLogprob | None = None) -> None:
        """One new token for ``row`` (with its log-probability, if asked): a text delta, or the row's end.

        The end: an end-of-sequence token, a stop string, or the token budget.
        """
        if row.done:
            return
        if row.cancelled:
            row.done = True
            return
        if token in self.eos:
            self._finish(row, "stop")
            return
        if not row.tokens:
            self.metrics.first_token.observe(time.monotonic() - row.submitted)
        row.tokens.append(token)
        if logprob is not None:
            row.logprobs.append(logprob)
        self._advance(row)

    def _advance(self, row: Pending) -> None:
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True).lstrip()
        for stop in row.params.stop or []:
            if stop in text:
                self._send(row, text[: text.index(stop)].rstrip())
                self._finish(row, "stop")
                return
        if len(row.tokens) >= row.params.max_new_tokens:
            self._send(row, text.rstrip())
            self._finish(row, "length")
            return
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        # Trailing whitespace is held back (the answer is stripped), and so is a tail that may begin a stop string.
        stable = text.rstrip()
        for stop in row.params.stop or []:
            for cut in range(len(stop) - 1, 0, -1):
                if stable.endswith(stop[:cut]):
                    stable = stable[: len(stable) - cut]
                    break
        self._send(row, stable)

    def _send(self, row: Pending, text: str) -> None:
        if len(text) > len(row.sent) and text.startswith(row.sent):
            row.emit("delta", (text[len(row.sent) :], row.logprobs[row.logprobs_sent :]))
            row.sent, row.logprobs_sent = text, len(row.logprobs)

    def _finish(self, row: Pending, reason: str) -> None:
        row.done = True
        self.metrics.generated_tokens.inc(len(row.tokens))
        logprobs = row.logprobs if row.params.logprobs is not None else None
        if logprobs and row.logprobs_sent < len(logprobs):  # tokens whose text was held back (trailing whitespace)
            row.emit("delta", ("", logprobs[row.logprobs_sent :]))
        row.emit("done", Generation(row.sent, reason, len(row.input_ids), len(row.tokens), logprobs))


class BatchScheduler:
    """Continuous batching of generation requests on one thread.

    One thread keeps a running batch and its KV cache; between decoding steps it admits queued requests (prefilled
    together, their cache joined to the running one) and drops finished ones.

    Built on the model's own forward pass and transformers' DynamicCache; each row has its own decoding settings
    (greedy, or temperature / top-p with its own seeded generator, through transformers' logits warpers) and its
    own LoRA adapter (PEFT's mixed-adapter batches). ``submit`` is called from the server's event loop.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        metrics: InstanceMetrics,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        max_length: int = 2048,
        multi_adapter: bool = False,
        prefix_cache_bytes: int = 0,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_length = max_length
        self.multi_adapter = multi_adapter
        # keys and values of recent prompts; not for sliding-window attention, whose cache keeps the last window only
        full = _full_attention_cache(model)
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes and full else None
        # new rows' prompts in the running rows' decoding step (chattune.serving.mixed); full attention only
        self.mixed_steps = full and mixed.use_mixed_steps(getattr(model, "get_base_model", lambda: model)())
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos = {t for t in ([eos] + (gen_eos if isinstance(gen_eos, list) else [gen_eos])) if t is not None}
        self.text = _RowText(tokenizer, self.eos, metrics)
        self._queue: collections.deque[Pending] = collections.deque()
        self._calls: collections.deque[tuple[Callable[[list[Pending]], bool], concurrent.futures.Future[None]]] = (
            collections.deque()
        )
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        """Queue a request for the next free slot in the running batch (called from the server's event loop)."""
        with self._cond:
            self._queue.append(pending)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def call(self, fn: Callable[[list[Pending]], bool]) -> concurrent.futures.Future[None]:
        """Run ``fn(rows)`` on the scheduler's thread between two decoding steps (it may change the model then).

        ``rows`` are the running and queued requests; ``fn`` answers False to be called again after the next step
        (it waits for some of them to finish), True when done. The future completes when it is done (or raised).
        """
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        with self._cond:
            self._calls.append((fn, done))
            self._cond.notify()
        return done

    def _run_calls(self, rows: list[Pending]) -> None:
        with self._cond:
            calls, waiting = list(self._calls), [*rows, *self._queue]
            self._calls.clear()
        for fn, done in calls:
            try:
                if fn(waiting):
                    done.set_result(None)
                else:
                    with self._cond:
                        self._calls.append((fn, done))
            except Exception as exc:  # the caller hears of it; the scheduler goes on
                done.set_exception(exc)

    def _admit(self, running: int) -> list[Pending]:
        """Queued requests for the free slots; blocks only while nothing runs.

        A lone arrival waits a moment for company, so a burst is prefilled together.
        """
        with self._cond:
            if not running:
                while not self._queue and not self._calls:
                    self._cond.wait()
                seen = len(self._queue)
                while len(self._queue) < self.max_batch_size:
                    self._cond.wait(self.max_wait_s)
                    if len(self._queue) == seen:
                        break
                    seen = len(self._queue)
            taken: list[Pending] = []
            while self._queue and running + len(taken) < self.max_batch_size:
                item = self._queue.popleft()
                if not item.cancelled:
                    taken.append(item)
            self.metrics.queue_depth.set(len(self._queue))
            return taken

    def _run(self) -> None:
        import torch

        self.metrics.threads.set(torch.get_num_threads())  # as this thread, which runs every forward pass, sees it
        batch = _Running(self)
        while True:
            if self._calls:
                self._run_calls(batch.rows)
            new = self._admit(len(batch.rows))
            try:
                with torch.inference_mode():
                    if new and batch.join(new):  # the running rows took their step with the new ones
                        self.metrics.mixed_steps.inc()
                        self.metrics.batch_size.observe(len(batch.rows))
                    elif batch.rows:
                        rows, started = len(batch.rows), time.perf_counter()
                        self.metrics.batch_size.observe(rows)
                        batch.step()
                        self.metrics.decode_step.labels(rows=str(rows)).observe(time.perf_counter() - started)
            except Exception as exc:  # a failed step fails its requests, never the scheduler
                log.exception("batch step failed")
                for row in [*batch.rows, *new]:
                    if not row.done:
                        row.done = True
                        row.emit("error", exc)
                batch = _Running(self)
            self.metrics.running.set(len(batch.rows))


def _left_pad(t: Any, to: int, dim: int) -> Any:
    """``t`` with zeros before it along ``dim``, to length ``to``."""
    import torch

    missing = to - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)


def _full_attention_cache(model: Any) -> bool:
    """Whether the model's KV cache keeps every position (no sliding-window layer that drops the oldest)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=getattr(model, "config", None)).layers
    return all(type(layer) is DynamicLayer for layer in layers)


class _Running:
    """The running batch: rows, their left-padded attention mask, positions, last tokens and the shared KV cache."""

    def __init__(self, scheduler: BatchScheduler):
        self.s = scheduler
        self.reset()

    def reset(self) -> None:
        self.rows: list[Pending] = []
        self.cache: Any = None
        self.mask: Any = None  # (B, T) 1 for real tokens
        self.positions: Any = None  # (B,) position of the next token
        self.last: Any = None  # (B,) the token to feed next
        self.samplers: list[Any] = []

    def _forward(self, rows: list[Pending], ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        kwargs: dict[str, Any] = {}
        if self.s.multi_adapter:
            kwargs["adapter_names"] = [r.adapter or BASE for r in rows]
        out = self.s.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
            **kwargs,
        )
        return out.logits[:, -1, :].float()

    def join(self, new: list[Pending]) -> bool:
        """Prefill the new rows, then append them (and their cache) to the running batch.

        With rows running (and one adapter among all rows when several are loaded), the new rows' prompts go into
        the running rows' next decoding step, one forward pass for both (chattune.serving.mixed); True when that
        step was taken. Several new rows with nothing running are prefilled in the same flattened form, so that no
        padding is computed; else (one row, or mixed adapters) they are prefilled left-padded.

        A row whose prompt begins as a cached one did (chattune.serving.prefix_cache) starts from those keys and
        values and computes the rest only. The new rows' cache is [cached beginnings, left-padded | the rest,
        left-padded]: the attention mask marks the padding in both parts, and positions count real tokens only.
        """
        import torch

        prefix = self.s.prefix_cache
        hits = [prefix.lookup(r.adapter, r.input_ids) if prefix is not None else None for r in new]
        reused = [hit.length if hit else 0 for hit in hits]
        rest = [r.input_ids[n:] for r, n in zip(new, reused, strict=True)]
        adapters = {r.adapter for r in [*self.rows, *new]}
        flattened = self.s.mixed_steps and (not self.s.multi_adapter or len(adapters) == 1)
        mixed_step = flattened and bool(self.rows)
        if flattened and (self.rows or len(new) > 1):  # several prompts alone: flattened, so no padding is computed
            logits, cache, mask = self._mixed(new, hits, reused, rest)
        else:
            logits, cache, mask = self._prefill(new, hits, reused, rest)
        self.s.metrics.prompt_tokens.inc(int(mask.sum()))
        self.s.metrics.cached_prompt_tokens.inc(sum(reused))
        if prefix is not None:
            for i, row in enumerate(new):
                prefix.store(row.adapter, row.input_ids, self._row_cache(cache, mask, i))
        samplers = [_Sampler(r.params, r.constraint) for r in new]
        tokens = torch.tensor([sm.pick(logits[i : i + 1]) for i, sm in enumerate(samplers)], device=mask.device)
        if not self.rows:
            self.rows, self.cache, self.mask, self.samplers = list(new), cache, mask, samplers
            self.positions, self.last = mask.sum(-1), tokens
        else:
            self._merge(new, cache, mask, samplers)
            self.positions = torch.cat([self.positions, mask.sum(-1)])
            self.last = torch.cat([self.last, tokens])
        for row, token, sampler in zip(new, tokens.tolist(), samplers, strict=True):
            self.s.text.accept(row, token, sampler.last)
        self._drop_finished()
        return mixed_step

    def _prefill(self, new: list[Pending], hits: list[Any], reused: list[int], rest: list[list[int]]) -> Any:
        """The new rows' own forward pass, left-padded: their last logits, their cache and its attention mask."""
        import torch

        from chattune.serving import kv_cache

        device = self.s.model.device
        width = max(len(c) for c in rest)
        pad = self.s.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(c)) + c for c in rest], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in rest], device=device)
        cache = kv_cache.new_cache(getattr(self.s.model, "config", None))
        if any(reused):
            mask = torch.cat([self._cached_beginnings(hits, max(reused), cache), mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -width:]
        return self._forward(new, ids, mask, positions, cache), cache, mask

    def _mixed(self, new: list[Pending], hits: list[Any], reused: list[int], rest: list[list[int]]) -> Any:
        """One forward pass: the running rows' decoding step (if any) and the new rows' prompts, in one flattened row.

        The running rows advance by one token here; the new rows' last logits, cache and mask are returned as
        ``_prefill`` returns them.
        """
        import torch

        from chattune.serving import kv_cache

        device = self.s.model.device
        running = len(self.rows)
        config = getattr(self.s.model, "config", None)
        lengths = [len(c) for c in rest]
        fresh = [p for n, c in zip(reused, rest, strict=True) for p in range(n, n + len(c))]
        beginnings = [h.layers if h else None for h in hits]
        if running:
            ones = torch.ones((running, 1), dtype=self.mask.dtype, device=device)
            self.mask = torch.cat([self.mask, ones], dim=1)
            layout = mixed.Layout(running, self.cache, self.mask.bool()[:, None, None, :], lengths, beginnings)
            last, positions = self.last.tolist(), torch.cat([self.positions, torch.tensor(fresh, device=device)])
        else:  # new rows only; the 4-D mask only tells transformers not to build one
            unused = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=device)
            layout = mixed.Layout(0, kv_cache.new_cache(config), unused, lengths, beginnings)
            last, positions = [], torch.tensor(fresh, device=device)
        ids = torch.tensor([last + [t for c in rest for t in c]], device=device)
        positions = positions[None]
        ends = [running + end - 1 for end in itertools.accumulate(lengths)]
        kwargs: dict[str, Any] = {}
        if self.s.multi_adapter:
            kwargs["adapter_names"] = [new[0].adapter or BASE]
        with mixed.active(layout):
            out = self.s.model(
                input_ids=ids,
                attention_mask=layout.running_mask,  # 4-D: transformers' mask building is skipped
                position_ids=positions,
                cache=mixed.cache(layout),
                use_cache=True,
                logits_to_keep=torch.tensor([*range(running), *ends], device=device),
                **kwargs,
            )
        logits = out.logits[0].float()
        if running:
            self._advance(logits[:running])
        widths = [n + c for n, c in zip(reused, lengths, strict=True)]
        width = max(widths)
        cache = kv_cache.new_cache(config)
        for index in range(len(layout.new_rows)):
            keys, values = (
                torch.cat([_left_pad(kv[part], width, 2) for kv in layout.new_rows[index]]) for part in (0, 1)
            )
            cache.update(keys, values, index)
        mask = torch.tensor([[0] * (width - w) + [1] * w for w in widths], device=device)
        return logits[running:], cache, mask

    @staticmethod
    def _cached_beginnings(hits: list[Any], width: int, cache: Any) -> Any:
        """Fill ``cache`` with the rows' cached keys and values, left-padded to ``width``; their attention mask."""
        import torch

        first = next(hit for hit in hits if hit)
        for index, (keys, _) in enumerate(first.layers):
            none = keys[:, :0]  # a row without a hit: all padding
            keys, values = (
                torch.stack([_left_pad(hit.layers[index][part] if hit else none, width, 1) for hit in hits])
                for part in (0, 1)
            )
            cache.update(keys, values, index)
        lengths = [hit.length if hit else 0 for hit in hits]
        return torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=first.layers[0][0].device)

    @staticmethod
    def _row_cache(cache: Any, mask: Any, row: int) -> Callable[[int], list[tuple[Any, Any]]]:
        """Row ``row``'s keys and values for its first n real tokens (copies), per layer, to be called later."""

        def fetch(n: int) -> list[tuple[Any, Any]]:
            columns = mask[row].nonzero()[:n, 0]
            return [(layer.keys[row][:, columns], layer.values[row][:, columns]) for layer in cache.layers]

        return fetch

    def _merge(self, new: list[Pending], cache: Any, mask: Any, samplers: list[Any]) -> None:
        import torch

        width = max(self.mask.shape[1], mask.shape[1])
        for old_layer, new_layer in zip(self.cache.layers, cache.layers, strict=True):
            old_layer.keys = torch.cat([_left_pad(old_layer.keys, width, -2), _left_pad(new_layer.keys, width, -2)])
            old_layer.values = torch.cat(
                [_left_pad(old_layer.values, width, -2), _left_pad(new_layer.values, width, -2)]
            )
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.rows += new
        self.samplers += samplers

    def step(self) -> None:
        """One decoding step for every running row."""
        import torch

        ones = torch.ones((len(self.rows), 1), dtype=self.mask.dtype, device=self.mask.device)
        self.mask = torch.cat([self.mask, ones], dim=1)
        self._advance(self._forward(self.rows, self.last[:, None], self.mask, self.positions[:, None], self.cache))
        self._drop_finished()

    def _advance(self, logits: Any) -> None:
        """Each running row's next token from its logits (the step's mask column is added already)."""
        import torch

        tokens = [sm.pick(logits[i : i + 1]) for i, sm in enumerate(self.samplers)]
        self.positions = self.positions + 1
        self.last = torch.tensor(tokens, device=self.last.device)
        for row, token, sampler in zip(self.rows, tokens, self.samplers, strict=True):
            self.s.text.accept(row, token, sampler.last)

    def _drop_finished(self) -> None:
        import torch

        keep = [i for i, r in enumerate(self.rows) if not r.done and not r.cancelled]
        if len(keep) == len(self.rows):
            return
        prefix = self.s.prefix_cache
        if prefix is not None:  # the answers too: a conversation's next turn begins with this one and its answer
            for i, row in enumerate(self.rows):
                if row.done and not row.cancelled:
                    fed = int(self.mask[i].sum())  # the last token chosen was never fed to the model
                    prefix.store(
                        row.adapter, (row.input_ids + row.tokens)[:fed], self._row_cache(self.cache, self.mask, i)
                    )
        if not keep:
            self.reset()
            return
        index = torch.tensor(keep, device=self.mask.device)
        for layer in self.cache.layers:
            layer.batch_select_indices(index)
        self.mask = self.mask[index]
        self.positions, self.last = self.positions[index], self.last[index]
        self.rows = [self.rows[i] for i in keep]
        self.samplers = [self.samplers[i] for i in keep]
        # Columns that are padding for every remaining row are dropped, so the cache does not grow with history.
        real = self.mask.any(dim=0).nonzero()
        start = int(real[0]) if len(real) else 0
        if start:
            self.mask = self.mask[:, start:]
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[..., start:, :], layer.values[..., start:, :]


class _Sampler:
    """A row's next-token choice.

    On the model's logits: the row's ``logit_bias``, then OpenAI's presence and frequency penalties over the tokens
    it generated so far, then its grammar mask (structured output). Then greedy, or transformers' temperature /
    top-p warpers with the row's own seeded generator (so a seed reproduces an answer whatever else shares the
    batch). With ``logprobs`` asked, ``last`` holds the chosen token's log-probability and the most likely ones',
    taken from the model's own distribution (before bias, penalties and mask), as vLLM reports them by default.
    """

    def __init__(self, params: GenerationParams, constraint: RowConstraint | None = None):
        import torch
        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        self.params = params
        self.constraint = constraint
        self.counts: collections.Counter[int] = collections.Counter()  # generated tokens, for the penalties
        self.last: TokenLogprob | None = None
        self.sampling = params.do_sample and params.temperature > 0
        self.warpers = LogitsProcessorList()
        self.generator: Any = None
        if self.sampling:
            self.warpers.append(TemperatureLogitsWarper(params.temperature))
            if params.top_p < 1.0:
                self.warpers.append(TopPLogitsWarper(params.top_p))
            self.generator = torch.Generator()
            seed = params.torch_seed()
            if seed is not None:
                self.generator.manual_seed(seed)
            else:
                self.generator.seed()

    def _adjusted(self, logits: Any) -> Any:
        import torch

        p = self.params
        if p.logit_bias:
            ids = torch.tensor(list(p.logit_bias), device=logits.device)
            logits = logits.clone()
            logits[0, ids] += torch.tensor(list(p.logit_bias.values()), dtype=logits.dtype, device=logits.device)
        if self.counts and (p.presence_penalty or p.frequency_penalty):
            ids = torch.tensor(list(self.counts), device=logits.device)
            seen = torch.tensor(list(self.counts.values()), dtype=logits.dtype, device=logits.device)
            logits = logits.clone()
            logits[0, ids] -= seen * p.frequency_penalty + p.presence_penalty
        if self.constraint is not None:
            logits = self.constraint.mask(logits)
        return logits

    def _record(self, logits: Any, token: int) -> None:
        import torch

        logprobs = torch.log_softmax(logits[0].float(), dim=-1)
        top = torch.topk(logprobs, self.params.logprobs) if self.params.logprobs else None
        ranked = list(zip(top.indices.tolist(), top.values.tolist(), strict=True)) if top is not None else []
        self.last = (token, float(logprobs[token]), ranked)

    def pick(self, logits: Any) -> int:
        token = self._choose(self._adjusted(logits))
        if self.params.logprobs is not None:
            self._record(logits, token)
        self.counts[token] += 1
        if self.constraint is not None:
            self.constraint.consume(token)
        return token

    def _choose(self, logits: Any) -> int:
        import torch

        if not self.sampling:
            return int(logits.argmax(-1))
        probs = torch.softmax(self.warpers(None, logits), dim=-1)  # type: ignore[arg-type]  # warpers ignore ids
        if not bool(torch.isfinite(probs).all()):
            # A temperature so small (say 1e-100) that logits / temperature overflows: softmax gives NaN, and
            # multinomial would fail the whole batch. Sampling at a temperature tending to 0 is greedy.
            return int(logits.argmax(-1))
        return int(torch.multinomial(probs.cpu(), 1, generator=self.generator))
