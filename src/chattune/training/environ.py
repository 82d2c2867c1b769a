"""Keep the process environment still while a Trainer is built.

accelerate learns the defaults of its kwargs dataclasses (``KwargsHandler.to_kwargs``, called for the gradient
accumulation plugin each time a Trainer and its GradientState are created) inside ``clear_environment()``, which
unsets every environment variable of the process and sets them all again. That rewrites the C ``environ`` array while
other threads may be reading it: a native ``getenv`` in any of them (OpenMP and oneDNN workers, SQLite, the resolver)
then walks freed memory. Seen here as a tiny-test job's training process dying with SIGSEGV in glibc's getenv as
training started (once in a full ``make test`` run). The same race crashed other projects that clear and restore
``os.environ`` (GA-FDP/toksearch#4; accelerate#3801 reports its other environment edits as not thread-safe).

``keep_process_environment()`` gives accelerate a ``clear_environment`` with the same meaning for the code inside it
(``os.environ`` reads as empty, and what is written there is dropped on exit) that never touches the C environment.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def python_level_clear_environment() -> Iterator[None]:
    """An empty ``os.environ`` for the code inside, without unsetting anything in the process."""
    real = os.environ
    os.environ = {}  # type: ignore[assignment]  # noqa: B003 - the point: the code inside reads an empty mapping
    try:
        yield
    finally:
        os.environ = real  # noqa: B003


def keep_process_environment() -> None:
    """Route accelerate's ``clear_environment`` (looked up at each call) to the Python-level one. Idempotent."""
    import accelerate.utils
    import accelerate.utils.environment

    accelerate.utils.environment.clear_environment = python_level_clear_environment
    accelerate.utils.clear_environment = python_level_clear_environment
