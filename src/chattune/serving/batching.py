"""Dynamic batching over transformers ``generate``: concurrent requests share forward passes.

Requests are tokenized on arrival (so a prompt too long for the context fails at once, with a 400) and queued. One
scheduler thread takes the oldest request, waits a few milliseconds for company, and runs every queued request
that can share its decoding settings (greedy, or the same sampling settings and seed) as one left-padded batch,
with each row's LoRA adapter chosen by PEFT's mixed-adapter batches (``adapter_names``). A streamer splits the
batch's tokens by row: each request gets its own text deltas, stops at its own end-of-sequence, ``stop`` strings
or token budget, and is answered as soon as it is done, not when the longest row is. Requests arriving while a
batch runs form the next one.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from chattune.inference import Generation, GenerationParams
from chattune.serving.metrics import InstanceMetrics

log = logging.getLogger(__name__)

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


@dataclass
class Pending:
    """One sequence to generate: its prompt, settings and the queue its events go to (on the server's loop)."""

    input_ids: list[int]
    params: GenerationParams
    adapter: str | None
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    submitted: float = field(default_factory=time.monotonic)
    cancelled: bool = False
    tokens: list[int] = field(default_factory=list)
    sent: str = ""
    done: bool = False

    @property
    def sampling(self) -> bool:
        return self.params.do_sample and self.params.temperature > 0

    def key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one ``generate`` call."""
        if not self.sampling:
            return ("greedy",)
        return ("sample", self.params.temperature, self.params.top_p, self.params.seed)

    def emit(self, kind: str, value: Any) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))


class _RowStreamer:
    """Receives each step's new tokens for the whole batch and turns them into per-request text and endings."""

    def __init__(self, batch: list[Pending], tokenizer: Any, eos: set[int], metrics: InstanceMetrics):
        self.batch = batch
        self.tokenizer = tokenizer
        self.eos = eos
        self.metrics = metrics
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for row, token in zip(self.batch, value.reshape(-1).tolist(), strict=True):
            if row.done:
                continue
            if row.cancelled:
                row.done = True
                continue
            if token in self.eos:
                self._finish(row, "stop")
                continue
            if not row.tokens:
                self.metrics.first_token.observe(time.monotonic() - row.submitted)
            row.tokens.append(token)
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
            row.emit("delta", text[len(row.sent) :])
            row.sent = text

    def _finish(self, row: Pending, reason: str) -> None:
        row.done = True
        self.metrics.generated_tokens.inc(len(row.tokens))
        row.emit("done", Generation(row.sent, reason, len(row.input_ids), len(row.tokens)))

    def end(self) -> None:
        for row in self.batch:
            if not row.done:
                text = self.tokenizer.decode(row.tokens, skip_special_tokens=True).strip()
                self._send(row, text)
                self._finish(row, "length")

    def all_done(self) -> bool:
        return all(row.done for row in self.batch)


class BatchScheduler:
    """The thread that forms batches and runs them; ``submit`` is called from the server's event loop."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        metrics: InstanceMetrics,
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        max_length: int = 2048,
        multi_adapter: bool = False,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_length = max_length
        self.multi_adapter = multi_adapter
        eos = tokenizer.eos_token_id
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos = {t for t in ([eos] + (gen_eos if isinstance(gen_eos, list) else [gen_eos])) if t is not None}
        self._queue: collections.deque[Pending] = collections.deque()
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    def submit(self, pending: Pending) -> None:
        with self._cond:
            self._queue.append(pending)
            self.metrics.queue_depth.set(len(self._queue))
            self._cond.notify()

    def _take_batch(self) -> list[Pending]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            # Wait for company while requests keep arriving (each within max_wait of the last), up to 4 x max_wait.
            start = time.monotonic()
            seen = len(self._queue)
            while len(self._queue) < self.max_batch_size and time.monotonic() - start < 4 * self.max_wait_s:
                self._cond.wait(self.max_wait_s)
                if len(self._queue) == seen:
                    break
                seen = len(self._queue)
            first = self._queue[0]
            key = first.key()
            batch: list[Pending] = []
            rest: collections.deque[Pending] = collections.deque()
            longest, budget = 0, 0
            while self._queue:
                item = self._queue.popleft()
                if item.cancelled:
                    continue
                fits = max(longest, len(item.input_ids)) + max(budget, item.params.max_new_tokens) <= self.max_length
                if len(batch) < self.max_batch_size and item.key() == key and (fits or not batch):
                    batch.append(item)
                    longest = max(longest, len(item.input_ids))
                    budget = max(budget, item.params.max_new_tokens)
                else:
                    rest.append(item)
            self._queue = rest
            self.metrics.queue_depth.set(len(self._queue))
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                continue
            self.metrics.running.set(len(batch))
            self.metrics.batch_size.observe(len(batch))
            try:
                self._generate(batch)
            except Exception as exc:  # a failed batch fails its requests, never the scheduler
                log.exception("batch of %d failed", len(batch))
                for row in batch:
                    if not row.done:
                        row.done = True
                        row.emit("error", exc)
            finally:
                self.metrics.running.set(0)

    def _generate(self, batch: list[Pending]) -> None:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        tok = self.tokenizer
        width = max(len(p.input_ids) for p in batch)
        pad = tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p.input_ids)) + p.input_ids for p in batch])
        mask = torch.tensor([[0] * (width - len(p.input_ids)) + [1] * len(p.input_ids) for p in batch])
        self.metrics.prompt_tokens.inc(int(mask.sum()))
        streamer = _RowStreamer(batch, tok, self.eos, self.metrics)

        class _AllDone(StoppingCriteria):  # type: ignore[misc]
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), streamer.all_done(), dtype=torch.bool)

        params = batch[0].params
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(p.params.max_new_tokens for p in batch),
            "pad_token_id": pad,
            "eos_token_id": sorted(self.eos),
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_AllDone()]),
        }
        if batch[0].sampling:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if self.multi_adapter:
            kwargs["adapter_names"] = [p.adapter or BASE for p in batch]
        device = self.model.device
        with torch.inference_mode():
            if batch[0].sampling and params.seed is not None:
                torch.manual_seed(params.seed)
            self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        streamer.end()
