"""The engine behind one instance.

It loads the base model and its LoRA adapters in the background, warms them up, then serves generations through the
batch scheduler (chattune.serving.batching).

Several LoRA versions of one base share the loaded base; the request's ``model`` picks the adapter, as in vLLM.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from chattune import versions
from chattune.entities import DeploymentSettings
from chattune.errors import ConflictError, NotFoundError, ServiceUnavailableError, UserError
from chattune.inference import (
    Generation,
    GenerationParams,
    checked_new_tokens,
    load_model,
    load_tokenizer,
    model_max_length,
)
from chattune.serving import tools as tool_calls
from chattune.serving.batching import BatchScheduler, Pending
from chattune.serving.metrics import InstanceMetrics
from chattune.serving.structured import Constraints, RowConstraint

log = logging.getLogger(__name__)


class Engine:
    """The model an instance serves: a base with its LoRA adapters (or a full fine-tune) behind a batch scheduler.

    Args:
        base_path: Directory of the base model's weights (or of the full fine-tune).
        adapter_path: Directory of the deployment's own LoRA adapter; None for a full fine-tune.
        served_name: The name a request's ``model`` gives for the deployment's own model.
        base_name: The name of the base model, served too when there are adapters.
        settings: The deployment's settings (batch size, cap on new tokens); the defaults without them.
        extra_adapters: More LoRA adapters of the same base, by served name.
        template_sha256: The hash of the chat template the model was trained with; a different one is refused.
        metrics: Where the instance's Prometheus metrics go; a fresh registry without it.
    """

    def __init__(
        self,
        base_path: str,
        adapter_path: str | None,
        served_name: str,
        base_name: str,
        *,
        settings: DeploymentSettings | None = None,
        extra_adapters: dict[str, str] | None = None,
        template_sha256: str | None = None,
        metrics: InstanceMetrics | None = None,
    ):
        settings = settings or DeploymentSettings()
        self.base_path = base_path
        self.served_name = served_name
        self.base_name = base_name
        self.max_new_tokens_cap = settings.max_new_tokens_cap
        # adapter name -> directory; the main one first. A full fine-tune has none (served_name is the weights).
        self.adapters: dict[str, str] = {served_name: adapter_path} if adapter_path else {}
        self.adapters.update(extra_adapters or {})
        self.template_sha256 = template_sha256
        self.max_batch_size = settings.engine_batch_size
        self.prefix_cache_bytes = settings.prefix_cache_mb * 2**20
        self.metrics = metrics or InstanceMetrics()
        self.created = int(time.time())
        self.ready = threading.Event()
        self._started = threading.Event()
        self.failed: str | None = None
        self._scheduler: BatchScheduler | None = None
        self._tokenizer: Any = None
        self._keys: dict[str, str] = {}
        self._serial = itertools.count(len(self.adapters))
        self.max_length = 2048
        self.vocab_size = 0
        self.constraints: Constraints | None = None
        self.reads_tool_calls = False

    @property
    def adapter_path(self) -> str | None:
        """Directory of the deployment's own LoRA adapter, or None for a full fine-tune."""
        return self.adapters.get(self.served_name)

    def start(self) -> None:
        """Load the model in a background thread; ``ready`` is set when it can serve, ``failed`` says why when not.

        Does nothing once loading started (a Ray Serve replica loads in its constructor, then its app starts).
        """
        if not self._started.is_set():
            threading.Thread(target=self.load, name="engine-load", daemon=True).start()

    def load(self) -> None:
        """Load the model here and now; ``ready`` is set when it can serve, ``failed`` says why when not."""
        if self._started.is_set():
            return
        self._started.set()
        try:
            versions.check()  # an older transformers would ignore the engine's KV cache and answer garbage
            # The tokenizer (and chat template) saved with the fine-tuned model is the one used in training.
            first = self.adapter_path
            tokenizer = load_tokenizer(first if first and _has_tokenizer(first) else self.base_path)
            self._check_template(tokenizer)
            model = load_model(self.base_path)
            from chattune import packed_linear

            if packed_linear.applies(model):  # faster decoding steps on a CPU; inference only from here on
                packed_linear.pack(model)
            if self.adapters:
                from peft import PeftModel

                # PEFT names adapters as modules: an internal key per served name (names may hold '.' or ':').
                self._keys = {name: f"adapter_{i}" for i, name in enumerate(self.adapters)}
                items = iter(self.adapters.items())
                name, path = next(items)
                model = PeftModel.from_pretrained(model, path, adapter_name=self._keys[name])
                for name, path in items:
                    model.load_adapter(path, adapter_name=self._keys[name])
                model.eval()
            self.reads_tool_calls = tool_calls.add_parser(tokenizer)
            self._tokenizer = tokenizer
            self.max_length = model_max_length(model, tokenizer)
            self.vocab_size = int(model.config.vocab_size)
            self._scheduler = BatchScheduler(
                model,
                tokenizer,
                self.metrics,
                max_batch_size=self.max_batch_size,
                max_length=self.max_length,
                multi_adapter=bool(self.adapters),
                prefix_cache_bytes=self.prefix_cache_bytes,
            )
            self.constraints = Constraints(tokenizer, self._scheduler.eos, self.vocab_size)
            self._warm_up()
            self.ready.set()
            log.info("engine ready: %s (adapters: %s)", self.served_name, ", ".join(self.adapters) or "none")
        except Exception as exc:  # reported through /health/ready and the instance log
            self.failed = f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to load")

    def _check_template(self, tokenizer: Any) -> None:
        from chattune.templates import template_hash

        if self.template_sha256 and template_hash(tokenizer.chat_template or "") != self.template_sha256:
            raise ConflictError(
                f"the chat template beside {self.served_name} is not the one it was trained with "
                f"({self.template_sha256[:12]}...); refusing to serve it"
            )

    def _warm_up(self) -> None:
        """One short generation per adapter, so the first real request does not pay for lazy initialisation."""
        assert self._scheduler is not None
        loop = asyncio.new_event_loop()
        try:
            for name in [None, *self.adapters]:
                conversation = [{"role": "user", "content": "warm up"}]
                pending = self._encode(conversation, GenerationParams(max_new_tokens=1), name, loop)
                self._scheduler.submit(pending)
                loop.run_until_complete(_final(pending))
        finally:
            loop.close()

    # requests -------------------------------------------------------------------------------------------------
    def models(self, first: str | None = None) -> list[tuple[str, str | None]]:
        """(id, parent) for /v1/models: the deployment's own model first, its other adapters, then the shared base.

        A client that takes the first model gets the fine-tuned one, not the untuned base. ``first``: the model of a
        deployment that shares this instance, listed first for its clients.
        """
        if not self.adapters:  # a full fine-tune: its own weights, no base served beside it
            return [(self.served_name, None)]
        names = sorted(self.adapters, key=lambda name: name != first)  # stable: the own model next
        return [*((name, self.base_name) for name in names), (self.base_name, None)]

    # adapters added and removed while serving --------------------------------------------------------------------
    async def add_adapter(self, name: str, path: str) -> None:
        """Load another LoRA adapter of this base between two decoding steps; requests may name it once it returns.

        Raises:
            ConflictError: The instance serves a full fine-tune (no base to share) or has ``name`` already from
                another path.
            NotFoundError: No adapter at ``path``.
            UserError: PEFT could not load it on this base.
            ServiceUnavailableError: The model is not loaded yet.
        """
        scheduler = self._loaded()
        if not self.adapters:
            raise ConflictError(f"{self.served_name} is a full fine-tune: it has no base to share with an adapter")
        if name in self.adapters:
            if self.adapters[name] != path:
                raise ConflictError(f"adapter {name!r} is served here already, from {self.adapters[name]}")
            return
        try:
            found = (Path(path) / "adapter_config.json").is_file()
        except (OSError, ValueError):  # a name too long for the file system, a NUL: no such folder either
            found = False
        if not found:
            raise NotFoundError(f"no LoRA adapter at {path}: adapter_config.json is missing", param="path")
        key = f"adapter_{next(self._serial)}"

        def load(rows: list[Pending]) -> bool:
            model = self._scheduler_model()
            try:
                model.load_adapter(path, adapter_name=key)
            except Exception:
                if key in model.peft_config:  # half loaded: its layers go too
                    model.delete_adapter(key)
                raise
            return True

        try:
            await asyncio.wrap_future(scheduler.call(load))
        except Exception as exc:  # PEFT's own words: another base's shapes, an unreadable file
            raise UserError(f"adapter {name!r} at {path} could not be loaded: {type(exc).__name__}: {exc}") from exc
        self._keys[name], self.adapters[name] = key, path
        log.info("adapter added: %s (%s)", name, path)

    async def remove_adapter(self, name: str) -> None:
        """Stop serving an added adapter: no new request gets it, and it is unloaded once its requests are done.

        Raises:
            ConflictError: ``name`` is the deployment's own model.
            NotFoundError: ``name`` is not served here.
        """
        scheduler = self._loaded()
        if name == self.served_name:
            raise ConflictError(f"{name} is this instance's own model; it is not removed while the instance serves")
        if name not in self.adapters:
            raise NotFoundError(f"adapter {name!r} is not served here")
        key = self._keys[name]
        del self.adapters[name]  # resolve() refuses it from now on

        def unload(rows: list[Pending]) -> bool:
            if any(r.adapter == key and not r.done for r in rows):
                return False  # after the next step
            self._scheduler_model().delete_adapter(key)
            if scheduler.prefix_cache is not None:
                scheduler.prefix_cache.forget(key)
            return True

        await asyncio.wrap_future(scheduler.call(unload))
        del self._keys[name]
        log.info("adapter removed: %s", name)

    async def set_threads(self, threads: int) -> None:
        """Run the forward passes on ``threads`` torch threads from the next decoding step.

        The gateway shares the machine's cores out between the workspace's local instances on it
        (chattune.endpoints.supervisor); torch's thread count belongs to the thread that calls it, so it is set on
        the scheduler's, which runs every forward pass.

        Raises:
            ServiceUnavailableError: The model is not loaded yet.
        """
        scheduler = self._loaded()

        def apply(rows: list[Pending]) -> bool:
            import torch

            torch.set_num_threads(threads)
            self.metrics.threads.set(torch.get_num_threads())
            return True

        await asyncio.wrap_future(scheduler.call(apply))
        log.info("torch threads: %d", threads)

    def _loaded(self) -> BatchScheduler:
        if not self.ready.is_set() or self._scheduler is None:
            raise ServiceUnavailableError(self.failed or "the model is still loading; retry when /health/ready is 200")
        return self._scheduler

    def _scheduler_model(self) -> Any:
        assert self._scheduler is not None
        return self._scheduler.model

    def resolve(self, model: str | None, default: str | None = None) -> str | None:
        """The adapter a request's ``model`` names (None: the base model).

        Without ``model``: ``default`` (the model of a deployment that shares this instance, as its gateway says),
        else the deployment's own model.
        """
        model = model or default
        if model is None or model == self.served_name:
            return self.served_name if self.adapters else None
        if model in self.adapters:
            return model
        if model == self.base_name and self.adapters:
            return None
        served = ", ".join(name for name, _ in self.models())
        raise NotFoundError(f"model {model!r} is not served here; available: {served}")

    def _encode(
        self,
        conversation: list[dict[str, Any]],
        params: GenerationParams,
        adapter: str | None,
        loop: asyncio.AbstractEventLoop,
        tools: list[dict[str, Any]] | None = None,
    ) -> Pending:
        ids = self._tokenizer.apply_chat_template(conversation, tools=tools, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        if params.budget_param is None:  # not asked for: the default, within what the context leaves
            params.max_new_tokens = max(1, min(params.max_new_tokens, self.max_length - len(ids)))
        params.max_new_tokens = checked_new_tokens(
            len(ids),
            params.max_new_tokens,
            cap=self.max_new_tokens_cap,
            context=self.max_length,
            param=params.budget_param or "max_tokens",
        )
        constraint = None
        if params.grammar is not None and self.constraints is not None:
            constraint = RowConstraint(self.constraints.matcher(params.grammar), self.vocab_size)
        return Pending(list(ids), params, self._keys.get(adapter) if adapter else None, loop, constraint)

    def check(
        self,
        params: GenerationParams,
        kind: str | None = None,
        conversation: list[dict[str, Any]] | None = None,
        tools: list[dict[str, Any]] | None = None,
        read_calls: bool = False,
    ) -> None:
        """Refuse what this model cannot honour, naming the request field; may block (call it off the event loop).

        ``logit_bias`` must name tokens of the vocabulary; a grammar (``kind``: the ``response_format`` type, or
        ``tool_choice`` for a forced call) must be one llguidance can enforce with this tokenizer (the first check
        builds its view of the tokenizer); ``tools`` must be rendered by the chat template, and with ``read_calls``
        the model's calls must be readable back (a response parser for its template).

        Raises:
            UserError: a 400 naming the field.
            ServiceUnavailableError: the model is not loaded yet.
        """
        if self.constraints is None:
            raise ServiceUnavailableError(self.failed or "the model is still loading; retry when /health/ready is 200")
        outside = [t for t in params.logit_bias if not 0 <= t < self.vocab_size]
        if outside:
            raise UserError(
                f"logit_bias: token ids {outside[:5]} are not in this model's vocabulary (0..{self.vocab_size - 1})",
                param="logit_bias",
            )
        if params.grammar is not None and kind is not None:
            self.constraints.check(params.grammar, kind)
        if tools and conversation is not None:
            tool_calls.check_rendered(self._tokenizer, conversation, tools)
            if read_calls and not self.reads_tool_calls:
                raise UserError(
                    "tools: no response parser is known for this model's chat template, so its tool calls could not "
                    "be read back",
                    remedy='Send tool_choice "required" or a named function (the call is then enforced as JSON), '
                    "or give the tokenizer a response_template (transformers' response parsing).",
                    param="tools",
                )

    def read_tool_calls(
        self, text: str, conversation: list[dict[str, Any]], tools: list[dict[str, Any]] | None
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The content and tool calls of a free answer to ``conversation``, as the model's response parser reads them.

        The parser sees the prompt too: a template may pre-write the start of the answer.
        """
        tok = self._tokenizer
        prompt = tok.apply_chat_template(conversation, tools=tools, add_generation_prompt=True, tokenize=False)
        return tool_calls.parsed_calls(tok, text, prompt)

    def token_text(self, token: int) -> str:
        """One token as text (a byte-level piece of a character decodes to U+FFFD; its bytes say the rest)."""
        return str(self._tokenizer.decode([token]))

    def submit(
        self,
        conversation: list[dict[str, Any]],
        params: GenerationParams,
        adapter: str | None,
        tools: list[dict[str, Any]] | None = None,
    ) -> Pending:
        """Queue one generation (call from the server's event loop); ``adapter`` from ``resolve``."""
        scheduler = self._loaded()
        pending = self._encode(
            conversation, GenerationParams(**vars(params)), adapter, asyncio.get_running_loop(), tools
        )
        scheduler.submit(pending)
        return pending

    async def generate(
        self,
        conversations: list[list[dict[str, Any]]],
        params: GenerationParams,
        adapter: str | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> list[Generation]:
        """Generate one answer per conversation, together in the running batch.

        If the wait ends early (the client went away, or a generation failed), the remaining generations are cancelled.
        """
        pendings = [self.submit(c, params, adapter, tools) for c in conversations]
        try:
            return list(await asyncio.gather(*(_final(p) for p in pendings)))
        finally:
            for p in pendings:
                p.cancelled = True  # the client went away: stop spending compute on it

    async def stream(self, pending: Pending) -> AsyncIterator[tuple[str, Any]]:
        """("delta", (text, token log-probabilities)) events, then ("done", Generation); a failure is raised."""
        try:
            while True:
                kind, value = await pending.events.get()
                if kind == "error":
                    raise value
                yield kind, value
                if kind == "done":
                    return
        finally:
            pending.cancelled = True


async def _final(pending: Pending) -> Generation:
    while True:
        kind, value = await pending.events.get()
        if kind == "error":
            raise value
        if kind == "done":
            return value  # type: ignore[no-any-return]


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()
