"""The engine behind one instance: loads the model in the background, warms it up, then generates.

Requests are served one generate call at a time (the batching engine comes with the serving issue).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from chattune.errors import ServiceUnavailableError
from chattune.inference import ChatGenerator, Generation, GenerationParams, load_model, load_tokenizer

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self, base_path: str, adapter_path: str | None, served_name: str, base_name: str, max_new_tokens_cap: int = 1024
    ):
        self.base_path = base_path
        self.adapter_path = adapter_path
        self.served_name = served_name
        self.base_name = base_name
        self.max_new_tokens_cap = max_new_tokens_cap
        self.created = int(time.time())
        self.ready = threading.Event()
        self.failed: str | None = None
        self._generator: ChatGenerator | None = None

    def start(self) -> None:
        threading.Thread(target=self._load, name="engine-load", daemon=True).start()

    def _load(self) -> None:
        try:
            # The tokenizer (and chat template) saved with the fine-tuned model is the one used in training.
            tokenizer = load_tokenizer(
                self.adapter_path if self.adapter_path and _has_tokenizer(self.adapter_path) else self.base_path
            )
            model = load_model(self.base_path, self.adapter_path)
            self._generator = ChatGenerator(model, tokenizer, max_new_tokens_cap=self.max_new_tokens_cap)
            self._generator.generate([[{"role": "user", "content": "warm up"}]], GenerationParams(max_new_tokens=1))
            self.ready.set()
            log.info("engine ready: %s", self.served_name)
        except Exception as exc:  # reported through /health/ready and the instance log
            self.failed = f"{type(exc).__name__}: {exc}"
            log.exception("engine failed to load")

    def generate(self, conversations: list[list[dict[str, Any]]], params: GenerationParams) -> list[Generation]:
        if not self.ready.is_set() or self._generator is None:
            raise ServiceUnavailableError(self.failed or "the model is still loading; retry when /health/ready is 200")
        return self._generator.generate(conversations, params)


def _has_tokenizer(path: str) -> bool:
    return (Path(path) / "tokenizer_config.json").exists()
